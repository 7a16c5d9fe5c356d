"""``verify_bundle`` and ``inspect_manifest``: checking a local bundle offline.

verify reports every problem it finds instead of stopping at the first;
inspect shows what a manifest says.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amibundle.compression import Compression, detect
from amibundle.crypto import AES_BLOCK, CbcDecryptor
from amibundle.errors import AmibundleError, IntegrityError, StorageError
from amibundle.files import read_input
from amibundle.format.manifest import Manifest, ParsedManifest
from amibundle.parts import PartReader, PartSpec
from amibundle.pipeline import read_all_parts, unbundle_stream
from amibundle.progress import Progress, Stage
from amibundle.reading import (
    bundle_key,
    check_image,
    check_signature,
    local_part_specs,
    name_problems,
    read_manifest,
)
from amibundle.results import JsonRecord, to_json
from amibundle.validate import as_optional_path, as_path, check_progress

__all__ = ["ManifestReport", "Problem", "VerifyReport", "inspect_manifest", "verify_bundle"]


class Problem(str):
    """One problem :func:`verify_bundle` found: its one-line text (it is a
    ``str``) and its ``kind``, so that a report of thousands can be summed up
    by kind."""

    kind: str

    def __new__(cls, text: str, kind: str) -> Problem:
        problem = super().__new__(cls, text)
        problem.kind = kind
        return problem


@dataclass(frozen=True)
class VerifyReport(JsonRecord):
    """Every problem :func:`verify_bundle` found; ``ok`` when there are none."""

    manifest_path: Path
    problems: tuple[Problem, ...]
    checks: tuple[str, ...]
    parts: int
    image_size: int | None

    @property
    def ok(self) -> bool:
        return not self.problems

    def json_extras(self) -> dict[str, Any]:
        return {"ok": self.ok}


class _Discard:
    """A member writer that only counts (verify writes nothing)."""

    def write(self, offset: int, data: memoryview) -> None:
        pass

    def finish(self, size: int) -> None:
        pass


def _part_size_problems(specs: Sequence[PartSpec], bundled_size: int) -> tuple[list[Problem], bool]:
    """Problems with the parts' sizes, and whether every part is there (their
    sizes are compared only then)."""
    problems: list[Problem] = []
    sizes: list[int] = []
    for spec in specs:
        try:
            sizes.append(spec.path.stat().st_size)
        except FileNotFoundError:
            problems.append(
                Problem(f"part {spec.path.name} is missing from {spec.path.parent}", "missing part")
            )
        except OSError as err:
            problems.append(Problem(f"cannot read part {spec.path}: {err.strerror}", "unreadable"))
    if problems:
        return problems, False
    for spec, size in zip(specs[:-1], sizes[:-1], strict=True):
        if size != sizes[0]:
            problems.append(
                Problem(
                    f"part {spec.path.name} is {size} bytes; the first part is {sizes[0]}", "size"
                )
            )
    if sizes and not 0 < sizes[-1] <= sizes[0]:
        problems.append(
            Problem(
                f"the last part {specs[-1].path.name} has a wrong size ({sizes[-1]} bytes)", "size"
            )
        )
    if sum(sizes) != bundled_size:
        problems.append(
            Problem(
                f"the parts hold {sum(sizes)} bytes but the manifest says bundled_size "
                f"{bundled_size}",
                "size",
            )
        )
    return problems, True


def _digest_problems(specs: Sequence[PartSpec]) -> list[Problem]:
    """Checks the SHA-1 of every part, each on its own, collecting problems."""
    problems = []
    for spec in specs:
        reader = PartReader([spec], bundled_size=None)
        try:
            read_all_parts(reader)
        except IntegrityError as err:
            problems.append(Problem(str(err), "part"))
        finally:
            reader.close()
    return problems


def verify_bundle(
    manifest: str | os.PathLike[str],
    *,
    cert: str | os.PathLike[str] | None = None,
    private_key: str | os.PathLike[str] | None = None,
    source: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Checks a local bundle offline and reports every problem found.

    Always: the manifest is well-formed, every part is present with a
    consistent size and the right SHA-1, and ``bundled_size`` adds up. With
    ``cert``: the signature. With ``private_key``: the bundle is decrypted,
    decompressed and its tar stream read end to end, and the image digest
    checked; nothing is written. ``checks`` lists what could be checked:
    part sizes only when every part is there, decryption and the tar stream
    only when the stream could be read to its end.
    """
    progress = check_progress(progress)
    manifest_path = as_path(manifest, "manifest")
    cert_path = as_optional_path(cert, "cert")
    key_path = as_optional_path(private_key, "private_key")
    parts_folder = as_optional_path(source, "source") or manifest_path.parent
    checks: list[str] = ["manifest"]
    problems: list[Problem] = []
    try:
        parsed = read_manifest(manifest_path)
    except AmibundleError as err:
        return VerifyReport(manifest_path, (Problem(str(err), "manifest"),), tuple(checks), 0, None)
    m = parsed.manifest
    if cert_path is not None:
        checks.append("signature")
        try:
            check_signature(parsed, cert_path)
        except AmibundleError as err:
            problems.append(Problem(str(err), "signature"))
    checks.append("names")
    if names := name_problems(m, parts_folder):
        # A name no file here can have: the bundle cannot be unbundled.
        problems += [Problem(text, "name") for text in names]
        return VerifyReport(manifest_path, tuple(problems), tuple(checks), len(m.parts), m.size)
    specs = local_part_specs(parsed, parts_folder)
    checks.append("parts present")
    size_problems, all_present = _part_size_problems(specs, m.bundled_size)
    problems += size_problems
    if all_present:
        checks.append("part sizes")
    first_unread = 0
    if key_path is not None:
        stream_checks, stream_problems, first_unread = _stream_checks(
            parsed, specs, key_path, progress
        )
        checks += stream_checks
        problems += stream_problems
    checks.append("part digests")
    problems += _digest_problems(specs[first_unread:])
    unique = tuple(dict.fromkeys(problems))  # a missing part is found by two checks
    return VerifyReport(manifest_path, unique, tuple(checks), len(m.parts), m.size)


