"""Where the EC2 stand-in reads the manifest named by RegisterImage's ImageLocation.

AWS reads `bucket/key` from S3 when an instance-store AMI is registered and refuses with
InvalidManifest when it cannot ("The specified AMI has an unparsable manifest, or you may not
have access to the location of the manifest file in Amazon S3"); for such an AMI the
architecture defaults to the manifest's (RegisterImage: "For instance store-backed AMIs, the
architecture specified in the manifest file").

Two sources: `MotoS3Manifests` reads the S3 backend of the moto server the request came to
(the usual case: the bundle was uploaded to the same moto), `EndpointManifests` reads any
S3 endpoint (for example SeaweedFS) with boto3. The manifest is parsed with entities and
network off and only as far as EC2 needs here; the bundle format itself is checked by
amibundle's own tests, not by the stand-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from lxml import etree

from .ec2_rules import refuse

__all__ = [
    "EndpointManifests",
    "ManifestFacts",
    "ManifestSource",
    "MotoS3Manifests",
    "manifest_facts",
    "split_location",
]

MAX_MANIFEST_BYTES = 4 * 1024 * 1024


class ManifestSource(Protocol):
    def read(self, account_id: str, bucket: str, key: str) -> bytes | None:
        """The manifest's bytes, or None when the object (or bucket) does not exist."""


@dataclass(frozen=True)
class ManifestFacts:
    """What EC2 takes from a manifest when the request leaves it out."""

    architecture: str | None
    root_device_name: str | None
    image_type: str = "machine"  # <image><type>: a kernel or ramdisk bundle registers as aki/ari


class MotoS3Manifests:
    """Objects of the in-process moto S3 backend."""

    def read(self, account_id: str, bucket: str, key: str) -> bytes | None:
        from moto.s3.exceptions import MissingBucket
        from moto.s3.models import s3_backends

        try:
            found = s3_backends[account_id]["aws"].get_object(bucket, key)
        except MissingBucket:
            return None
        return None if found is None else bytes(found.value)


class EndpointManifests:
    """Objects of any S3 endpoint, read with boto3 and the given keys."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def read(self, account_id: str, bucket: str, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            answer = self._client.get_object(Bucket=bucket, Key=key)
        except ClientError as error:
            # Missing, or not readable with these keys: either way EC2 could not read it.
            if error.response["Error"]["Code"] in {
                "NoSuchKey",
                "NoSuchBucket",
                "404",
                "AccessDenied",
                "403",
            }:
                return None
            raise
        return bytes(answer["Body"].read())


def split_location(location: str) -> tuple[str, str]:
    """`bucket/key/with/slashes` → (bucket, key); InvalidManifest when either part is empty."""
    bucket, _, key = location.partition("/")
    if not bucket or not key:
        raise refuse(
            "InvalidManifest", f"The manifest location {location} is not of the form bucket/key"
        )
    return bucket, key


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False
    )


def manifest_facts(raw: bytes, location: str) -> ManifestFacts:
    """Parse a manifest as far as EC2 needs; InvalidManifest when it is no manifest."""
    unparsable = refuse("InvalidManifest", f"The manifest at {location} is not parsable")
    if len(raw) > MAX_MANIFEST_BYTES or b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        raise unparsable
    try:
        root = etree.fromstring(raw, _parser())
    except etree.XMLSyntaxError:
        raise unparsable from None
    if root.tag != "manifest":
        raise unparsable
    machine = root.find("machine_configuration")
    architecture = None if machine is None else machine.findtext("architecture")
    image_type = (root.findtext("image/type") or "machine").strip()
    if image_type not in ("machine", "kernel", "ramdisk"):
        raise unparsable
    return ManifestFacts(architecture or None, _root_device(machine), image_type)


def _root_device(machine: Any) -> str | None:
    if machine is None:
        return None
    for mapping in machine.iterfind("block_device_mapping/mapping"):
        if mapping.findtext("virtual") == "root":
            device = (mapping.findtext("device") or "").strip()
            if device:
                return device if device.startswith("/dev/") else f"/dev/{device}"
    return None
