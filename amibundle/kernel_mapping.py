"""Finding a bundle's kernel and ramdisk in another region, as ``ec2-migrate-manifest``
did (``classic-cli.md`` §8.3), with boto3.

For each id the manifest names, the image is looked up (``DescribeImages``) in the
regions EC2 reports (``DescribeRegions``) until one knows it; its match in the target
region is the image with the same owner, the same type and the same manifest key (the
image location without its bucket). Unlike the classic, the target region is asked only
for images of those owners and types (the classic's owner filter was lost), the calls
are signed with Signature Version 4, and credentials come from the standard AWS chain
when none are given.

``AMITOOLS_EC2_REGION_ENDPOINT=region@url`` adds or overrides one region's endpoint, as
it did for the classic tools.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from amibundle import aws
from amibundle.aws import Service
from amibundle.ec2.client import EC2
from amibundle.errors import MappingError, MappingUnavailableError, UsageError

__all__ = [
    "ENDPOINT_VARIABLE",
    "Ec2Access",
    "ImageIds",
    "KernelMapping",
    "map_image_ids",
    "missing_in_region",
]

ENDPOINT_VARIABLE = "AMITOOLS_EC2_REGION_ENDPOINT"
# Where DescribeRegions is asked when nothing else says (the classic asked ec2.amazonaws.com).
_HOME_REGION = "us-east-1"
# Regions asked at once when looking for where an id is (there are about thirty).
_PARALLEL_REGIONS = 8
_NOT_FOUND = ("InvalidAMIID.NotFound", "InvalidAKIID.NotFound", "InvalidARIID.NotFound")
_MALFORMED = ("InvalidAMIID.Malformed", "InvalidAKIID.Malformed", "InvalidARIID.Malformed")


@dataclass(frozen=True)
class Ec2Access:
    """How to reach EC2: explicit keys (else the standard AWS chain: environment,
    ``profile``, instance role) and, for any other EC2 endpoint than AWS's,
    ``endpoint_url``. ``attempts`` counts tries per request."""

    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    attempts: int = 3

    def __post_init__(self) -> None:
        if (self.access_key is None) != (self.secret_key is None):
            raise UsageError(
                "give both an access key and a secret key ({param}), or neither", param="secret_key"
            )


@dataclass(frozen=True)
class ImageIds:
    """A bundle's kernel and ramdisk ids (None: it names none)."""

    kernel_id: str | None = None
    ramdisk_id: str | None = None

    def present(self) -> list[str]:
        return [i for i in (self.kernel_id, self.ramdisk_id) if i]


@dataclass(frozen=True)
class KernelMapping:
    """What :func:`map_image_ids` found: the ids in the target region, and the region
    the manifest's ids were found in."""

    ids: ImageIds
    source_region: str
    target_region: str


# --------------------------------------------------------------------------- EC2 clients


# EC2's refusals, as the mapping's: EC2 cannot be asked.
_MAPPING = Service(
    name="AWS",
    error=MappingUnavailableError,
    credentials_error=MappingUnavailableError,
    credential_codes=EC2.credential_codes,
)


class _Ec2:
    """EC2 clients per region for one :class:`Ec2Access` (thread-safe)."""

    def __init__(self, access: Ec2Access) -> None:
        self._access = access
        self._session = aws.session_for(access, _MAPPING)
        self._config = aws.client_config(access.attempts)
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()  # boto3 sessions do not make clients thread-safely
        self._overrides = _endpoint_overrides()

    def client(self, region: str) -> Any:
        with self._lock:
            if region not in self._clients:
                endpoint = self._overrides.get(region) or self._access.endpoint_url
                with _ec2_errors(f"connect to EC2 in {region}"):
                    self._clients[region] = aws.make_client(
                        self._session,
                        "ec2",
                        region=region,
                        endpoint_url=endpoint,
                        config=self._config,
                    )
            return self._clients[region]

    def regions(self) -> list[str]:
        """The regions EC2 reports, and any the endpoint variable adds."""
        with _ec2_errors("list the EC2 regions (DescribeRegions)"):
            reply = self.client(_HOME_REGION).describe_regions()
        names = [r["RegionName"] for r in reply.get("Regions", []) if r.get("RegionName")]
        return list(dict.fromkeys([*names, *self._overrides]))


def _endpoint_overrides() -> dict[str, str]:
    value = os.environ.get(ENDPOINT_VARIABLE, "")
    if not value:
        return {}
    region, sep, url = value.partition("@")
    if not sep or not region or not url:
        raise UsageError(f"${ENDPOINT_VARIABLE} must be region@url, not {value!r}")
    return {region: url if "://" in url else f"https://{url}"}


def _unavailable(what: str, err: Exception) -> MappingUnavailableError:
    """One line for a request EC2 refused or that could not be sent."""
    return aws.failure(_MAPPING, what, err)


def _ec2_errors(what: str) -> AbstractContextManager[None]:
    return aws.refusals(lambda err: _unavailable(what, err))