def _stream_checks(
    parsed: ParsedManifest, specs: list[PartSpec], key_path: Path, progress: Progress | None
) -> tuple[list[str], list[Problem], int]:
    """Decrypts and reads the whole stream: (checks done, problems, parts read)."""
    checks: list[str] = []
    reader = PartReader(specs, parsed.manifest.bundled_size)
    try:
        key = bundle_key(parsed, key_path)
        result = unbundle_stream(
            reader,
            key,
            lambda member: _Discard(),
            expected_size=parsed.manifest.size,
            progress=progress,
            stage=Stage.VERIFY,
        )
        checks += ["decryption", "tar stream", "image digest"]
        check_image(parsed.manifest, result.tar_sha1, result.member)
    except AmibundleError as err:
        return checks, [Problem(str(err), "stream")], reader.checked
    finally:
        reader.close()
    return checks, [], reader.checked


@dataclass(frozen=True)
class ManifestReport(JsonRecord):
    """What a manifest says, plus the signature check when a certificate is
    given and the stream's compression when the private key is."""

    manifest_path: Path
    manifest: Manifest
    signature_valid: bool | None  # None: not checked
    signature_problem: str | None
    compression: str | None = None  # "gzip" or "zstd"; None: not looked at (no key)

    def to_dict(self) -> dict[str, Any]:
        # The manifest's fields at the top level, as scripts have read them.
        return {
            "manifest_path": to_json(self.manifest_path),
            **to_json(self.manifest),
            "signature_valid": self.signature_valid,
            "signature_problem": self.signature_problem,
            "compression": self.compression,
        }


def inspect_manifest(
    manifest: str | os.PathLike[str],
    *,
    cert: str | os.PathLike[str] | None = None,
    private_key: str | os.PathLike[str] | None = None,
    source: str | os.PathLike[str] | None = None,
) -> ManifestReport:
    """Parses a manifest; with ``cert`` also checks its signature (a bad
    signature is reported, not raised); with ``private_key`` decrypts the
    start of the first part (in ``source``, default: the manifest's folder)
    to tell the stream's compression."""
    manifest_path = as_path(manifest, "manifest")
    cert_path = as_optional_path(cert, "cert")
    key_path = as_optional_path(private_key, "private_key")
    parsed = read_manifest(manifest_path)
    valid: bool | None = None
    problem = None
    if cert_path is not None:
        try:
            check_signature(parsed, cert_path)
            valid = True
        except IntegrityError as err:
            valid, problem = False, str(err)
    compression = None
    if key_path is not None:
        folder = as_optional_path(source, "source") or manifest_path.parent
        compression = _stream_compression(parsed, key_path, folder).value
    return ManifestReport(manifest_path, parsed.manifest, valid, problem, compression)


def _stream_compression(parsed: ParsedManifest, key_path: Path, folder: Path) -> Compression:
    """The compression of the bundle's stream, from its first decrypted block."""
    key = bundle_key(parsed, key_path)
    first = local_part_specs(parsed, folder)[0].path
    try:
        # Checked and opened without blocking, like every input: a FIFO is an error.
        head = read_input(first, "part", limit=2 * AES_BLOCK)[: 2 * AES_BLOCK]
    except OSError as err:
        raise StorageError(f"cannot read part {first}: {err.strerror}") from None
    plain: list[bytes] = []
    CbcDecryptor(key, lambda view: plain.append(bytes(view))).write(head)
    return detect(b"".join(plain))
