"""The library API: one function per command, each returning a result record.

The CLI is a thin layer over these; CI jobs can call them directly::

    from amibundle import bundle_image, unbundle, verify_bundle
    result = bundle_image(Path("root.img"), cert=..., private_key=..., user="123456789012")

The functions raise :class:`~amibundle.errors.AmibundleError` subclasses for
everything a user can get wrong, and leave no partial output behind.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization

from amibundle import manifest as mf
from amibundle.crypto import (
    BundleKey,
    generate_identity,
    load_certificate,
    load_private_key,
    public_key_of,
    sign,
    unwrap_secret,
    verify_signature,
    wrap_secret,
    write_private_key,
)
from amibundle.ec2certs import find_ec2_certificate
from amibundle.errors import (
    AmibundleError,
    IntegrityError,
    ManifestError,
    OutputExistsError,
    StorageError,
    UsageError,
)
from amibundle.files import temp_output, write_atomically
from amibundle.parts import DirectoryPartSink, PartReader, PartSpec
from amibundle.pipeline import Codec, bundle_stream, read_all_parts, unbundle_stream
from amibundle.progress import Progress, Stage
from amibundle.sparse import SparseWriter, carve_zero_runs, data_extents
from amibundle.tarstream import Extent, Member, MemberInfo, stored_size
from amibundle.validate import (
    check_image_size,
    check_plain_name,
    detect_architecture,
    normalize_account_id,
    parse_block_device_mapping,
    split_product_codes,
)

__all__ = [
    "BundleResult",
    "KeygenResult",
    "ManifestReport",
    "UnbundleResult",
    "VerifyReport",
    "bundle_image",
    "inspect_manifest",
    "keygen",
    "parse_manifest",
    "read_manifest",
    "unbundle",
    "verify_bundle",
]

log = logging.getLogger("amibundle")

_PART_NAME = re.compile(r"\.part\.[0-9]+")


class JsonRecord:
    """A result record (a dataclass) that turns into JSON-ready data."""

    def to_dict(self) -> dict[str, Any]:
        return _json_object(asdict(self))  # type: ignore[call-overload]


def _json_object(fields: dict[str, Any]) -> dict[str, Any]:
    """A record's fields with paths as strings, ready for ``json.dump``."""
    result: dict[str, Any] = _jsonable(fields)
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class BundleResult(JsonRecord):
    """What :func:`bundle_image` made."""

    manifest_path: Path
    part_paths: tuple[Path, ...]
    name: str
    image_size: int
    data_size: int  # image bytes actually read (holes and zero runs skipped)
    tar_size: int
    bundled_size: int
    digest: str
    compression: str
    ec2_certificate: Path
    seconds: float


# --- bundling ------------------------------------------------------------------


