"""What every reader of a bundle shares: its manifest file, its signature,
its key, its parts and the final digest check.

Unbundling, verifying, inspecting, and the commands that stream a bundle
elsewhere (S3, EBS) all start from a parsed manifest and end with
:func:`check_image`.
"""

from __future__ import annotations

import os
from pathlib import Path

from amibundle.crypto import (
    BundleKey,
    load_certificate,
    load_private_key,
    public_key_of,
    unwrap_secret,
    verify_signature,
)
from amibundle.errors import IntegrityError, ManifestError, StorageError, UsageError, shorten
from amibundle.files import name_problem, read_input
from amibundle.format.manifest import MAX_MANIFEST_SIZE, Manifest, ParsedManifest
from amibundle.format.manifest_reader import parse_manifest
from amibundle.format.tar import Member
from amibundle.parts import PartSpec
from amibundle.validate import as_path

__all__ = [
    "bundle_key",
    "check_image",
    "check_signature",
    "local_part_specs",
    "name_problems",
    "read_manifest",
]


def read_manifest(path: str | os.PathLike[str]) -> ParsedManifest:
    """Reads and parses a manifest file (size-capped, hardened parser)."""
    path = as_path(path, "manifest")
    try:
        data = read_input(path, "manifest", limit=MAX_MANIFEST_SIZE)
    except FileNotFoundError:
        raise UsageError(f"{{param}} {path} does not exist", param="manifest") from None
    except IsADirectoryError:
        raise UsageError(f"{{param}} {path} is a directory, not a file", param="manifest") from None
    except OSError as err:
        raise StorageError(f"cannot read manifest {path}: {err.strerror}") from None
    if len(data) > MAX_MANIFEST_SIZE:
        raise ManifestError(f"manifest {path} is larger than {MAX_MANIFEST_SIZE >> 20} MiB")
    return parse_manifest(data, path.name)


def check_signature(parsed: ParsedManifest, cert: Path) -> None:
    """Raises :class:`IntegrityError` unless the manifest is signed by ``cert``'s key."""
    signature = parsed.manifest.signature
    if not signature:
        raise IntegrityError("the manifest carries no signature")
    verify_signature(public_key_of(load_certificate(cert), cert), parsed.signed_data, signature)


def bundle_key(parsed: ParsedManifest, private_key: Path) -> BundleKey:
    """The bundle's AES key and IV, unwrapped from the user's copy."""
    signer = load_private_key(private_key)
    m = parsed.manifest
    return BundleKey(
        key=unwrap_secret(signer, m.user_encrypted_key, "user_encrypted_key"),
        iv=unwrap_secret(signer, m.user_encrypted_iv, "user_encrypted_iv"),
    )


def name_problems(manifest: Manifest, folder: Path) -> list[str]:
    """The manifest's names (image, parts) that no file in ``folder`` can
    have: longer than the file system allows. Reported before anything is
    created or opened."""
    problems = []
    for what, name in [
        ("image name", manifest.name),
        *(("part", p.filename) for p in manifest.parts),
    ]:
        if problem := name_problem(folder, name):
            problems.append(f"the manifest's {what} {shorten(repr(name))} {problem}")
    return problems


def local_part_specs(parsed: ParsedManifest, folder: Path) -> list[PartSpec]:
    """The part files of a bundle in ``folder`` (names checked as plain by
    the reader, and here against the file system's limits)."""
    problems = name_problems(parsed.manifest, folder)[:1]
    if problems:
        raise ManifestError(problems[0])
    return [PartSpec(folder / p.filename, p.digest) for p in parsed.manifest.parts]


def check_image(manifest: Manifest, tar_sha1: str, member: Member) -> None:
    """The stream read is the one the manifest describes: digest and size."""
    if tar_sha1 != manifest.digest:
        raise IntegrityError(
            f"image digest mismatch: the manifest says {manifest.digest}, "
            f"the bundle's contents give {tar_sha1}"
        )
    if member.size != manifest.size:
        raise IntegrityError(
            f"the image in the bundle is {member.size} bytes but the manifest says {manifest.size}"
        )
