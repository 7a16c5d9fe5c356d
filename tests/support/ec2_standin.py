"""A strict EC2 for the image calls amibundle makes, patched into the in-process moto.

moto 5.x's RegisterImage keeps only Name and Description and accepts anything (no manifest
check, a made-up EBS mapping, RootDeviceType `standard`), so a test against it proves
nothing. With `Ec2StandIn.install()`, moto's EC2 answers these calls as AWS does:

* RegisterImage keeps Architecture, VirtualizationType (default paravirtual), KernelId,
  RamdiskId, RootDeviceName, BlockDeviceMappings, BootMode, EnaSupport, SriovNetSupport,
  ImageLocation, Name, Description and the image tags of TagSpecifications. An ImageLocation
  registration is `instance-store` (its manifest must exist in S3 and parse; architecture
  defaults to the manifest's); a registration with a snapshot root is `ebs` (the snapshot must
  exist and be completed, the volume at least as big; architecture defaults to i386 and
  ImageLocation reads `<owner>/<name>`, as AWS shows it). Refused: see ec2_rules (names, ids,
  enums, tags, mappings), plus InvalidManifest, InvalidParameterCombination (ImageLocation
  with a snapshot root), MissingParameter (no ImageLocation and no RootDeviceName),
  InvalidBlockDeviceMapping (no snapshot for the root device, volume smaller than its
  snapshot), InvalidSnapshot.NotFound, IncorrectState (snapshot not completed: the code EC2
  gives for a pending snapshot; AWS documents none for RegisterImage), and
  InvalidAMIName.Duplicate (same name, same owner and region).
* DescribeImages answers in the API's shape, honours ImageIds (InvalidAMIID.Malformed /
  NotFound; deregistered ids are simply left out), Owners (self, account ids, aliases;
  InvalidUserID.Malformed otherwise), Filters (with * and ? wildcards; InvalidParameterValue
  for an unknown filter) and MaxResults/NextToken; each call it answers moves the images it
  looked at along their `ImageFate` (pending, then available or failed).
* DeregisterImage refuses malformed, unknown (InvalidAMIID.NotFound) and already deregistered
  (InvalidAMIID.Unavailable) ids, frees the name, and honours DeleteAssociatedSnapshots.
* CreateTags additionally refuses aws: keys and over-long keys or values; DeleteSnapshot
  refuses a snapshot a registered image uses (InvalidSnapshot.InUse).
* Every EC2 call is recorded with its parameters exactly as sent (`calls`).

Why patch moto rather than write an HTTP stand-in: the suite already runs moto in-process,
and one moto endpoint is one AWS account for S3, STS, EC2 and EBS, so one recording proxy in
front of it sees a command's whole conversation. moto's botocore-driven parser and
serialiser give the exact wire shapes (Query parameters in, EC2 XML out) without hand-written
XML; the manifest check reads moto's own S3 backend; snapshots written through the EBS
stand-in are moto snapshots, so DescribeSnapshots, CreateTags and DeleteSnapshot work on them
unchanged; and a test steers an image's state with a plain method call. The price is
coupling to moto internals, which `require_moto_5` and tests/standins/ guard.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from moto import settings as moto_settings
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.responses import EC2Response
from moto.ec2.utils import random_ami_id

from .ec2_images import (
    DEFAULT_FAILURE,
    ImageFate,
    StateReason,
    StrictImage,
    is_known_filter,
    matches_any,
)
from .ec2_manifests import ManifestSource, MotoS3Manifests, manifest_facts, split_location
from .ec2_rules import (
    DEFAULT_VOLUME_TYPE,
    ImageState,
    Registration,
    RequestedMapping,
    RootDeviceType,
    check_image_id,
    check_tags,
    parse_registration,
    refuse,
)
from .moto_patches import Patches, as_handler, ec2_backend, require_moto_5

__all__ = ["Ec2Call", "Ec2StandIn", "ImageFate", "ImageState", "StateReason"]

OWNER_ALIASES = frozenset({"amazon", "aws-marketplace", "aws-backup-vault"})
IMAGE_ID_PREFIXES = {"machine": "ami", "kernel": "aki", "ramdisk": "ari"}
DEFAULT_ROOT = "/dev/sda1"


@dataclass(frozen=True)
class Ec2Call:
    """One EC2 request as the server received it: the action and its Query parameters exactly
    as sent (for example `BlockDeviceMapping.1.Ebs.SnapshotId`), Action and Version left out."""

    action: str
    params: Mapping[str, str]


class Ec2StandIn:
    """The strict image calls, installed into moto's EC2 for as long as `install()` lasts.

    `account_id` and `region` are where the control methods (`fail_image` …) look for an
    image unless told otherwise. `manifests` is where ImageLocation manifests are read;
    `image_fate` is the fate of images registered from now on.
    """

    def __init__(
        self, *, account_id: str, region: str, manifests: ManifestSource | None = None
    ) -> None:
        self.account_id = account_id
        self.region = region
        self.manifests: ManifestSource = manifests or MotoS3Manifests()
        self.image_fate = ImageFate()
        self._patches = Patches()
        self._lock = threading.Lock()
        self._calls: list[Ec2Call] = []

    # -- installing ----------------------------------------------------------------------

    def install(self) -> None:
        require_moto_5()
        if self._patches.installed:
            return
        handlers: dict[str, Callable[[Any], Any]] = {
            "register_image": self._register_image,
            "describe_images": self._describe_images,
            "deregister_image": self._deregister_image,
            "create_tags": self._wrap(EC2Response.create_tags, self._check_new_tags),
            "delete_snapshot": self._wrap(EC2Response.delete_snapshot, self._check_not_in_use),
            "call_action": self._wrap(EC2Response.call_action, self._record),
        }
        for name, method in handlers.items():
            self._patches.replace(EC2Response, name, as_handler(method))
        # A stand-in account starts with no images, as a new AWS account's own list does;
        # moto would otherwise load ~100 public AMIs into every EC2 backend it creates.
        self._patches.replace(moto_settings, "ec2_load_default_amis", lambda: False)

    def uninstall(self) -> None:
        self._patches.undo()

    def reset(self) -> None:
        """Forget recorded calls, go back to the default fate and to reading manifests from
        moto's S3 (moto's own reset drops the images)."""
        with self._lock:
            self._calls.clear()
        self.image_fate = ImageFate()
        self.manifests = MotoS3Manifests()

    @staticmethod
    def _wrap(
        original: Callable[[Any], Any], before: Callable[[Any], None]
    ) -> Callable[[Any], Any]:
        def wrapped(response: Any) -> Any:
            before(response)
            return original(response)

        return wrapped

    # -- what tests use ------------------------------------------------------------------

    @property
    def calls(self) -> list[Ec2Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, action: str) -> list[Ec2Call]:
        return [call for call in self.calls if call.action == action]

    def image(self, image_id: str, *, account_id: str | None = None) -> StrictImage:
        backend = ec2_backend(account_id or self.account_id, self.region)
        image = backend.amis.get(image_id)
        if not isinstance(image, StrictImage):
            raise KeyError(f"no image {image_id} registered through the stand-in")
        return image

    def images(self, *, account_id: str | None = None) -> list[StrictImage]:
        backend = ec2_backend(account_id or self.account_id, self.region)
        return [i for i in backend.amis.values() if isinstance(i, StrictImage)]

    def set_image_fate(
        self, image_id: str, fate: ImageFate, *, account_id: str | None = None
    ) -> None:
        self.image(image_id, account_id=account_id).set_fate(fate)

    def fail_image(
        self,
        image_id: str,
        *,
        after: int = 0,
        reason: StateReason = DEFAULT_FAILURE,
        account_id: str | None = None,
    ) -> None:
        """DescribeImages reports `failed` (with `reason`) after `after` more pending answers."""
        self.set_image_fate(
            image_id, ImageFate(after, ImageState.FAILED, reason), account_id=account_id
        )

    def make_available_after(
        self, image_id: str, describes: int, *, account_id: str | None = None
    ) -> None:
        """DescribeImages reports `pending` `describes` more times, then `available`."""
        self.set_image_fate(image_id, ImageFate(describes), account_id=account_id)

    # -- recording and small checks ------------------------------------------------------

    def _record(self, response: Any) -> None:
        params = {
            key: values[0]
            for key, values in response.querystring.items()
            if key not in ("Action", "Version") and values
        }
        with self._lock:
            self._calls.append(Ec2Call(response._get_action(), params))

    @staticmethod
    def _check_new_tags(response: Any) -> None:
        tags = response._get_param("Tags", []) or []
        check_tags((str(t.get("Key", "")), str(t.get("Value") or "")) for t in tags)

    @staticmethod
    def _check_not_in_use(response: Any) -> None:
        snapshot_id = response._get_param("SnapshotId")
        for image in response.ec2_backend.amis.values():
            if isinstance(image, StrictImage) and snapshot_id in image.snapshot_ids:
                raise refuse(
                    "InvalidSnapshot.InUse",
                    f"The snapshot {snapshot_id} is currently in use by {image.id}",
                )

    # -- RegisterImage -------------------------------------------------------------------

    def _register_image(self, response: Any) -> ActionResult:
        registration = parse_registration(response._get_param)
        response.error_on_dryrun()
        backend = response.ec2_backend
        account = response.current_account
        mappings = [_mapping_out(backend, m) for m in registration.mappings]
        image_type = "machine"
        if registration.image_location is not None:
            kind, location, architecture, root, image_type = self._instance_store(
                registration, account
            )
        else:
            kind, location, architecture, root = _ebs_backed(registration, account)
        with self._lock:  # the duplicate check and the insert are one step
            _refuse_duplicate_name(backend, registration.name)
            image = StrictImage(
                backend,
                # A kernel or ramdisk bundle registers as aki-/ari-, as EC2 did.
                image_id=IMAGE_ID_PREFIXES[image_type] + random_ami_id()[len("ami") :],
                image_type=image_type,
                owner_id=account,
                registration=registration,
                root_device_type=kind,
                image_location=location,
                architecture=architecture,
                root_device_name=root,
                mappings=mappings,
                fate=self.image_fate,
                created=utcnow(),
            )
            backend.amis[image.id] = image
        if registration.tags:
            backend.create_tags([image.id], dict(registration.tags))
        return ActionResult({"ImageId": image.id})

    def _instance_store(
        self, registration: Registration, account: str
    ) -> tuple[RootDeviceType, str, str, str, str]:
        location = registration.image_location
        assert location is not None
        _refuse_snapshot_root(registration, registration.root_device_name or DEFAULT_ROOT)
        bucket, key = split_location(location)
        raw = self.manifests.read(account, bucket, key)
        if raw is None:
            raise refuse(
                "InvalidManifest",
                f"The manifest {location} does not exist or EC2 may not read it",
            )
        facts = manifest_facts(raw, location)
        root = registration.root_device_name or facts.root_device_name or DEFAULT_ROOT
        _refuse_snapshot_root(registration, root)
        architecture = registration.architecture or facts.architecture or "i386"
        return RootDeviceType.INSTANCE_STORE, location, architecture, root, facts.image_type

    # -- DescribeImages ------------------------------------------------------------------

    def _describe_images(self, response: Any) -> ActionResult:
        ids: list[str] = response._get_param("ImageIds", []) or []
        owners: list[str] = response._get_param("Owners", []) or []
        filters: dict[str, list[str]] = response._filters_from_querystring()
        max_results = response._get_param("MaxResults")
        token = response._get_param("NextToken")
        if response._get_param("ExecutableUsers"):
            raise refuse("NotImplementedByStandIn", "ExecutableUsers is not modelled")
        for image_id in ids:
            check_image_id(image_id)
        if ids and max_results is not None:
            raise refuse("InvalidParameterCombination", "MaxResults cannot be used with ImageIds")
        for name in filters:
            if not is_known_filter(name):
                raise refuse("InvalidParameterValue", f"The filter '{name}' is invalid")
        wanted_owners = _owners(owners, response.current_account)
        response.error_on_dryrun()
        backend = response.ec2_backend
        images = _named_images(backend, ids) if ids else list(backend.amis.values())
        for image in images:
            if isinstance(image, StrictImage):
                image.look()
        if wanted_owners:
            images = [i for i in images if {i.owner_id, i.owner_alias} & wanted_owners]
        images = [i for i in images if _passes(i, filters)]
        page, next_token = _page(images, max_results, token)
        answer: dict[str, Any] = {
            "Images": [i.to_api() if isinstance(i, StrictImage) else i for i in page]
        }
        if next_token is not None:
            answer["NextToken"] = next_token
        return ActionResult(answer)

    # -- DeregisterImage -----------------------------------------------------------------

    def _deregister_image(self, response: Any) -> ActionResult:
        image_id = response._get_param("ImageId")
        if not image_id:
            raise refuse("MissingParameter", "The request must contain the parameter imageId")
        check_image_id(image_id)
        response.error_on_dryrun()
        backend = response.ec2_backend
        with self._lock:
            if image_id in backend.deleted_amis:
                raise refuse(
                    "InvalidAMIID.Unavailable",
                    f"The image id '[{image_id}]' is no longer available",
                )
            if image_id not in backend.amis:
                raise refuse("InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist")
            image = backend.amis.pop(image_id)
            backend.deleted_amis.append(image_id)
        answer: dict[str, Any] = {"Return": True}
        if response._get_param("DeleteAssociatedSnapshots") and isinstance(image, StrictImage):
            answer["DeleteSnapshotResults"] = _delete_snapshots_of(backend, image)
        return ActionResult(answer)


def _refuse_snapshot_root(registration: Registration, root: str) -> None:
    mapping = registration.mapping_for(root)
    if mapping is not None and mapping.ebs is not None and mapping.ebs.snapshot_id is not None:
        raise refuse(
            "InvalidParameterCombination",
            f"An instance-store image (ImageLocation) cannot have an EBS snapshot root ({root})",
        )


def _ebs_backed(registration: Registration, account: str) -> tuple[RootDeviceType, str, str, str]:
    root = registration.root_device_name
    if root is None:
        raise refuse("MissingParameter", "The request must contain the parameter rootDeviceName")
    mapping = registration.mapping_for(root)
    if mapping is None or mapping.ebs is None or mapping.ebs.snapshot_id is None:
        raise refuse(
            "InvalidBlockDeviceMapping",
            f"The root device {root} must be mapped to an EBS snapshot",
        )
    # RegisterImage: "Architecture … Default: For Amazon EBS-backed AMIs, i386."
    architecture = registration.architecture or "i386"
    return RootDeviceType.EBS, f"{account}/{registration.name}", architecture, root


def _mapping_out(backend: Any, mapping: RequestedMapping) -> dict[str, Any]:
    """One requested mapping as DescribeImages shows it, after checking its snapshot."""
    if mapping.virtual_name is not None:
        return {"DeviceName": mapping.device_name, "VirtualName": mapping.virtual_name}
    if mapping.ebs is None:
        return {"DeviceName": mapping.device_name, "NoDevice": ""}
    ebs = mapping.ebs
    out: dict[str, Any] = {
        "DeleteOnTermination": True
        if ebs.delete_on_termination is None
        else ebs.delete_on_termination,
        "VolumeType": ebs.volume_type or DEFAULT_VOLUME_TYPE,
        "VolumeSize": ebs.volume_size,
        "Encrypted": False,
    }
    if ebs.snapshot_id is not None:
        snapshot = backend.snapshots.get(ebs.snapshot_id)
        if snapshot is None:
            raise refuse(
                "InvalidSnapshot.NotFound", f"The snapshot '{ebs.snapshot_id}' does not exist."
            )
        if snapshot.status != "completed":
            raise refuse("IncorrectState", f"Snapshot is in invalid state - {snapshot.status}")
        size = ebs.volume_size or snapshot.volume_size
        if size < snapshot.volume_size:
            raise refuse(
                "InvalidBlockDeviceMapping",
                f"Volume of size {size}GB is smaller than snapshot '{ebs.snapshot_id}', "
                f"expect size >= {snapshot.volume_size}GB",
            )
        out.update(SnapshotId=ebs.snapshot_id, VolumeSize=size, Encrypted=bool(snapshot.encrypted))
    for key, value in (("Iops", ebs.iops), ("Throughput", ebs.throughput)):
        if value is not None:
            out[key] = value
    return {"DeviceName": mapping.device_name, "Ebs": out}


def _refuse_duplicate_name(backend: Any, name: str) -> None:
    for image in backend.amis.values():
        if image.name == name:
            raise refuse(
                "InvalidAMIName.Duplicate",
                f"AMI name {name} is already in use by AMI {image.id}",
            )


def _named_images(backend: Any, ids: list[str]) -> list[Any]:
    unknown = [i for i in ids if i not in backend.amis and i not in backend.deleted_amis]
    if unknown:
        raise refuse(
            "InvalidAMIID.NotFound", f"The image id '[{', '.join(unknown)}]' does not exist"
        )
    return [backend.amis[i] for i in dict.fromkeys(ids) if i in backend.amis]


def _owners(owners: list[str], account: str) -> set[str]:
    """DescribeImages' Owners with `self` resolved; InvalidUserID.Malformed for a value that
    is neither self, an account id nor an owner alias."""
    for owner in owners:
        if (
            owner != "self"
            and owner not in OWNER_ALIASES
            and not (len(owner) == 12 and owner.isdigit())
        ):
            raise refuse("InvalidUserID.Malformed", f'Invalid user id: "{owner}"')
    return {account if owner == "self" else owner for owner in owners}


def _passes(image: Any, filters: dict[str, list[str]]) -> bool:
    """Every filter matches (a filter matches when any of its values matches any of the
    image's values)."""
    for name, patterns in filters.items():
        if isinstance(image, StrictImage):
            values = image.filter_values(name) or []
        else:  # an image moto made itself (CreateImage, CopyImage): moto's own filter values
            found = image.get_filter_value(name, "DescribeImages")
            values = [str(v) for v in (found if isinstance(found, (list, set)) else [found])]
        if not matches_any(values, patterns):
            return False
    return True


def _page(
    images: list[Any], max_results: int | None, token: str | None
) -> tuple[list[Any], str | None]:
    start = 0
    if token is not None:
        if not token.startswith("images-") or not token[len("images-") :].isdigit():
            raise refuse("InvalidPaginationToken", f"The token '{token}' is invalid")
        start = int(token[len("images-") :])
    if max_results is None:
        return images[start:], None
    if max_results < 1:
        raise refuse("InvalidParameterValue", "MaxResults must be at least 1")
    end = start + max_results
    return images[start:end], (f"images-{end}" if end < len(images) else None)


def _delete_snapshots_of(backend: Any, image: StrictImage) -> list[dict[str, str]]:
    """DeregisterImage's DeleteAssociatedSnapshots: snapshots another image uses are skipped."""
    still_used = {
        snapshot_id
        for other in backend.amis.values()
        if isinstance(other, StrictImage)
        for snapshot_id in other.snapshot_ids
    }
    results = []
    for snapshot_id in sorted(image.snapshot_ids):
        if snapshot_id in still_used:
            results.append({"SnapshotId": snapshot_id, "ReturnCode": "skipped"})
        else:
            backend.snapshots.pop(snapshot_id, None)
            results.append({"SnapshotId": snapshot_id, "ReturnCode": "success"})
    return results
