"""The public surface of the library: the names ``amibundle`` exports, paths
taken as ``str`` or any ``os.PathLike``, wrong argument types refused with
a one-line AmibundleError naming the parameter, and commands that import only
what they need."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import amibundle
from amibundle import BundleKeys, BundleMetadata, S3Settings
from tests.support.bundling import keys_for, metadata_for
from tests.support.common import REPO, Identity, sample_image, tree

PYTHON = Path(sys.executable)


class FsPath:
    """An os.PathLike that is not a pathlib.Path (as other libraries define them)."""

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)

    def __fspath__(self) -> str:
        return self._path


# --- names -------------------------------------------------------------------------------


def test_every_exported_name_resolves() -> None:
    assert amibundle.__all__ == sorted(set(amibundle.__all__))
    for name in amibundle.__all__:
        assert getattr(amibundle, name) is not None, name
    assert set(dir(amibundle)) == set(amibundle.__all__)


def test_exported_names_come_from_where_they_are_defined() -> None:
    for name in amibundle.__all__:
        if name == "__version__":
            continue
        value = getattr(amibundle, name)
        module = importlib.import_module(value.__module__)
        assert getattr(module, name) is value, name


def test_the_command_functions_import_by_name() -> None:
    from amibundle import (
        bundle_image,
        bundle_volume,
        delete_bundle,
        download_bundle,
        unbundle,
        upload_bundle,
        verify_bundle,
    )

    for function in (bundle_image, unbundle, verify_bundle, upload_bundle, download_bundle,
                     delete_bundle, bundle_volume):  # fmt: skip
        assert callable(function)


def test_the_s3_package_offers_the_same_functions() -> None:
    import amibundle.s3

    assert amibundle.s3.upload_bundle is amibundle.upload_bundle
    assert amibundle.s3.download_bundle is amibundle.download_bundle
    assert amibundle.s3.delete_bundle is amibundle.delete_bundle
    assert amibundle.s3.S3Settings is amibundle.S3Settings
    assert amibundle.s3.BucketRef is amibundle.BucketRef
    for name in amibundle.s3.__all__:
        assert getattr(amibundle.s3, name) is not None, name


def test_version_is_the_installed_distributions() -> None:
    assert amibundle.__version__ == importlib.metadata.version("amibundle")
    assert amibundle.__version__ != "0+unknown"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'bundle_images'"):
        amibundle.bundle_images  # noqa: B018
    with pytest.raises(ImportError):
        from amibundle import no_such_function  # noqa: F401


# --- paths as str and as os.PathLike -------------------------------------------------------


@dataclass(frozen=True)
class Made:
    folder: Path
    image: Path
    manifest: Path


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, user_id: Identity, ec2_id: Identity) -> Made:
    """A bundle made by bundle_image called with str paths only. (Module
    scope runs before the suite's autouse EC2 certificate: name it.)"""
    folder = tmp_path_factory.mktemp("api")
    image = sample_image(folder / "disk.img", 2)
    out = folder / "bundle"
    out.mkdir()
    result = amibundle.bundle_image(
        str(image),
        metadata=metadata_for(),
        keys=keys_for(user_id, ec2_cert=ec2_id.cert),
        destination=str(out),
        part_size=300_000,
    )
    assert result.manifest_path == out / "disk.img.manifest.xml"
    assert all(isinstance(p, Path) for p in (result.manifest_path, *result.part_paths))
    return Made(folder, image, result.manifest_path)


PATH_KINDS: dict[str, Callable[[Path], Any]] = {
    "str": str,
    "Path": Path,
    "PathLike": FsPath,
}


@pytest.mark.parametrize("kind", sorted(PATH_KINDS))
def test_bundle_image_takes_any_path(
    kind: str, tmp_path: Path, made: Made, user_id: Identity
) -> None:
    as_kind = PATH_KINDS[kind]
    result = amibundle.bundle_image(
        as_kind(made.image),
        metadata=metadata_for(),
        keys=keys_for(user_id),
        destination=as_kind(tmp_path),
        prefix="copy",
    )
    assert result.manifest_path == tmp_path / "copy.manifest.xml"
    assert result.manifest_path.is_file() and result.image_size == made.image.stat().st_size


@pytest.mark.parametrize("kind", sorted(PATH_KINDS))
def test_reading_functions_take_any_path(
    kind: str, tmp_path: Path, made: Made, user_id: Identity
) -> None:
    as_kind = PATH_KINDS[kind]
    manifest, cert, key = as_kind(made.manifest), as_kind(user_id.cert), as_kind(user_id.key)
    source = as_kind(made.manifest.parent)

    assert amibundle.read_manifest(manifest).manifest.name == "disk.img"
    report = amibundle.inspect_manifest(manifest, cert=cert)
    assert (report.manifest_path, report.signature_valid) == (made.manifest, True)
    verified = amibundle.verify_bundle(manifest, cert=cert, private_key=key, source=source)
    assert verified.ok, verified.problems
    result = amibundle.unbundle(
        manifest, private_key=key, source=source, destination=as_kind(tmp_path), cert=cert
    )
    assert result.image_path == tmp_path / "disk.img"
    assert result.image_path.read_bytes() == made.image.read_bytes()
    assert result.signature_checked


@pytest.mark.parametrize("kind", sorted(PATH_KINDS))
def test_keys_take_any_path(kind: str, tmp_path: Path, ec2_id: Identity) -> None:
    as_kind = PATH_KINDS[kind]
    made = amibundle.keygen(as_kind(tmp_path / "pk.pem"), as_kind(tmp_path / "cert.pem"))
    assert (made.private_key, made.certificate) == (tmp_path / "pk.pem", tmp_path / "cert.pem")
    keys = BundleKeys.load(
        cert=as_kind(made.certificate),
        private_key=as_kind(made.private_key),
        ec2_cert=as_kind(ec2_id.cert),
    )
    assert (keys.certificate, keys.ec2_certificate) == (tmp_path / "cert.pem", ec2_id.cert)


@pytest.mark.parametrize("kind", ["str", "PathLike"])
def test_s3_functions_take_any_path(kind: str, tmp_path: Path) -> None:
    """Each reads or checks its local path before it reaches S3: a missing
    file, named in the error, shows the path was taken as given."""
    as_kind = PATH_KINDS[kind]
    settings = S3Settings(endpoint_url="http://127.0.0.1:9", attempts=1)
    missing = tmp_path / "gone" / "disk.img.manifest.xml"
    with pytest.raises(amibundle.UsageError, match=f"manifest= {missing} does not exist"):
        amibundle.upload_bundle(as_kind(missing), "bucket", settings=settings)
    with pytest.raises(amibundle.UsageError, match=f"manifest= {missing} does not exist"):
        amibundle.delete_bundle("bucket", settings=settings, manifest=as_kind(missing))
    folder = tmp_path / "gone"
    with pytest.raises(amibundle.UsageError, match=f"directory= {folder} is not an existing"):
        amibundle.download_bundle(
            "bucket", settings=settings, manifest_name="a.manifest.xml", directory=as_kind(folder)
        )


@pytest.mark.parametrize("kind", ["str", "PathLike"])
def test_bundle_volume_takes_any_path(kind: str, tmp_path: Path) -> None:
    as_kind = PATH_KINDS[kind]
    with pytest.raises(amibundle.UsageError, match=f"volume= {tmp_path / 'vol'} does not exist"):
        amibundle.bundle_volume(as_kind(tmp_path / "vol"), metadata=None, keys=None)
    (tmp_path / "vol").mkdir()
    with pytest.raises(amibundle.UsageError, match=r"destination= .*out is not an existing"):
        amibundle.bundle_volume(
            as_kind(tmp_path / "vol"),
            metadata=None,
            keys=None,
            destination=as_kind(tmp_path / "out"),
        )


# --- wrong types ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    folder: Path
    image: Path
    manifest: Path
    metadata: BundleMetadata
    keys: BundleKeys
    key: Path


@pytest.fixture(scope="module")
def loaded_keys(user_id: Identity, ec2_id: Identity) -> BundleKeys:
    return keys_for(user_id, ec2_cert=ec2_id.cert)  # loaded once: RSA keys take a while


@pytest.fixture
def ctx(tmp_path: Path, made: Made, user_id: Identity, loaded_keys: BundleKeys) -> Context:
    return Context(tmp_path, made.image, made.manifest, metadata_for(), loaded_keys, user_id.key)


S3 = S3Settings(endpoint_url="http://127.0.0.1:9", attempts=1)


def bundle_with(c: Context, **changes: Any) -> Any:
    arguments: dict[str, Any] = {
        "metadata": c.metadata, "keys": c.keys, "destination": str(c.folder)
    }  # fmt: skip
    image = changes.pop("image", str(c.image))
    return amibundle.bundle_image(image, **(arguments | changes))


def unbundle_with(c: Context, **changes: Any) -> Any:
    manifest = changes.pop("manifest", str(c.manifest))
    arguments = {"private_key": str(c.key), "destination": str(c.folder)} | changes
    return amibundle.unbundle(manifest, **arguments)


def upload_with(c: Context, **changes: Any) -> Any:
    manifest = changes.pop("manifest", str(c.manifest))
    bucket = changes.pop("bucket", "bucket")
    return amibundle.upload_bundle(manifest, bucket, **({"settings": S3} | changes))


def download_with(c: Context, **changes: Any) -> Any:
    bucket = changes.pop("bucket", "bucket")
    arguments = {"settings": S3, "manifest_name": "a.manifest.xml", "directory": str(c.folder)}
    return amibundle.download_bundle(bucket, **(arguments | changes))


def delete_with(c: Context, **changes: Any) -> Any:
    bucket = changes.pop("bucket", "bucket")
    return amibundle.delete_bundle(bucket, **({"settings": S3, "prefix": "a"} | changes))


def volume_with(c: Context, **changes: Any) -> Any:
    volume = changes.pop("volume", str(c.folder))
    arguments = {"metadata": None, "keys": None, "destination": str(c.folder)} | changes
    return amibundle.bundle_volume(volume, **arguments)


BUG = "PRODUCT BUG: a wrong type is not checked: "
WrongCall = Callable[[Context], Any]
WRONG_TYPES: list[Any] = [
    # (call, the parameter the message must name)
    pytest.param(lambda c: bundle_with(c, image=123), "image", id="bundle_image-image=123"),
    pytest.param(lambda c: bundle_with(c, metadata=None), "metadata", id="bundle_image-metadata"),
    pytest.param(lambda c: bundle_with(c, keys="x"), "keys", id="bundle_image-keys"),
    pytest.param(
        lambda c: bundle_with(c, destination=b"bytes"), "destination", id="bundle_image-dest=b"
    ),
    pytest.param(lambda c: bundle_with(c, prefix=5), "prefix", id="bundle_image-prefix"),
    pytest.param(lambda c: bundle_with(c, part_size="1"), "part_size", id="bundle_image-part"),
    pytest.param(lambda c: bundle_with(c, codec="gzip"), "codec", id="bundle_image-codec"),
    pytest.param(
        lambda c: bundle_with(c, progress=5),
        "progress",
        id="bundle_image-progress",
    ),
    pytest.param(lambda c: unbundle_with(c, manifest=None), "manifest", id="unbundle-manifest"),
    pytest.param(lambda c: unbundle_with(c, private_key=5), "private_key", id="unbundle-key"),
    pytest.param(
        lambda c: unbundle_with(c, destination=b"x"), "destination", id="unbundle-destination"
    ),
    pytest.param(lambda c: unbundle_with(c, source=5), "source", id="unbundle-source"),
    pytest.param(lambda c: unbundle_with(c, cert=5.0), "cert", id="unbundle-cert"),
    pytest.param(lambda c: amibundle.verify_bundle(5), "manifest", id="verify-manifest"),
    pytest.param(
        lambda c: amibundle.verify_bundle(str(c.manifest), private_key=5),
        "private_key",
        id="verify-key",
    ),
    pytest.param(
        lambda c: amibundle.verify_bundle(str(c.manifest), source=b"x"), "source", id="verify-src"
    ),
    pytest.param(lambda c: amibundle.inspect_manifest([]), "manifest", id="inspect-manifest"),
    pytest.param(
        lambda c: amibundle.inspect_manifest(str(c.manifest), cert=5), "cert", id="inspect-cert"
    ),
    pytest.param(lambda c: amibundle.read_manifest(5), "manifest", id="read_manifest"),
    pytest.param(
        lambda c: amibundle.keygen(5, str(c.folder / "c.pem")), "private_key", id="keygen-key"
    ),
    pytest.param(
        lambda c: amibundle.keygen(str(c.folder / "k.pem"), None), "certificate", id="keygen-cert"
    ),
    pytest.param(
        lambda c: amibundle.keygen(str(c.folder / "k"), str(c.folder / "c"), days="9"),
        "days",
        id="keygen-days",
    ),
    pytest.param(
        lambda c: amibundle.keygen(str(c.folder / "k"), str(c.folder / "c"), common_name=5),
        "common_name",
        id="keygen-common_name",
    ),
    pytest.param(lambda c: BundleKeys.load(cert=5, private_key=str(c.key)), "cert", id="keys-cert"),
    pytest.param(
        lambda c: BundleKeys.load(cert=str(c.key), private_key=None),
        "private_key",
        id="keys-private_key",
    ),
    pytest.param(
        lambda c: BundleKeys.load(cert=str(c.key), private_key=str(c.key), ec2_cert=5),
        "ec2_cert",
        id="keys-ec2_cert",
    ),
    pytest.param(lambda c: BundleMetadata.create(user=5), "user", id="metadata-user"),
    pytest.param(lambda c: upload_with(c, manifest=1), "manifest", id="upload-manifest"),
    pytest.param(lambda c: upload_with(c, bucket=42), "bucket", id="upload-bucket=42"),
    pytest.param(lambda c: upload_with(c, settings=None), "settings", id="upload-settings"),
    pytest.param(lambda c: upload_with(c, directory=b"x"), "directory", id="upload-directory"),
    pytest.param(lambda c: upload_with(c, acl=5), "acl", id="upload-acl"),
    pytest.param(lambda c: upload_with(c, first_part="0"), "first_part", id="upload-first_part"),
    pytest.param(lambda c: download_with(c, bucket=None), "bucket", id="download-bucket"),
    pytest.param(lambda c: download_with(c, settings="x"), "settings", id="download-settings"),
    pytest.param(
        lambda c: download_with(c, manifest_name=None), "manifest_name", id="download-name"
    ),
    pytest.param(lambda c: download_with(c, directory=b"x"), "directory", id="download-directory"),
    pytest.param(lambda c: delete_with(c, bucket=3.5), "bucket", id="delete-bucket"),
    pytest.param(lambda c: delete_with(c, settings=None), "settings", id="delete-settings"),
    pytest.param(
        lambda c: delete_with(c, prefix=None, manifest=1), "manifest", id="delete-manifest"
    ),
    pytest.param(lambda c: delete_with(c, prefix=5), "prefix", id="delete-prefix"),
    pytest.param(lambda c: volume_with(c, volume=5), "volume", id="volume-volume"),
    pytest.param(
        lambda c: volume_with(c, destination=b"x"), "destination", id="volume-destination"
    ),
    pytest.param(
        lambda c: volume_with(c, metadata="x", keys=c.keys), "metadata", id="volume-metadata"
    ),
    pytest.param(lambda c: volume_with(c, metadata=c.metadata, keys="x"), "keys", id="volume-keys"),
    pytest.param(
        lambda c: amibundle.parse_bucket(5),
        "bucket",
        id="parse_bucket",
    ),
    pytest.param(lambda c: S3Settings(jobs="8"), "jobs", id="S3Settings-jobs"),
    pytest.param(lambda c: S3Settings(attempts=None), "attempts", id="S3Settings-attempts"),
    *[
        pytest.param(
            lambda c, field=field, value=value: S3Settings(**{field: value}),
            field,
            id=f"S3Settings-{field}",
        )
        for field, value in (("region", 5), ("endpoint_url", 5), ("access_key", 5))
    ],
]


@pytest.mark.parametrize(("call", "param"), WRONG_TYPES)
def test_a_wrong_type_is_a_one_line_error_naming_the_parameter(
    call: WrongCall, param: str, ctx: Context
) -> None:
    before = tree(ctx.folder)
    with pytest.raises(amibundle.AmibundleError) as caught:
        call(ctx)
    text = str(caught.value)
    assert "\n" not in text
    assert f"{param}=" in text, text
    assert caught.value.param == param
    assert tree(ctx.folder) == before  # nothing written


# --- what a command imports ----------------------------------------------------------------


def imported_modules(*argv: str) -> set[str]:
    """The top-level packages ``python -m amibundle <argv>`` imports."""
    done = subprocess.run(
        [str(PYTHON), "-X", "importtime", "-m", "amibundle", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:")
    modules = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                modules.add(name.split(".")[0])
    assert "amibundle" in modules  # the output was parsed
    return modules


COMPRESSORS = {"isal", "zlib_ng", "zstandard"}
AWS = {"boto3", "botocore", "s3transfer"}


@pytest.mark.parametrize("command", ["upload", "download", "delete"])
def test_s3_commands_do_not_load_the_compressors(command: str) -> None:
    assert imported_modules(command, "--help") & COMPRESSORS == set()


@pytest.mark.parametrize("command", ["bundle-image", "unbundle"])
def test_local_commands_do_not_load_boto3(command: str) -> None:
    assert imported_modules(command, "--help") & AWS == set()
