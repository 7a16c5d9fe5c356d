"""Bundling without an X.509 certificate: without -c/-k a bundle gets its own key
and certificate, written beside it, and the EC2 copy goes to the shipped (or
given) EC2 certificate. Runs the real command line in-process."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

import amibundle
from amibundle import folder
from amibundle.cli import main
from amibundle.crypto import load_private_key, unwrap_secret
from amibundle.ec2certs import SHIPPED_SOURCE, find_ec2_certificate
from amibundle.errors import StorageError
from amibundle.progress import Stage
from tests.support.common import CLASSIC, Identity, sample_image, tree

BASE = ["-u", "123456789012", "-r", "x86_64"]


@pytest.fixture
def no_test_ec2_cert(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a fresh install: no EC2 certificate but the shipped ones."""
    monkeypatch.delenv("AMIBUNDLE_EC2_CERT")
    monkeypatch.setattr("amibundle.ec2certs._AMAZON_LINUX_DIR", Path("/nonexistent"))


def test_a_bundle_without_certificate_gets_its_own_key(
    tmp_path: Path, no_test_ec2_cert: None, capsys: pytest.CaptureFixture[str]
) -> None:
    image = sample_image(tmp_path / "root.img", 2)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["bundle-image", "-i", str(image), *BASE, "-d", str(out), "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # stdout is only the JSON
    key, cert = out / "root.img.key.pem", out / "root.img.cert.pem"
    assert (result["generated_private_key"], result["generated_certificate"]) == (
        str(key),
        str(cert),
    )
    for path in (key, cert):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    notes = captured.err.splitlines()
    assert len(notes) == 1 and notes[0].startswith("note: no -c/-k given")
    assert str(key) in notes[0] and str(cert) in notes[0]
    # Wrapped for the shipped cert-ec2.pem (RSA-1024: 128-byte copies, the user's 256).
    shipped = find_ec2_certificate(env={})
    assert (shipped.path.name, shipped.source) == ("cert-ec2.pem", SHIPPED_SOURCE)
    assert result["ec2_certificate"] == str(shipped.path)
    manifest = amibundle.read_manifest(result["manifest_path"]).manifest
    assert len(manifest.ec2_encrypted_key) == 256 and len(manifest.user_encrypted_key) == 512
    # The written key and certificate verify, decrypt and check the whole bundle.
    assert main(["verify", "-m", result["manifest_path"], "-c", str(cert), "-k", str(key)]) == 0
    assert "OK: the bundle is intact" in capsys.readouterr().out


def test_text_output_names_the_key_files(
    tmp_path: Path, no_test_ec2_cert: None, capsys: pytest.CaptureFixture[str]
) -> None:
    image = sample_image(tmp_path / "root.img", 1)
    assert main(["bundle-image", "-i", str(image), *BASE, "-d", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("note: no -c/-k given: this bundle gets its own new key")
    assert out[-1] == (
        f"New key {tmp_path}/root.img.key.pem and certificate {tmp_path}/root.img.cert.pem: "
        "keep the key, unbundling needs it"
    )
    # a second run refuses to replace them (or the bundle) before any work
    assert main(["bundle-image", "-i", str(image), *BASE, "-d", str(tmp_path), "-q"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_the_ec2_copy_unwraps_with_the_given_ec2_certificates_key(
    tmp_path: Path, no_test_ec2_cert: None
) -> None:
    if not CLASSIC.is_dir():
        pytest.skip("../shared is absent: no classic EC2 stand-in key")
    image = sample_image(tmp_path / "root.img", 1)
    ec2_cert = CLASSIC / "keys" / "ec2-cert.pem"
    argv = ["bundle-image", "-i", str(image), *BASE, "-d", str(tmp_path), "-q"]
    assert main([*argv, "--ec2cert", str(ec2_cert)]) == 0
    m = amibundle.read_manifest(tmp_path / "root.img.manifest.xml").manifest
    ec2_key = load_private_key(CLASSIC / "keys" / "ec2-pk.pem")
    user_key = load_private_key(tmp_path / "root.img.key.pem")
    for ec2_field, user_field in (
        ("ec2_encrypted_key", "user_encrypted_key"),
        ("ec2_encrypted_iv", "user_encrypted_iv"),
    ):
        assert unwrap_secret(ec2_key, getattr(m, ec2_field), ec2_field) == unwrap_secret(
            user_key, getattr(m, user_field), user_field
        )


@pytest.mark.parametrize(
    ("keys", "status", "message"),
    [
        (["-c", "{user.cert}"], 2, r"-c needs -k: .* or neither to make a new key"),
        (["-k", "{user.key}"], 2, r"-k needs -c"),
        (["-c", "{user.cert}", "-k", "{other.key}"], 1, r"--privatekey .* is not the key of"),
    ],
    ids=["only -c", "only -k", "key of another certificate"],
)
def test_keys_that_do_not_go_together_are_refused_first(
    keys: list[str],
    status: int,
    message: str,
    tmp_path: Path,
    user_id: Identity,
    other_id: Identity,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = sample_image(tmp_path / "root.img", 1)
    out = tmp_path / "out"
    out.mkdir()
    words = [word.format(user=user_id, other=other_id) for word in keys]
    assert main(["bundle-image", "-i", str(image), *BASE, "-d", str(out), *words]) == status
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1
    assert re.search(message, err), err
    assert tree(out) == []


def test_bundle_vol_without_certificate(
    tmp_path: Path, no_test_ec2_cert: None, capsys: pytest.CaptureFixture[str]
) -> None:
    tree_root = tmp_path / "rootfs"
    (tree_root / "etc").mkdir(parents=True)
    (tree_root / "etc" / "hostname").write_text("builder\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "image.key.pem").write_text("an old key")
    volume = ["bundle-vol", "-v", str(tree_root), "-s", "8", "--fs-type", "ext4"]
    argv = [*volume, "--no-inherit", "--builder", "rootless", *BASE, "-d", str(out), "-q"]
    # an old key file stops the run before anything is copied
    assert main(argv) == 1
    assert "image.key.pem already exists" in capsys.readouterr().err
    assert sorted(tree(out)) == ["image.key.pem"]
    (out / "image.key.pem").unlink()
    assert main(argv) == 0
    result = capsys.readouterr().out
    assert "New key" in result
    assert sorted(tree(out)) == [
        "image",
        "image.cert.pem",
        "image.key.pem",
        "image.manifest.xml",
        "image.part.0",
    ]
    report = amibundle.verify_bundle(
        out / "image.manifest.xml", cert=out / "image.cert.pem", private_key=out / "image.key.pem"
    )
    assert report.ok, report.problems


# --- the generated key is published with the bundle, all or nothing ---------------------


class _Watch:
    """A Progress that lists the destination while the image streams."""

    def __init__(self, folder: Path, interrupt: bool = False) -> None:
        self.folder = folder
        self.interrupt = interrupt
        self.seen: list[str] = []

    def start(self, stage: Stage, total: int | None) -> None:
        pass

    def advance(self, stage: Stage, nbytes: int) -> None:
        if stage is Stage.READ and not self.seen:
            self.seen = [path.name for path in self.folder.iterdir()]
            if self.interrupt:
                raise KeyboardInterrupt

    def finish(self, stage: Stage, error: BaseException | None = None) -> None:
        pass


def _bundle_with_new_key(
    image: Path, out: Path, *, force: bool = False, progress: object = None
) -> amibundle.BundleResult:
    keys = amibundle.BundleKeys.generate_for_bundle(out, image.name, force=force)
    return amibundle.bundle_image(
        image,
        metadata=amibundle.BundleMetadata.create(user="123456789012", arch="x86_64"),
        keys=keys,
        destination=out,
        part_size=1 << 20,
        force=force,
        progress=progress,
    )


def test_the_new_key_appears_with_the_bundle_and_not_before(tmp_path: Path) -> None:
    image = sample_image(tmp_path / "root.img", 3)
    out = tmp_path / "out"
    out.mkdir()
    watch = _Watch(out)
    result = _bundle_with_new_key(image, out, progress=watch)
    # While it streams, only this process's work folder is there.
    assert watch.seen and all(name.startswith(f".amibundle-{os.getpid()}-") for name in watch.seen)
    assert result.generated_private_key == out / "root.img.key.pem"
    assert sorted(tree(out)) == sorted(
        ["root.img.cert.pem", "root.img.key.pem", "root.img.manifest.xml"]
        + [path.name for path in result.part_paths]
    )
    for path in (out / "root.img.key.pem", out / "root.img.cert.pem"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_interrupted_bundle_leaves_no_new_key(tmp_path: Path) -> None:
    image = sample_image(tmp_path / "root.img", 3)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        _bundle_with_new_key(image, out, progress=_Watch(out, interrupt=True))
    assert tree(out) == []


def _fail_at_the_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last rename of a publish (the manifest's) fails: everything placed
    before it must be taken back."""
    rename = folder._rename

    def failing(source: Path, target: Path) -> None:
        if target.name.endswith(".manifest.xml") and source.parent.name.endswith(".bundle"):
            raise StorageError(f"cannot write {target}: No space left on device")
        rename(source, target)

    monkeypatch.setattr(folder, "_rename", failing)


def test_a_failed_publish_takes_the_new_key_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = sample_image(tmp_path / "root.img", 3)
    out = tmp_path / "out"
    out.mkdir()
    _fail_at_the_manifest(monkeypatch)
    with pytest.raises(StorageError, match="No space left"):
        _bundle_with_new_key(image, out)
    assert tree(out) == []


def test_a_failed_forced_publish_keeps_the_old_bundle_and_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = sample_image(tmp_path / "root.img", 3)
    out = tmp_path / "out"
    out.mkdir()
    _bundle_with_new_key(image, out)
    before = {name: (out / name).read_bytes() for name in tree(out)}
    assert "root.img.key.pem" in before
    _fail_at_the_manifest(monkeypatch)
    with pytest.raises(StorageError, match="No space left"):
        _bundle_with_new_key(image, out, force=True)
    assert {name: (out / name).read_bytes() for name in tree(out)} == before
    monkeypatch.undo()
    # Forced and successful: a new key replaces the old one, with its bundle.
    _bundle_with_new_key(image, out, force=True)
    assert (out / "root.img.key.pem").read_bytes() != before["root.img.key.pem"]
    report = amibundle.verify_bundle(
        out / "root.img.manifest.xml",
        cert=out / "root.img.cert.pem",
        private_key=out / "root.img.key.pem",
    )
    assert report.ok, report.problems
