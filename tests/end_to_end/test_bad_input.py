"""Bad input ends with one clear error line, a non-zero exit, and no output.

Each case runs the real command line in-process (``amibundle.cli.main``) and
checks stderr, the exit status, and that the output folder gained nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from amibundle.cli import classic_main, main
from tests.support import tars as tf
from tests.support.bundles import bundle_from_tar
from tests.support.common import Identity, sample_image, tree, write_image


def bundle_argv(image: object, user: Identity, dest: object, *extra: str) -> list[str]:
    """``bundle-image`` arguments for a test bundle: fixed account and arch, the
    user's keys, ``image`` and ``dest`` as given (paths or strings)."""
    keys = ["-c", str(user.cert), "-k", str(user.key)]
    return [
        "bundle-image",
        "-i",
        str(image),
        *keys,
        "-u",
        "123456789012",
        "-r",
        "x86_64",
        "-d",
        str(dest),
        *extra,
    ]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_error(err: str, *patterns: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith(("hint:", "Try '"))]
    assert len(lines) == 1, err
    for pattern in patterns:
        assert re.search(pattern, lines[0], re.IGNORECASE), lines[0]
    return lines[0]


def random_image(path: Path, data_mib: float = 1.5) -> Path:
    """6 MiB apparent, with incompressible data (so parts are many and large)."""
    return write_image(path, 6 << 20, [(1 << 20, os.urandom(int(data_mib * (1 << 20))))])


@pytest.fixture
def bundle(tmp_path: Path, user_id: Identity) -> Path:
    """A good bundle (4 parts) in tmp_path/bundle; returns its manifest."""
    image = random_image(tmp_path / "disk.img")
    out = tmp_path / "bundle"
    out.mkdir()
    status = main(bundle_argv(str(image), user_id, str(out), "--part-size", "400000", "-q"))
    assert status == 0
    return out / "disk.img.manifest.xml"


@pytest.fixture
def restore(tmp_path: Path) -> Path:
    folder = tmp_path / "restore"
    folder.mkdir()
    return folder


def unbundle(manifest: Path, key: Path, dest: Path, *extra: str) -> list[str]:
    return ["unbundle", "-m", str(manifest), "-k", str(key), "-d", str(dest), "-q", *extra]


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def edit_manifest(manifest: Path, old: bytes, new: bytes) -> None:
    data = manifest.read_bytes()
    assert old in data
    manifest.write_bytes(data.replace(old, new, 1))


Damage = Callable[[Path], None]
PART_DAMAGE: dict[str, tuple[Damage, str]] = {
    "missing part": (
        lambda m: (m.parent / "disk.img.part.2").unlink(),
        r"part disk\.img\.part\.2 is missing",
    ),
    "truncated part": (
        lambda m: os.truncate(m.parent / "disk.img.part.1", 1000),
        r"disk\.img\.part\.1",
    ),
    "truncated last part": (
        lambda m: os.truncate(m.parent / "disk.img.part.3", 16),
        r"disk\.img\.part\.3|truncated",
    ),
    "flipped byte": (
        lambda m: flip_byte(m.parent / "disk.img.part.2", 12345),
        r"part disk\.img\.part\.2 is damaged",
    ),
    "digest wrong": (
        lambda m: edit_manifest(m, b"<digest algorithm='SHA1'>", b"<digest algorithm='SHA1'>0"),
        r"digest",
    ),
}


