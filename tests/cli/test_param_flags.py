"""The command line names the flag the user typed when the library refuses a
value: the library raises ``UsageError("{param} ...", param="user")`` and the
command prints ``--user ...`` (modern: ``amibundle <verb>: error:``, exit 2 for
usage errors; classic: ``ERROR:``, exit 1), never the Python spelling
``user=``. Every case runs the real command in-process, against the real
library; none reaches the network."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from amibundle.cli import classic_main, main
from amibundle.cli._options import Style
from tests.support.common import Identity, sample_image, tree, write_image

CLASSIC_TOOL = {
    "bundle-image": "ec2-bundle-image",
    "bundle-vol": "ec2-bundle-vol",
    "unbundle": "ec2-unbundle",
    "upload": "ec2-upload-bundle",
    "download": "ec2-download-bundle",
    "delete": "ec2-delete-bundle",
}
BOTH = pytest.mark.parametrize("style", list(Style), ids=lambda s: s.value)
# Python spellings of parameters that must never reach a command line.
PYTHON_SPELLING = re.compile(r"\b[a-z_]+=(True|False)?(?=[ ;,)']|$)")


@dataclass(frozen=True)
class Outcome:
    status: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        """stderr without the notes and warnings a command may print first."""
        return [
            line
            for line in self.err.splitlines()
            if not line.startswith(("warning:", "note:", "Note:"))
        ]


def run(style: Style, command: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    if style is Style.CLASSIC:
        status = classic_main(CLASSIC_TOOL[command], argv)
    else:
        status = main([command, *argv])
    out, err = capsys.readouterr()
    return Outcome(status, out, err)


def expect_error(
    outcome: Outcome,
    style: Style,
    command: str,
    message: str,
    *,
    usage: bool = True,
    hint: str | None = None,
    classic_status: int | None = None,
) -> None:
    """One error line (``message`` a regular expression for all of it), the
    hint if any, and for usage errors the pointer to --help; the status of
    the command family."""
    lines = outcome.lines
    assert "Traceback" not in outcome.err and "internal error" not in outcome.err, outcome.err
    if style is Style.CLASSIC:
        prog, lead = CLASSIC_TOOL[command], "ERROR: "
        status = 1 if usage else (classic_status or 254)
    else:
        prog, lead = f"amibundle {command}", f"amibundle {command}: error: "
        status = 2 if usage else 1
    assert outcome.status == status, outcome.err
    assert lines[0].startswith(lead), lines
    text = lines[0][len(lead) :]
    assert re.fullmatch(message, text), text
    assert not PYTHON_SPELLING.search(text), f"a Python spelling in: {text}"
    rest = lines[1:]
    if hint is not None:
        assert rest and re.fullmatch(f"hint: {hint}", rest[0]), rest
        assert not PYTHON_SPELLING.search(rest[0]), rest[0]
        rest = rest[1:]
    else:
        assert not rest or not rest[0].startswith("hint:"), rest
    assert rest == ([f"Try '{prog} --help'."] if usage else []), rest


# --- bundle-image -------------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    folder: Path
    image: Path
    out: Path
    user: Identity

    def bundle_argv(self, *extra: str) -> list[str]:
        base = {
            "-i": str(self.image),
            "-c": str(self.user.cert),
            "-k": str(self.user.key),
            "-u": "123456789012",
            "-r": "x86_64",
            "-d": str(self.out),
        }
        # a later repeat of an option wins (the classic rule), so extras override
        return [*(word for pair in base.items() for word in pair), "-q", "--batch", *extra]


@pytest.fixture
def ws(tmp_path: Path, user_id: Identity) -> Workspace:
    image = sample_image(tmp_path / "disk.img", 1)
    out = tmp_path / "out"
    out.mkdir()
    return Workspace(tmp_path, image, out, user_id)


USER_MESSAGE = (
    r"--user '{}' is not a 12-digit AWS account number \(dashes allowed, e\.g\. 1234-5678-9012\)"
)
BUNDLE_IMAGE_USAGE: list[object] = [
    pytest.param(["-u", "12"], USER_MESSAGE.format("12"), None, id="user"),
    pytest.param(
        ["-u", "AKIAIOSFODNN7EXAMPLE"],
        USER_MESSAGE.format("AKIAIOSFODNN7EXAMPLE"),
        r"an access key id \(AKIA\.\.\.\) is not an account number",
        id="user-access-key",
    ),
    pytest.param(
        ["-B", "foo"],
        r"--block-device-mapping item 'foo' is not of the form virtual=device",
        None,
        id="block-device-mapping",
    ),
    pytest.param(
        ["-B", "ami=sda1,root"],
        r"--block-device-mapping item 'root' is not of the form virtual=device",
        None,
        id="block-device-mapping-second-item",
    ),
    pytest.param(
        ["-B", " "],
        r"--block-device-mapping needs at least one virtual=device pair",
        None,
        id="block-device-mapping-blank",
    ),
    pytest.param(
        ["--productcodes", "a,,b"],
        r"--productcodes 'a,,b' has an empty product code",
        None,
        id="productcodes",
    ),
    pytest.param(
        ["-u", "AKIA1", "-B", "foo", "--productcodes", "x,"],
        USER_MESSAGE.format("AKIA1")
        + r"; --productcodes 'x,' has an empty product code"
        + r"; --block-device-mapping item 'foo' is not of the form virtual=device",
        r"an access key id \(AKIA\.\.\.\) is not an account number",
        id="three-at-once",
    ),
    pytest.param(
        ["--compress-level", "12"],
        r"--compress-level for gzip must be 1 to 9, not 12",
        None,
        id="compress-level",
    ),
    pytest.param(
        ["--compress", "zstd", "--compress-level", "23"],
        r"--compress-level for zstd must be 1 to 22, not 23",
        None,
        id="compress-level-zstd",
    ),
    pytest.param(
        ["--threads", "0"],
        r"--threads must be a whole number of at least 1, not 0",
        None,
        id="threads",
    ),
    pytest.param(
        ["--part-size", "0"],
        r"--part-size must be a whole number of at least 1, not 0",
        None,
        id="part-size",
    ),
    pytest.param(["-p", "a/b"], r"--prefix 'a/b' is not a plain file name.*", None, id="prefix"),
    pytest.param(
        ["--image-type", "kernel"], r"a kernel image needs --kernel-name", None, id="kernel-name"
    ),
    pytest.param(
        ["--kernel-name", "vmlinuz"],
        r"--kernel-name is only for a kernel image",
        None,
        id="kernel-name-not-kernel",
    ),
]


@BOTH
@pytest.mark.parametrize(("extra", "message", "hint"), BUNDLE_IMAGE_USAGE)
def test_bundle_image_names_the_flag(
    extra: list[str],
    message: str,
    hint: str | None,
    style: Style,
    ws: Workspace,
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcome = run(style, "bundle-image", ws.bundle_argv(*extra), capsys)
    expect_error(outcome, style, "bundle-image", message, hint=hint)
    assert tree(ws.out) == []


@BOTH
def test_an_image_over_the_limit_names_the_switch_that_lifts_it(
    style: Style, ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    big = write_image(ws.folder / "big.img", 10 * 1024**3 + 512)  # sparse: costs nothing
    outcome = run(style, "bundle-image", ws.bundle_argv("-i", str(big)), capsys)
    expect_error(
        outcome,
        style,
        "bundle-image",
        r"the image is 10737418752 bytes, larger than EC2's 10 GiB limit for instance-store "
        r"images",
        # not a usage error (classic-cli.md §2.3: exit 254, no pointer to --help)
        usage=False,
        hint=r"--no-size-checks lifts the limit, for other clouds",
    )
    assert tree(ws.out) == []


@BOTH
def test_an_existing_bundle_says_use_force(
    style: Style, ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bundle-image", *ws.bundle_argv()]) == 0
    before = {p.name: p.read_bytes() for p in ws.out.iterdir()}
    capsys.readouterr()
    outcome = run(style, "bundle-image", ws.bundle_argv(), capsys)
    manifest = re.escape(str(ws.out / "disk.img.manifest.xml"))
    expect_error(
        outcome,
        style,
        "bundle-image",
        rf"{manifest} already exists; use --force to replace it",
        usage=False,
    )
    assert {p.name: p.read_bytes() for p in ws.out.iterdir()} == before
    assert run(style, "bundle-image", ws.bundle_argv("--force"), capsys).status == 0


@BOTH
def test_an_existing_image_says_use_force_to_unbundle(
    style: Style, ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bundle-image", *ws.bundle_argv()]) == 0
    restore = ws.folder / "restore"
    restore.mkdir()
    (restore / "disk.img").write_bytes(b"precious")
    capsys.readouterr()
    argv = ["-m", str(ws.out / "disk.img.manifest.xml"), "-k", str(ws.user.key),
            "-d", str(restore), "-q"]  # fmt: skip
    outcome = run(style, "unbundle", argv, capsys)
    target = re.escape(str(restore / "disk.img"))
    expect_error(
        outcome, style, "unbundle", rf"{target} already exists; use --force to replace it",
        usage=False,
    )  # fmt: skip
    assert (restore / "disk.img").read_bytes() == b"precious"


def test_keygen_names_its_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key, cert = tmp_path / "pk.pem", tmp_path / "cert.pem"
    outcome = run(Style.MODERN, "keygen", ["-k", str(key), "-c", str(cert), "--days", "0"], capsys)
    expect_error(outcome, Style.MODERN, "keygen", r"--days must be at least 1, not 0")
    assert tree(tmp_path) == []
    assert main(["keygen", "-k", str(key), "-c", str(cert), "-q"]) == 0
    capsys.readouterr()
    outcome = run(Style.MODERN, "keygen", ["-k", str(key), "-c", str(cert)], capsys)
    expect_error(
        outcome,
        Style.MODERN,
        "keygen",
        rf"{re.escape(str(key))} already exists; use --force to replace it",
        usage=False,
    )


# --- bundle-vol -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Volume:
    root: Path
    out: Path
    user: Identity

    def argv(self, *extra: str, inherit: bool = False) -> list[str]:
        return [
            "-v", str(self.root), "-d", str(self.out),
            "-c", str(self.user.cert), "-k", str(self.user.key),
            "-u", "123456789012", "-r", "x86_64",
            "--builder", "rootless", "-q", "--batch",
            *([] if inherit else ["--no-inherit"]),
            *extra,
        ]  # fmt: skip


@pytest.fixture
def vol(tmp_path: Path, user_id: Identity) -> Volume:
    root = tmp_path / "vol"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("test\n")
    (root / "data.bin").write_bytes(os.urandom(3 << 20))
    out = tmp_path / "out"
    out.mkdir()
    return Volume(root, out, user_id)


BUNDLE_VOL_USAGE: list[object] = [
    pytest.param(
        ["-s", "0"], r"--size must be a positive number of MiB or auto, not 0", None, id="size-0"
    ),
    pytest.param(
        ["-e", "/nonexistent"],
        r"--exclude /nonexistent: nothing in the volume .*vol matches it",
        None,
        id="exclude",
    ),
    pytest.param(
        ["-i", "/etc/nothing-here"],
        r"--include /etc/nothing-here: nothing in the volume .*vol matches it",
        None,
        id="include",
    ),
    pytest.param(["-p", "a/b"], r"--prefix 'a/b' is not a plain file name.*", None, id="prefix"),
    pytest.param(["-u", "1234"], USER_MESSAGE.format("1234"), None, id="user"),
]


@BOTH
def test_bundle_vol_size_over_the_limit_is_not_a_usage_error(
    style: Style, vol: Volume, capsys: pytest.CaptureFixture[str]
) -> None:
    """classic-cli.md §3.10: ``-s 20000`` exits 254, without a pointer to --help."""
    outcome = run(style, "bundle-vol", vol.argv("-s", "20000"), capsys)
    expect_error(
        outcome,
        style,
        "bundle-vol",
        r"an image of 20000 MiB is larger than EC2's 10240 MiB limit for instance-store images",
        usage=False,
        hint=r"--no-size-checks lifts the limit, for other clouds",
    )
    assert tree(vol.out) == []


@BOTH
@pytest.mark.parametrize(("extra", "message", "hint"), BUNDLE_VOL_USAGE)
def test_bundle_vol_names_the_flag(
    extra: list[str],
    message: str,
    hint: str | None,
    style: Style,
    vol: Volume,
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcome = run(style, "bundle-vol", vol.argv(*extra), capsys)
    expect_error(outcome, style, "bundle-vol", message, hint=hint)
    assert tree(vol.out) == []


@BOTH
def test_bundle_vol_data_that_does_not_fit_points_at_size(
    style: Style, vol: Volume, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome = run(style, "bundle-vol", vol.argv("-s", "2"), capsys)
    expect_error(
        outcome,
        style,
        "bundle-vol",
        r"the data does not fit: it needs about \d+ MiB and \d+ inodes, the 2 MiB image has "
        r".* free \(\d+ MiB short\)",
        usage=False,
        hint=r"use --size \d+, or --size auto to size the image from the data",
    )
    assert tree(vol.out) == []


@BOTH
def test_bundle_vol_partitioned_without_a_kernel_points_at_no_bootloader(
    style: Style, vol: Volume, capsys: pytest.CaptureFixture[str]
) -> None:
    # Either builder writes a boot loader into a partitioned image now; a
    # volume with no kernel for it to start is refused before the copy.
    outcome = run(style, "bundle-vol", vol.argv("-P", "mbr", "-s", "20"), capsys)
    expect_error(
        outcome,
        style,
        "bundle-vol",
        r".* has no kernel \(boot/vmlinuz-VERSION\) for the boot loader to start",
        usage=False,
        hint=r"install a kernel in the volume, or use --no-bootloader",
    )


@BOTH
def test_bundle_vol_inherit_off_ec2_points_at_no_inherit(
    style: Style, vol: Volume, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A metadata service that refuses connections, on the loopback.
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    outcome = run(style, "bundle-vol", vol.argv("--inherit", "-s", "20", inherit=True), capsys)
    expect_error(
        outcome,
        style,
        "bundle-vol",
        r"the instance metadata service at http://127\.0\.0\.1:9 cannot be reached \(.*\)",
        usage=False,
        hint=r"not on EC2\? use --no-inherit",
        classic_status=12,
    )
    assert tree(vol.out) == []


@BOTH
def test_bundle_vol_clone_only_over_an_existing_image_says_use_force(
    style: Style, vol: Volume, capsys: pytest.CaptureFixture[str]
) -> None:
    (vol.out / "image").write_bytes(b"precious")
    argv = ["-v", str(vol.root), "-d", str(vol.out), "--clone-only", "-s", "20", "-q", "--batch",
            "--builder", "rootless"]  # fmt: skip
    outcome = run(style, "bundle-vol", argv, capsys)
    target = re.escape(str(vol.out / "image"))
    expect_error(
        outcome, style, "bundle-vol", rf"{target} already exists; use --force to replace it",
        usage=False,
    )  # fmt: skip
    assert (vol.out / "image").read_bytes() == b"precious"


def test_bundle_vol_a_script_that_cannot_run_is_a_clear_error(
    vol: Volume, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "setup.sh"
    script.write_text("echo no interpreter line\n")
    script.chmod(0o755)
    outcome = run(Style.MODERN, "bundle-vol", vol.argv("-S", str(script), "-s", "20"), capsys)
    expect_error(
        outcome,
        Style.MODERN,
        "bundle-vol",
        rf".*{re.escape(str(script))}.*",
        usage=False,
        hint=".*",
    )
    assert tree(vol.out) == []


# --- the S3 commands ---------------------------------------------------------------------------


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img.manifest.xml"
    path.write_text("<manifest/>")
    return path


S3_USAGE: list[object] = [
    pytest.param(
        "upload",
        ["--acl", "bogus"],
        r"invalid value for --acl: invalid choice: 'bogus' \(choose from .*\)",
        id="upload-acl",
    ),
    pytest.param(
        "upload",
        ["--location", "mars"],
        r"invalid value for --location: 'mars': expected a region name or one of .*",
        id="upload-location",
    ),
    pytest.param(
        "upload",
        ["--part", "x"],
        r"invalid value for --part: 'x': not an integer",
        id="upload-part",
    ),
    pytest.param(
        "upload",
        ["-d", "/nonexistent/parts"],
        r"invalid value for --directory: '/nonexistent/parts': no such directory",
        id="upload-directory",
    ),
    pytest.param(
        "upload",
        ["-b", "x"],
        r"invalid value for --bucket: bucket name 'x' is not valid: .*",
        id="upload-bucket-name",
    ),
    pytest.param(
        "upload",
        ["-b", "/"],
        r"invalid value for --bucket: no bucket name in (--bucket )?'/'",
        id="upload-bucket-empty",
    ),
    pytest.param(
        "download",
        ["-p", ""],
        r"invalid value for --prefix: '': must be a plain name, no '/'",
        id="download-prefix",
    ),
    pytest.param(
        "download",
        ["-d", "/dev/null/dir"],  # a folder is created when missing, but not in a file
        r"invalid value for --directory: '/dev/null/dir': "
        r"(no such directory|/dev/null is not a directory)",
        id="download-directory",
    ),
    pytest.param(
        "delete",
        ["-p", "."],
        r"invalid value for --prefix: '\.': must be a plain name, no '/'",
        id="delete-prefix",
    ),
]


@BOTH
@pytest.mark.parametrize(("command", "extra", "message"), S3_USAGE)
def test_s3_commands_name_the_flag(
    command: str,
    extra: list[str],
    message: str,
    style: Style,
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = {
        "upload": ["-b", "bucket", "-m", str(manifest)],
        "download": ["-b", "bucket"],
        "delete": ["-b", "bucket"],
    }[command]
    settings = ["--url", "http://127.0.0.1:9", "-a", "AKIDTEST", "-s", "secret", "--retry=1"]
    outcome = run(style, command, [*base, *settings, *extra], capsys)
    expect_error(outcome, style, command, message)
