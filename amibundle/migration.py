"""Moving a bundle's manifest to another region: ``migrate-manifest`` (and the manifest
half of ``migrate-bundle``), ``classic-cli.md`` §8.

The migrated manifest is always version 2007-10-10: every field is copied except the
kernel and ramdisk ids, which take the new values (None drops them), and older versions
are upgraded as the classic did (version 3 gets architecture ``i386``; versions 3 and
2007-08-29 get type ``machine``). It is signed again with the user's key.

Beyond the classic, which copied EC2's wrapped copy of the bundle key unchanged (so a
bundle made for the commercial regions stayed readable only there), the key is unwrapped
from the user's copy with the user's private key and wrapped again for the EC2
certificate of the target region (``BundleKeys.ec2_public``).

The original file is kept as ``<manifest>.bak``; an existing backup stops the migration
before anything is written (:class:`BackupExistsError`). Unlike the classic, the backup
is made only when the new manifest is ready, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from amibundle.crypto import BundleKey, sign, unwrap_secret, wrap_secret
from amibundle.errors import BackupExistsError
from amibundle.files import write_atomically
from amibundle.format import manifest as mf
from amibundle.format.manifest_writer import render, signed_sections
from amibundle.identity import BundleKeys
from amibundle.kernel_mapping import ImageIds
from amibundle.reading import check_signature, read_manifest
from amibundle.results import JsonRecord
from amibundle.validate import as_path, check_record

__all__ = [
    "MigratedManifest",
    "MigrationResult",
    "backup_path",
    "migrate_manifest",
    "migrated_manifest",
    "read_for_migration",
    "upgraded",
]

# Version 3 manifests say nothing of the architecture; the classic took them as i386.
_V3_ARCHITECTURE = "i386"


@dataclass(frozen=True)
class MigratedManifest:
    """A migrated manifest: its bytes and record, and the certificate EC2's copy of the
    bundle key was wrapped for."""

    data: bytes
    manifest: mf.Manifest
    ec2_certificate: Path


@dataclass(frozen=True)
class MigrationResult(JsonRecord):
    """What :func:`migrate_manifest` did."""

    manifest_path: Path
    backup_path: Path
    version_before: str
    kernel_id_before: str | None
    ramdisk_id_before: str | None
    kernel_id: str | None
    ramdisk_id: str | None
    ec2_certificate: Path  # EC2's copy of the key is wrapped for this one now
    seconds: float


def backup_path(manifest: Path) -> Path:
    return manifest.with_name(manifest.name + ".bak")


def upgraded(manifest: mf.Manifest, ids: ImageIds) -> mf.Manifest:
    """``manifest`` as an unsigned 2007-10-10 record with the kernel and ramdisk of ``ids``."""
    architecture = manifest.architecture
    if manifest.version == "3" and architecture is None:
        architecture = _V3_ARCHITECTURE
    return replace(
        manifest,
        version=mf.MANIFEST_VERSION,
        architecture=architecture,
        image_type=manifest.image_type or "machine",
        kernel_id=ids.kernel_id or None,
        ramdisk_id=ids.ramdisk_id or None,
        signature=None,
    )


def migrated_manifest(
    parsed: mf.ParsedManifest, *, keys: BundleKeys, ids: ImageIds
) -> MigratedManifest:
    """The migrated manifest of ``parsed``: upgraded, with the kernel and ramdisk of
    ``ids``, EC2's copy of the bundle key wrapped for ``keys.ec2_public`` (unwrapped
    from the user's copy with ``keys.signer``) and signed by ``keys.signer``.

    Raises :class:`KeyMismatchError` when the private key is not the one the bundle's
    user copy was made for."""
    keys = check_record(keys, BundleKeys, "keys")
    ids = check_record(ids, ImageIds, "ids")
    record = upgraded(parsed.manifest, ids)
    bundle_key = BundleKey(
        key=unwrap_secret(keys.signer, record.user_encrypted_key, "user_encrypted_key"),
        iv=unwrap_secret(keys.signer, record.user_encrypted_iv, "user_encrypted_iv"),
    )
    record = replace(
        record,
        ec2_encrypted_key=wrap_secret(keys.ec2_public, bundle_key.key),
        ec2_encrypted_iv=wrap_secret(keys.ec2_public, bundle_key.iv),
    )
    record = replace(record, signature=sign(keys.signer, signed_sections(record)))
    return MigratedManifest(render(record), record, keys.ec2_certificate)


def read_for_migration(manifest: str | os.PathLike[str], *, keys: BundleKeys) -> mf.ParsedManifest:
    """Reads ``manifest`` and checks what the classic checked before migrating it: a
    version it knows, the signature (``keys.certificate``), and no backup in the way."""
    path = as_path(manifest, "manifest")
    keys = check_record(keys, BundleKeys, "keys")
    parsed = read_manifest(path)
    check_signature(parsed, keys.certificate)
    backup = backup_path(path)
    if os.path.lexists(backup):
        raise BackupExistsError(
            f"the backup {backup} exists already; nothing was changed",
            hint="move it away (it holds the manifest from before an earlier migration)",
        )
    return parsed


def migrate_manifest(
    manifest: str | os.PathLike[str], *, keys: BundleKeys, ids: ImageIds
) -> MigrationResult:
    """Migrates the manifest file in place (see the module's description): checks it
    (:func:`read_for_migration`), keeps the original as ``<manifest>.bak`` and writes
    the migrated manifest over it."""
    started = time.monotonic()
    path = as_path(manifest, "manifest")
    parsed = read_for_migration(path, keys=keys)
    migrated = migrated_manifest(parsed, keys=keys, ids=ids)
    backup = backup_path(path)
    write_atomically(backup, parsed.raw, overwrite=False)
    write_atomically(path, migrated.data, overwrite=True)
    before = parsed.manifest
    return MigrationResult(
        manifest_path=path,
        backup_path=backup,
        version_before=before.version,
        kernel_id_before=before.kernel_id,
        ramdisk_id_before=before.ramdisk_id,
        kernel_id=migrated.manifest.kernel_id,
        ramdisk_id=migrated.manifest.ramdisk_id,
        ec2_certificate=migrated.ec2_certificate,
        seconds=time.monotonic() - started,
    )
