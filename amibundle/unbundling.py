"""``unbundle``: a local bundle back into its image file.

Every part's size and SHA-1 is checked as it streams, the image digest at
the end, the signature first when a certificate is given. The image is
written sparse under a temporary name and renamed only when every check
passed; on any failure nothing is left behind.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from amibundle.errors import ManifestError, shorten
from amibundle.files import check_directory, name_problem, refuse_existing, temp_output
from amibundle.folder import recover_abandoned
from amibundle.format.tar import Member
from amibundle.parts import PartReader
from amibundle.pipeline import unbundle_stream
from amibundle.progress import Progress
from amibundle.reading import (
    bundle_key,
    check_image,
    check_signature,
    local_part_specs,
    read_manifest,
)
from amibundle.results import JsonRecord
from amibundle.sparse import SparseWriter
from amibundle.validate import as_optional_path, as_path, check_progress

__all__ = ["UnbundleResult", "unbundle"]

log = logging.getLogger("amibundle")


@dataclass(frozen=True)
class UnbundleResult(JsonRecord):
    image_path: Path
    size: int  # apparent
    data_size: int  # bytes written: the image without its holes
    digest: str
    compression: str
    parts: int
    signature_checked: bool
    seconds: float


def unbundle(
    manifest: str | os.PathLike[str],
    *,
    private_key: str | os.PathLike[str],
    source: str | os.PathLike[str] | None = None,
    destination: str | os.PathLike[str] = ".",
    cert: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> UnbundleResult:
    """Recreates the image of a local bundle in ``destination``; parts are read
    from ``source`` (default: the manifest's folder)."""
    started = time.monotonic()
    progress = check_progress(progress)
    manifest_path = as_path(manifest, "manifest")
    key_path = as_path(private_key, "private_key")
    parts_folder = as_optional_path(source, "source") or manifest_path.parent
    folder = as_path(destination, "destination")
    cert_path = as_optional_path(cert, "cert")
    parsed = read_manifest(manifest_path)
    m = parsed.manifest
    if cert_path is not None:
        check_signature(parsed, cert_path)
    check_directory(folder, "destination")
    final = folder / m.name  # a plain file name: the manifest reader checked it
    if problem := name_problem(folder, m.name):
        raise ManifestError(f"the manifest's image name {shorten(repr(m.name))} {problem}")
    recover_abandoned(folder)
    refuse_existing([final], force=force)
    key = bundle_key(parsed, key_path)
    reader = PartReader(local_part_specs(parsed, parts_folder), m.bundled_size)
    with temp_output(final) as out:

        def open_output(member: Member) -> SparseWriter:
            if member.name != m.name:
                log.warning(
                    "the image inside the bundle is named %s; writing it as %s",
                    shorten(repr(member.name)),
                    shorten(repr(m.name)),
                )
            return SparseWriter(out.fd, str(final))

        try:
            result = unbundle_stream(
                reader, key, open_output, expected_size=m.size, progress=progress
            )
        finally:
            reader.close()
        check_image(m, result.tar_sha1, result.member)
        # Modes like setuid make no sense on an image file; keep permission bits.
        out.publish(overwrite=force, mode=result.member.mode & 0o777, mtime=result.member.mtime)
    return UnbundleResult(
        image_path=final,
        size=result.member.size,
        data_size=result.member.data_size,
        digest=result.tar_sha1,
        compression=result.compression.value,
        parts=len(m.parts),
        signature_checked=cert_path is not None,
        seconds=time.monotonic() - started,
    )