def _describe_ids(ec2: _Ec2, region: str, ids: Sequence[str]) -> list[dict[str, Any]] | None:
    """The images ``ids`` in ``region``; None when the region does not know all of them."""
    from botocore.exceptions import BotoCoreError, ClientError

    what = f"describe {', '.join(ids)} in {region}"
    try:
        reply = ec2.client(region).describe_images(ImageIds=list(ids))
    except ClientError as err:
        code = aws.error_code(err)[0]
        if code in _NOT_FOUND:
            return None
        if code in _MALFORMED:
            raise MappingError(f"EC2 says an id is malformed: {', '.join(ids)}") from None
        raise _unavailable(what, err) from None
    except BotoCoreError as err:
        raise _unavailable(what, err) from None
    images: list[dict[str, Any]] = reply.get("Images", [])
    return images if {i.get("ImageId") for i in images} >= set(ids) else None


# --------------------------------------------------------------------------- mapping


def _location_key(location: str) -> str:
    """An image location without its bucket: the manifest's key."""
    return location.partition("/")[2]


def _find_source(
    ec2: _Ec2, ids: Sequence[str], regions: Sequence[str]
) -> tuple[str, dict[str, dict[str, Any]]]:
    """The first region of ``regions`` that knows every id: the first is asked alone (it
    is where the bundle usually comes from), the others together, as there are many."""
    first, rest = regions[:1], regions[1:]
    answers = [_describe_ids(ec2, region, ids) for region in first]
    if rest and answers[0] is None:
        with ThreadPoolExecutor(max_workers=_PARALLEL_REGIONS) as pool:
            answers += list(pool.map(lambda region: _describe_ids(ec2, region, ids), rest))
    for region, images in zip(regions, answers, strict=False):
        if images is not None:
            return region, {image["ImageId"]: image for image in images}
    where = regions[0] if len(regions) == 1 else "any region EC2 reports"
    raise MappingError(
        f"{' and '.join(ids)} not found in {where}",
        hint="give the ids for the target region with --kernel/--ramdisk, or --no-mapping",
    )


def _match_in_target(ec2: _Ec2, target: str, sources: dict[str, dict[str, Any]]) -> dict[str, str]:
    owners = sorted({str(image.get("OwnerId")) for image in sources.values()})
    types = sorted({str(image.get("ImageType")) for image in sources.values()})
    with _ec2_errors(f"describe images in {target}"):
        paginator = ec2.client(target).get_paginator("describe_images")
        candidates = [
            image
            for page in paginator.paginate(
                Owners=owners, Filters=[{"Name": "image-type", "Values": types}]
            )
            for image in page.get("Images", [])
        ]
    mapped: dict[str, str] = {}
    for source_id, source in sources.items():
        key = _location_key(str(source.get("ImageLocation", "")))
        matches = sorted(
            image["ImageId"]
            for image in candidates
            if image.get("OwnerId") == source.get("OwnerId")
            and image.get("ImageType") == source.get("ImageType")
            and key
            and _location_key(str(image.get("ImageLocation", ""))) == key
        )
        if not matches:
            raise MappingError(
                f"{source_id} ({source.get('ImageLocation')}) has no match in {target}: no "
                f"{source.get('ImageType')} image of owner {source.get('OwnerId')} with the "
                f"manifest key {key}",
                hint="give the id for the target region with --kernel/--ramdisk",
            )
        mapped[source_id] = matches[0]
    return mapped


def map_image_ids(
    ids: ImageIds,
    *,
    target_region: str,
    access: Ec2Access,
    source_region: str | None = None,
) -> KernelMapping:
    """The kernel and ramdisk of ``ids`` in ``target_region``.

    The ids are looked up in ``source_region`` when given, else in every region EC2
    reports until one knows them. Raises :class:`MappingUnavailableError` when the
    target region is not one EC2 reports or EC2 cannot be asked, and
    :class:`MappingError` when an id is found nowhere or has no match."""
    if not isinstance(access, Ec2Access):
        raise UsageError(
            f"{{param}} must be an Ec2Access, not {type(access).__name__}", param="access"
        )
    ec2 = _Ec2(access)
    regions = ec2.regions()
    if target_region not in regions:
        raise MappingUnavailableError(
            f"region {target_region} is not one EC2 reports ({', '.join(sorted(regions))})",
            hint=f"check the region name, or set {ENDPOINT_VARIABLE}=region@url",
        )
    present = ids.present()
    if not present:
        return KernelMapping(ids, target_region, target_region)
    order = [source_region] if source_region else _search_order(regions)
    found_in, sources = _find_source(ec2, present, order)
    mapped = _match_in_target(ec2, target_region, sources)
    return KernelMapping(
        ImageIds(
            kernel_id=mapped.get(ids.kernel_id or "") if ids.kernel_id else None,
            ramdisk_id=mapped.get(ids.ramdisk_id or "") if ids.ramdisk_id else None,
        ),
        found_in,
        target_region,
    )


def _search_order(regions: Sequence[str]) -> list[str]:
    """The configured default region first (where a bundle usually comes from), then the
    rest in EC2's order."""
    first = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
    return list(dict.fromkeys([first, *regions] if first in regions else regions))


def missing_in_region(ids: Sequence[str], *, region: str, access: Ec2Access) -> list[str]:
    """Those of ``ids`` that ``region`` does not know (each asked for on its own)."""
    ec2 = _Ec2(access)
    return [image_id for image_id in ids if _describe_ids(ec2, region, [image_id]) is None]
