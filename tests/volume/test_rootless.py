"""The rootless builder, run as an unprivileged user: no root, no loop, no mount.

The image is checked with ``e2fsck -fn`` and read back with debugfs: it must
hold exactly the expected part of the synthetic volume, with contents,
modes, owners, times, hard links and extended attributes, plus the special
folders and nodes, and the fstab asked for.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from amibundle.volume.fill import fstab_text
from amibundle.volume.plan import FstabVariant
from tests.support.ext2read import read_file, read_tree
from tests.support.volumes import (
    EXCLUDES,
    INCLUDES,
    IS_ROOT,
    SyntheticVolume,
    check_specials,
    cli,
    compare_tree,
)

pytestmark = pytest.mark.slow


def _args(volume: SyntheticVolume, out: Path, *extra: str) -> list[str]:
    return [
        "-v",
        str(volume.root),
        "-d",
        str(out),
        "--clone-only",
        "--builder",
        "rootless",
        "--fs-type",
        "ext4",
        "-s",
        "48",
        "-e",
        ",".join(EXCLUDES),
        "-i",
        ",".join(INCLUDES),
        "--no-inherit",
        *extra,
    ]


def _fsck(fs: str) -> None:
    done = subprocess.run(["e2fsck", "-fn", fs], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def unprivileged_image(synthetic: SyntheticVolume, world_dir: Path) -> Path:
    out = world_dir / "rootless-out"
    out.mkdir()
    out.chmod(0o777)
    done = cli(_args(synthetic, out, "--label", "synthroot"), unprivileged=True)
    assert done.returncode == 0, done.stderr
    image = out / "image"
    if IS_ROOT:
        assert image.stat().st_uid == 65534, "the build did not run unprivileged"
    return image


def test_image_is_clean(unprivileged_image: Path) -> None:
    _fsck(str(unprivileged_image))


def test_tree_equals_volume(unprivileged_image: Path, synthetic: SyntheticVolume) -> None:
    tree = read_tree(str(unprivileged_image))
    compare_tree(synthetic, tree)
    check_specials(tree)
    # The volume's own fstab, untouched (no --fstab, no --generate-fstab).
    assert (
        read_file(str(unprivileged_image), "etc/fstab")
        == (synthetic.root / "etc/fstab").read_bytes()
    )
    assert "etc/fstab.old" not in tree


def test_root_folder_and_label(unprivileged_image: Path, synthetic: SyntheticVolume) -> None:
    tree = read_tree(str(unprivileged_image))
    assert tree["lost+found"].uid == 0
    out = subprocess.run(
        ["blkid", "-o", "export", str(unprivileged_image)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "LABEL=synthroot" in out and "TYPE=ext4" in out


def test_volume_untouched(unprivileged_image: Path, synthetic: SyntheticVolume) -> None:
    """Hard-link staging must not leave links behind or change the volume."""
    st = os.lstat(synthetic.root / "usr/bin/tool")
    assert st.st_nlink == 3  # tool, tool-link, tool-alias: no staging link left
    assert not list(unprivileged_image.parent.glob(".image.*"))


@pytest.mark.parametrize(
    ("option", "variant"),
    [
        ("--generate-fstab", "default"),
        ("--generate-fstab=legacy", "legacy"),
        ("--generate-fstab=modern", "modern"),
    ],
)
def test_generated_fstab(
    synthetic: SyntheticVolume, out_dir: Path, option: str, variant: str
) -> None:
    done = cli(_args(synthetic, out_dir, option, "--label", "root"), unprivileged=True)
    assert done.returncode == 0, done.stderr
    fs = str(out_dir / "image")
    fstab = read_file(fs, "etc/fstab").decode()
    if variant == "modern":
        assert fstab.splitlines()[1] == "LABEL=root / ext4 defaults 0 1"
    else:
        assert fstab == fstab_text(FstabVariant(variant), fs_type="ext4", label="root", uuid="x")
        assert fstab.splitlines()[1] == "# Supplied by: ec2-ami-tools-1.5-3"
    assert read_file(fs, "etc/fstab.old") == (synthetic.root / "etc/fstab").read_bytes()
    tree = read_tree(fs)
    assert (tree["etc/fstab"].uid, tree["etc/fstab"].mode & 0o7777) == (0, 0o644)
    assert (synthetic.root / "etc/fstab").read_bytes().startswith(b"/dev/xvda1")


def test_fstab_file_and_script(synthetic: SyntheticVolume, out_dir: Path, world_dir: Path) -> None:
    fstab = world_dir / "my-fstab"
    fstab.write_text("LABEL=mine / ext4 defaults 0 1\n")
    script = world_dir / "customise.sh"
    script.write_text(
        '#!/bin/sh\nset -e\necho "customised" > "$1/etc/motd"\necho appended >> "$1/etc/hostname"\n'
    )
    script.chmod(0o755)
    done = cli(
        _args(synthetic, out_dir, "--fstab", str(fstab), "-S", str(script)), unprivileged=True
    )
    assert done.returncode == 0, done.stderr
    fs = str(out_dir / "image")
    _fsck(fs)
    assert read_file(fs, "etc/fstab") == fstab.read_bytes()
    assert read_file(fs, "etc/motd") == b"customised\n"
    assert read_file(fs, "etc/hostname") == b"synthetic\nappended\n"
    # With a script the staging view is a copy: the volume did not change.
    assert (synthetic.root / "etc/hostname").read_bytes() == b"synthetic\n"


@pytest.mark.parametrize("table", ["mbr", "gpt"])
def test_partitioned_without_bootloader(
    synthetic: SyntheticVolume, out_dir: Path, table: str
) -> None:
    done = cli(_args(synthetic, out_dir, "-P", table, "--no-bootloader"), unprivileged=True)
    assert done.returncode == 0, done.stderr
    image = out_dir / "image"
    layout = _sfdisk(image)
    part = (
        layout["partitions"][0]
        if table == "mbr"
        else next(p for p in layout["partitions"] if p["node"].endswith("image1"))
    )
    assert part["start"] == (2048 if table == "mbr" else 4096)
    fs = f"{image}?offset={part['start'] * 512}"
    _fsck(fs)
    compare_tree(synthetic, read_tree(fs))


def _sfdisk(image: Path) -> dict:  # type: ignore[type-arg]
    import json

    out = subprocess.run(
        ["sfdisk", "--json", str(image)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)["partitiontable"]  # type: ignore[no-any-return]


def test_partitioned_without_kernel_needs_no_bootloader_flag(
    synthetic: SyntheticVolume, out_dir: Path
) -> None:
    """The synthetic volume has no /boot/vmlinuz-*: a boot loader would have
    nothing to start, which is said before anything is written."""
    done = cli(_args(synthetic, out_dir, "-P", "gpt"), unprivileged=True)
    assert done.returncode == 1
    assert "boot loader" in done.stderr and "--no-bootloader" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 2  # error line and hint
    assert not list(out_dir.iterdir())