def _stat_image(image: Path) -> os.stat_result:
    try:
        st = image.stat()  # follows symlinks, like the classic tar -h
    except FileNotFoundError:
        raise UsageError(f"image {image} does not exist") from None
    except OSError as err:
        raise StorageError(f"cannot read image {image}: {err.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"image {image} is not a regular file")
    return st


def _open_image(image: Path) -> int:
    try:
        return os.open(image, os.O_RDONLY)
    except OSError as err:
        raise StorageError(f"cannot read image {image}: {err.strerror}") from None


def _check_destination(destination: Path) -> None:
    if not destination.is_dir():
        raise UsageError(f"destination {destination} is not an existing directory")


def _existing_bundle_files(destination: Path, prefix: str) -> list[Path]:
    found = []
    manifest_path = destination / f"{prefix}.manifest.xml"
    if manifest_path.exists():
        found.append(manifest_path)
    for entry in os.scandir(destination):
        name = entry.name
        if name.startswith(prefix) and _PART_NAME.fullmatch(name[len(prefix) :]):
            found.append(destination / name)
    return sorted(found)


def _member_for(fd: int, st: os.stat_result, name: str) -> MemberInfo:
    extents = carve_zero_runs(fd, data_extents(fd, st.st_size))
    dense = st.st_size == 0 or extents == [Extent(0, st.st_size)]
    return MemberInfo(
        name=name,
        size=st.st_size,
        mode=stat.S_IMODE(st.st_mode),
        mtime=int(st.st_mtime),
        extents=None if dense else tuple(extents),
    )


def _check_image_type(image_type: str, kernel_name: str | None) -> None:
    if image_type not in mf.IMAGE_TYPES:
        raise UsageError(
            f"--image-type must be one of {', '.join(mf.IMAGE_TYPES)}, not {image_type!r}"
        )
    if image_type == "kernel" and not kernel_name:
        raise UsageError("a kernel image needs --kernel-name")
    if image_type != "kernel" and kernel_name:
        raise UsageError("--kernel-name is only for --image-type kernel")


def bundle_image(
    image: Path,
    *,
    cert: Path,
    private_key: Path,
    user: str,
    destination: Path = Path("/tmp"),
    prefix: str | None = None,
    ec2_cert: Path | None = None,
    region: str | None = None,
    arch: str | None = None,
    kernel_id: str | None = None,
    ramdisk_id: str | None = None,
    product_codes: Iterable[str] = (),
    block_device_mapping: Iterable[str] | Mapping[str, str] = (),
    ancestry: Sequence[str] = (),
    image_type: str = "machine",
    kernel_name: str | None = None,
    size_checks: bool = True,
    part_size: int = mf.DEFAULT_PART_SIZE,
    codec: Codec | None = None,
    force: bool = False,
    progress: Progress | None = None,
    randbytes: Callable[[int], bytes] = os.urandom,
) -> BundleResult:
    """Bundles an image file into ``destination``: parts and a signed manifest.

    Everything is checked before the image is read; the parts are written
    under temporary names and appear, followed by the manifest, only when the
    whole bundle is complete.
    """
    started = time.monotonic()
    account = normalize_account_id(user)
    name = check_plain_name(prefix if prefix is not None else image.name, "--prefix")
    _check_image_type(image_type, kernel_name)
    if part_size < 1:
        raise UsageError(f"--part-size must be positive, not {part_size}")
    mappings = parse_block_device_mapping(block_device_mapping)
    codes = split_product_codes(product_codes)
    st = _stat_image(image)
    check_image_size(st.st_size, size_checks=size_checks)
    _check_destination(destination)
    if not force and (clash := _existing_bundle_files(destination, name)):
        raise OutputExistsError(f"{clash[0]} already exists; use --force to replace the bundle")
    user_public = public_key_of(load_certificate(cert), cert)
    signer = load_private_key(private_key)
    ec2_lookup = find_ec2_certificate(ec2_cert, region=region)
    ec2_public = public_key_of(load_certificate(ec2_lookup.path), ec2_lookup.path)

    key = BundleKey.generate(randbytes)
    fd = _open_image(image)
    sink = DirectoryPartSink(destination, name, overwrite=force)
    try:
        member = _member_for(fd, st, name)
        stream = bundle_stream(
            fd, member, key, sink, part_size=part_size, codec=codec, progress=progress
        )
        filenames = mf.part_filenames(name, len(stream.parts))
        unsigned = mf.Manifest(
            name=name,
            user=account,
            digest=stream.tar_sha1,
            size=st.st_size,
            bundled_size=stream.bundled_size,
            ec2_encrypted_key=wrap_secret(ec2_public, key.key),
            user_encrypted_key=wrap_secret(user_public, key.key),
            ec2_encrypted_iv=wrap_secret(ec2_public, key.iv),
            user_encrypted_iv=wrap_secret(user_public, key.iv),
            parts=tuple(mf.PartEntry(r.index, filenames[r.index], r.sha1) for r in stream.parts),
            architecture=arch or detect_architecture(),
            block_device_mapping=mappings,
            kernel_id=kernel_id or None,
            ramdisk_id=ramdisk_id or None,
            product_codes=codes,
            image_type=image_type,
            kernel_name=kernel_name,
            ancestry=tuple(ancestry),
        )
        signed = replace(unsigned, signature=sign(signer, mf.signed_sections(unsigned)))
        manifest_bytes = mf.render(signed)
        if force:
            _remove_stale_parts(destination, name, keep=set(filenames))
        part_paths = sink.commit(filenames)
    except BaseException:
        sink.abort()
        raise
    finally:
        os.close(fd)
    manifest_path = destination / f"{name}.manifest.xml"
    # The manifest comes last: a bundle without one cannot be registered half-made.
    write_atomically(manifest_path, manifest_bytes, overwrite=force)
    return BundleResult(
        manifest_path=manifest_path,
        part_paths=tuple(part_paths),
        name=name,
        image_size=st.st_size,
        data_size=stored_size(member),
        tar_size=stream.tar_size,
        bundled_size=stream.bundled_size,
        digest=stream.tar_sha1,
        compression=(codec or Codec()).compression.value,
        ec2_certificate=ec2_lookup.path,
        seconds=time.monotonic() - started,
    )


def _remove_stale_parts(destination: Path, prefix: str, keep: set[str]) -> None:
    """With --force, parts of an earlier bundle of the same name that the new
    one does not overwrite would linger; remove them."""
    for path in _existing_bundle_files(destination, prefix):
        if path.name not in keep and path.name != f"{prefix}.manifest.xml":
            path.unlink(missing_ok=True)


# --- reading manifests -----------------------------------------------------------


def read_manifest(path: Path) -> mf.ParsedManifest:
    """Reads and parses a manifest file (size-capped, hardened parser)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(mf.MAX_MANIFEST_SIZE + 1)
    except FileNotFoundError:
        raise UsageError(f"manifest {path} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"manifest {path} is a directory, not a file") from None
    except OSError as err:
        raise StorageError(f"cannot read manifest {path}: {err.strerror}") from None
    if len(data) > mf.MAX_MANIFEST_SIZE:
        raise ManifestError(f"manifest {path} is larger than {mf.MAX_MANIFEST_SIZE >> 20} MiB")
    return parse_manifest(data, path.name)


def parse_manifest(data: bytes, source: str) -> mf.ParsedManifest:
    """Parses manifest bytes; errors name ``source`` (a file or an S3 URL)."""
    try:
        return mf.parse(data)
    except ManifestError as err:
        raise ManifestError(f"{source}: {err}", hint=err.hint) from None


def _check_signature(parsed: mf.ParsedManifest, cert: Path) -> None:
    signature = parsed.manifest.signature
    if not signature:
        raise IntegrityError("the manifest carries no signature")
    verify_signature(public_key_of(load_certificate(cert), cert), parsed.signed_data, signature)


def _bundle_key(parsed: mf.ParsedManifest, private_key: Path) -> BundleKey:
    signer = load_private_key(private_key)
    m = parsed.manifest
    return BundleKey(
        key=unwrap_secret(signer, m.user_encrypted_key, "user_encrypted_key"),
        iv=unwrap_secret(signer, m.user_encrypted_iv, "user_encrypted_iv"),
    )


def _part_specs(parsed: mf.ParsedManifest, source: Path) -> list[PartSpec]:
    # Part file names come from the manifest (validated as plain names there).
    return [PartSpec(source / p.filename, p.digest) for p in parsed.manifest.parts]


def _check_tar_result(manifest: mf.Manifest, tar_sha1: str, member: Member) -> None:
    if tar_sha1 != manifest.digest:
        raise IntegrityError(
            f"image digest mismatch: the manifest says {manifest.digest}, "
            f"the bundle's contents give {tar_sha1}"
        )
    if member.size != manifest.size:
        raise IntegrityError(
            f"the image in the bundle is {member.size} bytes but the manifest says {manifest.size}"
        )


# --- unbundling ------------------------------------------------------------------


@dataclass(frozen=True)
class UnbundleResult(JsonRecord):
    image_path: Path
    size: int
    digest: str
    compression: str
    parts: int
    signature_checked: bool
    seconds: float


def unbundle(
    manifest: Path,
    *,
    private_key: Path,
    source: Path | None = None,
    destination: Path = Path(),
    cert: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> UnbundleResult:
    """Recreates the image of a local bundle in ``destination``.

    Every part's size and SHA-1 is checked as it streams, the image digest at
    the end, and the signature first when ``cert`` is given. The image is
    written sparse under a temporary name and renamed only when all checks
    passed; on any failure nothing is left behind.
    """
    started = time.monotonic()
    parsed = read_manifest(manifest)
    m = parsed.manifest
    if cert is not None:
        _check_signature(parsed, cert)
    source = manifest.parent if source is None else source
    _check_destination(destination)
    final = destination / check_plain_name(m.name, "the manifest's image name")
    if final.exists() and not force:
        raise OutputExistsError(f"{final} already exists; use --force to replace it")
    key = _bundle_key(parsed, private_key)
    reader = PartReader(_part_specs(parsed, source), m.bundled_size)
    with temp_output(final) as out:

        def open_output(member: Member) -> SparseWriter:
            if member.name != m.name:
                log.warning(
                    "the image inside the bundle is named %r; writing it as %r", member.name, m.name
                )
            return SparseWriter(out.fd, str(final))

        try:
            result = unbundle_stream(reader, key, open_output, progress=progress)
        finally:
            reader.close()
        _check_tar_result(m, result.tar_sha1, result.member)
        # Modes like setuid make no sense on an image file; keep permission bits.
        out.publish(overwrite=force, mode=result.member.mode & 0o777, mtime=result.member.mtime)
    return UnbundleResult(
        image_path=final,
        size=result.member.size,
        digest=result.tar_sha1,
        compression=result.compression.value,
        parts=len(m.parts),
        signature_checked=cert is not None,
        seconds=time.monotonic() - started,
    )


# --- verifying -------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyReport:
    """Every problem :func:`verify_bundle` found; ``ok`` when there are none."""

    manifest_path: Path
    problems: tuple[str, ...]
    checks: tuple[str, ...]
    parts: int
    image_size: int | None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return _json_object({**asdict(self), "ok": self.ok})


class _Discard:
    """A member writer that only counts (verify writes nothing)."""

    def write(self, offset: int, data: memoryview) -> None:
        pass

    def finish(self, size: int) -> None:
        pass


def _part_size_problems(specs: Sequence[PartSpec], bundled_size: int) -> list[str]:
    problems: list[str] = []
    sizes: list[int] = []
    for spec in specs:
        try:
            sizes.append(spec.path.stat().st_size)
        except FileNotFoundError:
            problems.append(f"part {spec.path.name} is missing from {spec.path.parent}")
        except OSError as err:
            problems.append(f"cannot read part {spec.path}: {err.strerror}")
    if problems:
        return problems
    for spec, size in zip(specs[:-1], sizes[:-1], strict=True):
        if size != sizes[0]:
            problems.append(f"part {spec.path.name} is {size} bytes; the first part is {sizes[0]}")
    if sizes and not 0 < sizes[-1] <= sizes[0]:
        problems.append(f"the last part {specs[-1].path.name} has a wrong size ({sizes[-1]} bytes)")
    if sum(sizes) != bundled_size:
        problems.append(
            f"the parts hold {sum(sizes)} bytes but the manifest says bundled_size {bundled_size}"
        )
    return problems


def _digest_problems(specs: Sequence[PartSpec], bundled_size: int) -> list[str]:
    """Checks the SHA-1 of every part, each on its own, collecting problems."""
    problems = []
    for spec in specs:
        reader = PartReader([spec], bundled_size=None)
        try:
            read_all_parts(reader)
        except IntegrityError as err:
            problems.append(str(err))
        finally:
            reader.close()
    return problems


def verify_bundle(
    manifest: Path,
    *,
    cert: Path | None = None,
    private_key: Path | None = None,
    source: Path | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Checks a local bundle offline and reports every problem found.

    Always: the manifest is well-formed, every part is present with a
    consistent size and the right SHA-1, and ``bundled_size`` adds up. With
    ``cert``: the signature. With ``private_key``: the bundle is decrypted,
    decompressed and its tar stream read end to end, and the image digest
    checked; nothing is written.
    """
    checks: list[str] = ["manifest"]
    problems: list[str] = []
    try:
        parsed = read_manifest(manifest)
    except AmibundleError as err:
        return VerifyReport(manifest, (str(err),), tuple(checks), 0, None)
    m = parsed.manifest
    source = manifest.parent if source is None else source
    if cert is not None:
        checks.append("signature")
        try:
            _check_signature(parsed, cert)
        except AmibundleError as err:
            problems.append(str(err))
    specs = _part_specs(parsed, source)
    checks += ["part sizes", "part digests"]
    problems += _part_size_problems(specs, m.bundled_size)
    first_unread = 0
    if private_key is not None:
        checks += ["decryption", "tar stream", "image digest"]
        reader = PartReader(specs, m.bundled_size)
        try:
            key = _bundle_key(parsed, private_key)
            result = unbundle_stream(
                reader, key, lambda member: _Discard(), progress=progress, stage=Stage.VERIFY
            )
            _check_tar_result(m, result.tar_sha1, result.member)
        except AmibundleError as err:
            problems.append(str(err))
        finally:
            reader.close()
        first_unread = reader.checked
    problems += _digest_problems(specs[first_unread:], m.bundled_size)
    unique = tuple(dict.fromkeys(problems))  # a missing part is found by two checks
    return VerifyReport(manifest, unique, tuple(checks), len(m.parts), m.size)


# --- inspecting ------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestReport:
    """What a manifest says, plus the signature check when a certificate is given."""

    manifest_path: Path
    manifest: mf.Manifest
    signature_valid: bool | None  # None: not checked
    signature_problem: str | None

    def to_dict(self) -> dict[str, Any]:
        fields = asdict(self.manifest)
        fields["parts"] = [asdict(p) for p in self.manifest.parts]
        return _json_object(
            {
                "manifest_path": self.manifest_path,
                **fields,
                "signature_valid": self.signature_valid,
                "signature_problem": self.signature_problem,
            }
        )


def inspect_manifest(manifest: Path, *, cert: Path | None = None) -> ManifestReport:
    """Parses a manifest; with ``cert`` also checks its signature (a bad
    signature is reported, not raised)."""
    parsed = read_manifest(manifest)
    valid: bool | None = None
    problem = None
    if cert is not None:
        try:
            _check_signature(parsed, cert)
            valid = True
        except IntegrityError as err:
            valid, problem = False, str(err)
    return ManifestReport(manifest, parsed.manifest, valid, problem)


# --- keys --------------------------------------------------------------------------


@dataclass(frozen=True)
class KeygenResult(JsonRecord):
    private_key: Path
    certificate: Path
    common_name: str
    sha1_fingerprint: str


def keygen(
    private_key: Path,
    certificate: Path,
    *,
    common_name: str = "amibundle",
    days: int = 3650,
    force: bool = False,
) -> KeygenResult:
    """Writes a new 2048-bit RSA private key (mode 0600) and a self-signed
    X.509 certificate for it."""
    if days < 1:
        raise UsageError(f"--days must be at least 1, not {days}")
    if not force:
        for path in (private_key, certificate):
            if path.exists():
                raise OutputExistsError(f"{path} already exists; use --force to replace it")
    key, cert = generate_identity(common_name, days=days)
    write_private_key(private_key, key, overwrite=force)
    write_atomically(certificate, cert.public_bytes(serialization.Encoding.PEM), overwrite=force)
    fingerprint = cert.fingerprint(hashes.SHA1()).hex(":").upper()
    return KeygenResult(private_key, certificate, common_name, fingerprint)
