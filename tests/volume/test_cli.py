"""bundle-vol's command line: every classic flag, the classic parsing rules, ours."""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

import pytest

from amibundle.cli import bundle_vol
from amibundle.cli._options import EarlyExit, Style, parse_args
from amibundle.errors import UsageError
from tests.support.common import Identity


def _parse(argv: list[str], style: Style = Style.CLASSIC) -> argparse.Namespace:
    return parse_args(bundle_vol.build_parser(style, "ec2-bundle-vol"), argv)


@pytest.fixture
def keys(user_id: Identity) -> list[str]:
    return ["-k", str(user_id.key), "-c", str(user_id.cert), "-u", "123456789012"]


def test_classic_flags(keys: list[str], tmp_path: Path) -> None:
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    grub = tmp_path / "menu.lst"
    grub.write_text("default 0\n")
    args = _parse(
        [
            *keys,
            "-v",
            str(tmp_path),
            "-d",
            str(tmp_path),
            "-p",
            "root",
            "-s",
            "2048",
            "-e",
            "/a,/b",
            "-e",
            "/c",
            "-i",
            "/x",
            "-a",
            "--no-filter",
            "-P",
            "g",
            "-S",
            str(script),
            "--generate-fstab",
            "--grub-config",
            str(grub),
            "--no-inherit",
            "-B",
            "ami=sda1",
            "--kernel",
            "aki-1",
            "--ramdisk",
            "ari-1",
            "--productcodes",
            "A,B",
            "-r",
            "i386",
            "--ec2cert",
            str(grub),
            "--batch",
            "--debug",
            "--no-size-checks",
        ]
    )
    assert args.volume == tmp_path and args.prefix == "root" and args.size == 2048
    assert args.exclude == [["/a", "/b"], ["/c"]] and args.include == [["/x"]]
    assert args.all and args.no_filter and args.partition == "gpt"
    assert args.inherit is False and args.batch and args.debug
    assert bundle_vol.fstab_variant(args) == "legacy"  # an explicit -r i386, as the classic


def test_defaults(keys: list[str]) -> None:
    args = _parse(keys)
    assert args.volume == Path("/") and args.destination == Path("/tmp")
    assert args.prefix == "image" and args.size == 10240
    assert args.partition is None and args.inherit is None and args.builder is None
    assert args.boot_mode == "legacy-bios"
    assert bundle_vol.fstab_variant(args) is None


@pytest.mark.parametrize(
    ("argv", "check"),
    [
        (["-s", "auto"], lambda a: a.size is None),
        (["-s", "0x100"], lambda a: a.size == 256),
        (["--generate-fstab=modern"], lambda a: bundle_vol.fstab_variant(a) == "modern"),
        (["--generate-fstab"], lambda a: bundle_vol.fstab_variant(a) == "default"),
        (["--inherit"], lambda a: a.inherit is True),
        (
            ["--builder", "rootless", "--fs-type", "ext4", "--label", "r"],
            lambda a: (a.builder, a.fs_type, a.label) == ("rootless", "ext4", "r"),
        ),
        (
            ["--no-bootloader", "--keep-partial", "--json", "--force"],
            lambda a: a.no_bootloader and a.keep_partial and a.json and a.force,
        ),
        (["--pre", "x"], lambda a: a.prefix == "x"),  # unique prefix of --prefix
    ],
)
def test_values(keys: list[str], argv: list[str], check: object) -> None:
    assert check(_parse([*keys, *argv]))  # type: ignore[operator]


def test_clone_only_waives_the_account() -> None:
    assert _parse(["--clone-only"]).clone_only
    # -c/-k may be left out (a key is made for the bundle), the account may not
    with pytest.raises(UsageError, match="missing mandatory option --user"):
        _parse([])


@pytest.mark.parametrize("given", [["-c", "{cert}"], ["-k", "{key}"]])
def test_cert_and_key_go_together(given: list[str], user_id: Identity) -> None:
    argv = [a.format(cert=user_id.cert, key=user_id.key) for a in given]
    with pytest.raises(UsageError, match=r"-[ck] needs -[ck]: .*or neither"):
        _parse([*argv, "-u", "123456789012"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-P", "x"], "expected one of none, mbr, gpt"),
        (["-s", "ten"], "'ten': expected a number of MiB or auto"),
        (["-s", "0"], "--size must be a positive number of MiB or auto"),
        (["--fstab", "/etc/hostname", "--generate-fstab"], "cannot be combined"),
        (["--in", "/x"], "ambiguous option --in"),
        (["-v", "/nonexistent"], "no such directory"),
        (["-S", "{plain}"], "not executable"),
    ],
)
def test_refused(argv: list[str], message: str, tmp_path: Path) -> None:
    plain = tmp_path / "plain.sh"
    plain.write_text("echo\n")
    plain.chmod(0o644)
    with pytest.raises(UsageError, match=message):
        _parse(["--clone-only", *(a.replace("{plain}", str(plain)) for a in argv)])


def test_help_and_manual() -> None:
    with pytest.raises(EarlyExit) as caught:
        _parse(["--help"])
    for flag in ("--volume", "--partition", "--generate-fstab", "--builder", "--clone-only"):
        assert flag in caught.value.text
    with pytest.raises(EarlyExit) as caught:
        _parse(["--manual"])
    assert "rootless" in caught.value.text


def test_arguments_reach_the_library(keys: list[str], tmp_path: Path) -> None:
    args = _parse(
        [
            *keys,
            "-v",
            str(tmp_path),
            "-e",
            "/a,/b",
            "--productcodes",
            "A,B",
            "-r",
            "x86_64",
            "--size",
            "auto",
            "-P",
            "m",
            "--generate-fstab=modern",
            "--boot-mode",
            "u",
            "--json",
        ],
        Style.MODERN,
    )
    with mock.patch.object(bundle_vol, "bundle_volume", autospec=True) as library:
        library.return_value.to_dict.return_value = {}
        bundle_vol.run(args, Style.MODERN)
    kwargs = library.call_args.kwargs
    assert library.call_args.args == (tmp_path,)
    metadata = kwargs["metadata"]
    assert kwargs["exclude"] == ["/a", "/b"] and metadata.product_codes == ("A", "B")
    assert kwargs["size_mib"] is None and kwargs["partition"] == "mbr"
    assert kwargs["generate_fstab"] == "modern" and metadata.architecture == "x86_64"
    assert metadata.account == "123456789012"
    assert kwargs["keys"].certificate == Path(keys[3])
    assert kwargs["inherit"] is None and kwargs["bootloader"] is True
    assert kwargs["boot_mode"] == "uefi"  # a unique prefix, as -P takes