@pytest.mark.parametrize("case", sorted(PART_DAMAGE))
def test_damaged_bundle_is_refused_by_unbundle(
    case: str, bundle: Path, restore: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    damage, pattern = PART_DAMAGE[case]
    if case == "digest wrong":
        # keep the manifest valid: replace the digest with another 40-hex value
        data = bundle.read_bytes()
        digest = re.search(rb"<digest algorithm='SHA1'>([0-9a-f]{40})</digest>", data)
        assert digest
        bundle.write_bytes(data.replace(digest.group(1), b"0" * 40, 1))
        pattern = r"image digest mismatch"
    else:
        damage(bundle)
    status, _, err = run_cli(unbundle(bundle, user_id.key, restore), capsys)
    assert status == 1
    assert_one_error(err, pattern)
    assert tree(restore) == []


@pytest.mark.parametrize("case", sorted(set(PART_DAMAGE) - {"digest wrong"}))
def test_verify_reports_every_problem(
    case: str, bundle: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    damage, pattern = PART_DAMAGE[case]
    damage(bundle)
    flip_byte(bundle.parent / "disk.img.part.0", 7)  # a second, independent problem
    status, out, _ = run_cli(
        ["verify", "-m", str(bundle), "-c", str(user_id.cert), "-k", str(user_id.key), "--json"],
        capsys,
    )
    assert status == 1
    import json

    report = json.loads(out)
    assert report["ok"] is False
    problems = " | ".join(report["problems"])
    assert re.search(pattern, problems), problems
    assert "disk.img.part.0 is damaged" in problems


def test_signature_wrong_with_cert(
    bundle: Path,
    restore: Path,
    user_id: Identity,
    other_id: Identity,
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, _, err = run_cli(
        unbundle(bundle, user_id.key, restore, "--cert", str(other_id.cert)), capsys
    )
    assert status == 1
    assert_one_error(err, r"signature does not verify")
    assert tree(restore) == []


def test_tampered_signed_field_fails_signature(
    bundle: Path, restore: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_manifest(bundle, b"<architecture>x86_64<", b"<architecture>i386<")
    status, _, err = run_cli(
        unbundle(bundle, user_id.key, restore, "--cert", str(user_id.cert)), capsys
    )
    assert status == 1
    assert_one_error(err, r"signature")


def test_wrong_private_key(
    bundle: Path, restore: Path, other_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(unbundle(bundle, other_id.key, restore), capsys)
    assert status == 1
    assert_one_error(err, r"private key cannot decrypt")
    assert tree(restore) == []


HOSTILE_MANIFESTS: dict[str, bytes] = {
    "not xml": b"this is not a manifest",
    "truncated": b"<?xml version='1.0'?><manifest><version>2007-10-10</version><ima",
    "doctype": b"<?xml version='1.0'?><!DOCTYPE manifest [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>"
    b"<manifest><version>&x;</version></manifest>",
    "entity bomb": b"<?xml version='1.0'?><!DOCTYPE m [<!ENTITY a 'aaaaaaaaaa'>"
    + b"".join(b"<!ENTITY %c '%s'>" % (98 + i, (b"&%c;" % (97 + i)) * 10) for i in range(9))
    + b"]><manifest><version>&j;</version></manifest>",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MANIFESTS))
@pytest.mark.parametrize("verb", ["unbundle", "verify", "inspect"])
def test_hostile_manifest(
    case: str,
    verb: str,
    tmp_path: Path,
    restore: Path,
    user_id: Identity,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = tmp_path / "evil.manifest.xml"
    manifest.write_bytes(HOSTILE_MANIFESTS[case])
    argv = {
        "unbundle": unbundle(manifest, user_id.key, restore),
        "verify": ["verify", "-m", str(manifest)],
        "inspect": ["inspect", "-m", str(manifest)],
    }[verb]
    status, out, err = run_cli(argv, capsys)
    assert status == 1
    text = err if verb != "verify" else out
    assert "root:" not in text  # /etc/passwd never read
    if verb == "verify":
        assert "PROBLEM: evil.manifest.xml:" in out
    else:
        assert_one_error(err, r"evil\.manifest\.xml")
    assert tree(restore) == []


def _hostile_tars() -> dict[str, tuple[bytes, str]]:
    data = b"x" * 1000
    return {
        "dot-dot member": (tf.archive(tf.member("../disk.img", data)), r"not a plain|'/'|\.\."),
        "absolute path": (tf.archive(tf.member("/etc/disk.img", data)), r"not a plain|'/'"),
        "symlink": (
            tf.archive(tf.member("disk.img", typeflag=b"2", linkname="/etc/passwd")),
            r"symbolic link",
        ),
        "hard link": (tf.archive(tf.member("disk.img", typeflag=b"1", linkname="x")), r"link"),
        "device": (tf.archive(tf.member("disk.img", typeflag=b"3")), r"device"),
        "directory": (tf.archive(tf.member("disk.img", typeflag=b"5")), r"directory"),
        "two members": (
            tf.archive(tf.member("disk.img", data), tf.member("other", data)),
            r"more than one|second",
        ),
    }


HOSTILE_TARS = _hostile_tars()


@pytest.mark.parametrize("case", sorted(HOSTILE_TARS))
def test_hostile_tar_stream(
    case: str,
    tmp_path: Path,
    restore: Path,
    user_id: Identity,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tar, pattern = HOSTILE_TARS[case]
    manifest = bundle_from_tar(tar, tmp_path / "evil", user_id, size=1000)
    status, _, err = run_cli(unbundle(manifest, user_id.key, restore), capsys)
    assert status == 1
    assert_one_error(err, pattern)
    assert tree(restore) == []
    assert not (tmp_path / "etc").exists() and tree(tmp_path / "evil") == sorted(
        ["disk.img.manifest.xml", "disk.img.part.0"]
    )


def test_good_factory_bundle_unbundles(
    tmp_path: Path, restore: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    """The factory itself makes valid bundles, so the hostile cases fail for their tar."""
    data = os.urandom(1000)
    manifest = bundle_from_tar(
        tf.archive(tf.member("disk.img", data)), tmp_path / "ok", user_id, size=1000
    )
    status, _, err = run_cli(unbundle(manifest, user_id.key, restore), capsys)
    assert status == 0, err
    assert (restore / "disk.img").read_bytes() == data


def test_existing_image_is_not_overwritten(
    bundle: Path, restore: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    (restore / "disk.img").write_bytes(b"precious")
    status, _, err = run_cli(unbundle(bundle, user_id.key, restore), capsys)
    assert status == 1
    assert_one_error(err, r"already exists.*--force")
    assert (restore / "disk.img").read_bytes() == b"precious"
    assert tree(restore) == ["disk.img"]
    status, _, err = run_cli(unbundle(bundle, user_id.key, restore, "--force"), capsys)
    assert status == 0, err
    assert (restore / "disk.img").stat().st_size == 6 << 20


def test_existing_bundle_is_not_overwritten(
    bundle: Path, tmp_path: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.name: p.read_bytes() for p in bundle.parent.iterdir()}
    argv = bundle_argv(str(tmp_path / "disk.img"), user_id, str(bundle.parent), "-q")
    status, _, err = run_cli(argv, capsys)
    assert status == 1
    assert_one_error(err, r"already exists.*--force")
    assert {p.name: p.read_bytes() for p in bundle.parent.iterdir()} == before
    # --force replaces it, and removes the parts the new bundle no longer has
    status, _, err = run_cli([*argv, "--force"], capsys)
    assert status == 0, err
    assert sorted(p.name for p in bundle.parent.iterdir()) == [
        "disk.img.manifest.xml",
        "disk.img.part.0",
    ]


BUNDLE_MISTAKES: dict[str, tuple[list[str], str, int]] = {
    "image missing": (["-i", "{tmp}/nope.img"], r"--image.*nope\.img.*no such file", 2),
    "image is a directory": (["-i", "{tmp}"], r"not a regular file but a directory.*bundle-vol", 2),
    "short account id": (["-u", "12345678901"], r"12-digit", 2),
    "access key as account": (["-u", "AKIAIOSFODNN7EXAMPLE"], r"12-digit", 2),
    "13 digits": (["-u", "1234567890123"], r"12-digit", 2),
    "prefix with slash": (["-p", "a/b"], r"plain file name", 2),
    "empty image": (["-i", "{tmp}/empty.img"], r"empty", 1),
    "cert is not a cert": (["-c", "{tmp}/disk.img"], r"not an X\.509 certificate", 1),
    "kernel without name": (["--image-type", "kernel"], r"--kernel-name", 2),
}


@pytest.mark.parametrize("case", sorted(BUNDLE_MISTAKES))
def test_bundle_image_mistakes(
    case: str, tmp_path: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    sample_image(tmp_path / "disk.img", 1)
    (tmp_path / "empty.img").touch()
    out = tmp_path / "out"
    out.mkdir()
    base = {
        "-i": str(tmp_path / "disk.img"),
        "-c": str(user_id.cert),
        "-k": str(user_id.key),
        "-u": "123456789012",
        "-d": str(out),
    }
    changes, pattern, expected = BUNDLE_MISTAKES[case]
    for flag, value in zip(changes[::2], changes[1::2], strict=True):
        if flag in base:
            base[flag] = value.format(tmp=tmp_path)
        else:
            base[flag] = value
    argv = ["bundle-image", "-r", "x86_64", "-q"] + [w for kv in base.items() for w in kv]
    status, _, err = run_cli(argv, capsys)
    assert status == expected
    assert_one_error(err, pattern)
    assert tree(out) == []


def test_no_ec2_certificate_anywhere(
    tmp_path: Path,
    user_id: Identity,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("AMIBUNDLE_EC2_CERT")
    monkeypatch.setattr("amibundle.ec2certs._SHIPPED_CERTS", tmp_path / "none")
    monkeypatch.setattr("amibundle.ec2certs._SHARE_CERTS", tmp_path / "none2")
    monkeypatch.setattr("amibundle.ec2certs._AMAZON_LINUX_DIR", tmp_path / "none3")
    sample_image(tmp_path / "disk.img", 1)
    status, _, err = run_cli(
        bundle_argv(str(tmp_path / "disk.img"), user_id, str(tmp_path)),
        capsys,
    )
    assert status == 1
    line = assert_one_error(err, r"no EC2 certificate cert-ec2\.pem found")
    assert "none3" in line
    assert "--ec2cert" in err  # the hint says how to pass one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.img"]


def test_classic_exit_codes(
    tmp_path: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    sample_image(tmp_path / "disk.img", 1)
    base = [
        "-i",
        str(tmp_path / "disk.img"),
        "-c",
        str(user_id.cert),
        "-k",
        str(user_id.key),
        "-r",
        "x86_64",
        "-d",
        str(tmp_path),
    ]
    assert classic_main("ec2-bundle-image", [*base, "-u", "12"]) == 1  # parameter error
    assert classic_main("ec2-bundle-image", [*base, "-u", "123456789012", "--bogus"]) == 1
    assert (
        classic_main(
            "ec2-unbundle",
            ["-m", str(tmp_path / "disk.img"), "-k", str(user_id.key), "-d", str(tmp_path)],
        )
        == 254
    )
    _, err = capsys.readouterr()
    assert err.count("ERROR: ") == 3


# --- files that cannot be read or written ---------------------------------------------


def _without_file_permission_override() -> list[str] | None:
    """A command prefix under which permission bits apply: nothing for a normal
    user; for root, setpriv dropping CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def test_unreadable_image(tmp_path: Path, user_id: Identity) -> None:
    prefix = _without_file_permission_override()
    if prefix is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    image = sample_image(tmp_path / "disk.img", 1)
    image.chmod(0o000)
    out = tmp_path / "out"
    out.mkdir()
    amibundle = Path(sys.executable).parent / "amibundle"  # the venv's entry point
    done = subprocess.run(
        [*prefix, str(amibundle), *bundle_argv(image, user_id, out)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr
    assert_one_error(done.stderr, r"cannot read image .*disk\.img: Permission denied")
    assert tree(out) == []


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs (needs root); skipped where it cannot be mounted."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to simulate a full disk: {done.stderr!r}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_bundle_into_a_full_destination(
    tmp_path: Path, tiny_fs: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "random.img"
    image.write_bytes(os.urandom(6 << 20))  # incompressible: needs 6 MiB of parts
    status, _, err = run_cli(
        bundle_argv(str(image), user_id, str(tiny_fs), "-q"),
        capsys,
    )
    assert status == 1
    assert_one_error(err, r"No space left on device")
    assert tree(tiny_fs) == []


def test_unbundle_into_a_full_destination(
    tmp_path: Path, tiny_fs: Path, user_id: Identity, capsys: pytest.CaptureFixture[str]
) -> None:
    image = random_image(tmp_path / "big.img", data_mib=5)
    (tmp_path / "big").mkdir()
    assert main(bundle_argv(str(image), user_id, str(tmp_path / "big"), "-q")) == 0
    bundle = tmp_path / "big" / "big.img.manifest.xml"
    status, _, err = run_cli(unbundle(bundle, user_id.key, tiny_fs), capsys)
    assert status == 1
    assert_one_error(err, r"No space left on device")
    assert tree(tiny_fs) == []
