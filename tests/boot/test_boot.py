"""Bundled volumes boot: bundle-vol -> unbundle -> qemu, for both builders.

The image is the restored one (so the bundle round trip is part of what
boots), made by the real command with the production rules: bundle-vol's
own fstab (root by LABEL), its /dev nodes, its GRUB. Flat images are started
with ``-kernel`` (as EC2's PV-GRUB starts them, root on the whole disk);
partitioned ones by the firmware alone: SeaBIOS or OVMF -> GRUB in the image
-> the kernel in the image's /boot -> /sbin/init, which reports what it sees.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import amibundle
from amibundle.volume.boot import ESP_TYPE, read_table
from tests.support.boot import BOOT_TIME, BootKeys, need
from tests.support.bootroot import CONSOLE, OWNER, RootTree
from tests.support.qemu import BootRun, boot, missing_pieces
from tests.support.volumes import cli, loop_attaches

pytestmark = pytest.mark.slow

LABEL = "bootroot"
FLAT_APPEND = "root=/dev/nvme0n1 ro console=ttyS0,115200n8 panic=-1"

needs_loop = pytest.mark.skipif(not loop_attaches(), reason="loop devices do not work here")

VARIANTS = [
    pytest.param("rootless", "none", "legacy-bios", id="rootless-flat"),
    pytest.param("rootless", "mbr", "legacy-bios", id="rootless-mbr"),
    pytest.param("rootless", "gpt", "legacy-bios", id="rootless-gpt"),
    pytest.param("rootless", "gpt", "uefi", id="rootless-uefi"),
    pytest.param("loop", "none", "legacy-bios", id="loop-flat", marks=needs_loop),
    pytest.param("loop", "mbr", "legacy-bios", id="loop-mbr", marks=needs_loop),
    pytest.param("loop", "gpt", "legacy-bios", id="loop-gpt", marks=needs_loop),
    # UEFI with the loop builder differs from loop-gpt only in what the (shared)
    # staging step copies; its boot would cost 10 s of the suite's budget.
]


def _bundle_vol(
    tree: RootTree, out: Path, keys: BootKeys, builder: str, table: str, mode: str
) -> dict[str, object]:
    """Runs bundle-vol (the rootless builder as nobody, as in CI containers)."""
    done = cli(
        [
            "-v",
            str(tree.root),
            "-d",
            str(out),
            "-p",
            "boot.img",
            "--builder",
            builder,
            "--fs-type",
            "ext4",
            "--size",
            "auto",
            "--label",
            LABEL,
            "--generate-fstab=modern",
            "-P",
            table,
            "--boot-mode",
            mode,
            "--no-inherit",
            "-c",
            str(keys.cert),
            "-k",
            str(keys.key),
            "--ec2cert",
            str(keys.ec2_cert),
            "-u",
            "123456789012",
            "-r",
            "x86_64",
            "--json",
        ],
        unprivileged=builder == "rootless",
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _expected_root(image: Path, table: str) -> tuple[str, str | None]:
    """The root device the guest must see, and the PARTUUID GRUB must pass,
    read from the restored image with sfdisk (not with amibundle's reader)."""
    if table == "none":
        return "nvme0n1", None
    layout = json.loads(
        subprocess.run(
            ["sfdisk", "--json", str(image)], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]
    if layout["label"] == "dos":
        return "nvme0n1p1", f"{int(layout['id'], 16):08x}-01"
    first = next(p for p in layout["partitions"] if p["node"].endswith(f"{image.name}1"))
    return "nvme0n1p1", first["uuid"].lower()


def _check_report(run: BootRun, tree: RootTree, table: str, mode: str, image: Path) -> None:
    assert "begin" in run.report and "end" in run.report, f"no report from init:\n{run.tail()}"
    assert run.one("kernel") == tree.kernel_version
    device, partuuid = _expected_root(image, table)
    cmdline = run.one("cmdline").split()
    if partuuid is not None:
        # GRUB (not qemu) started the image's own kernel with the partition's PARTUUID.
        assert f"BOOT_IMAGE=/boot/vmlinuz-{tree.kernel_version}" in cmdline
        assert f"root=PARTUUID={partuuid}" in cmdline
    assert run.one("firmware") == ("uefi" if mode == "uefi" else "bios")
    assert run.one("console") == CONSOLE
    assert run.one("rootdev") == device
    fs_type, options = run.one("rootmount").split()
    assert fs_type == "ext4" and "ro" in options.split(","), run.one("rootmount")
    files = dict(line.split(" ", 1) for line in run.report.get("file", []))
    assert files == tree.expected_files()
    assert files["/srv/check/owned"].split()[1] == f"{OWNER[0]}:{OWNER[1]}"
    assert run.one("fstab") == f"LABEL={LABEL} /dev/{device}"
    assert "rw" in run.one("remount").split()[1].split(",")


@pytest.mark.parametrize(("builder", "table", "mode"), VARIANTS)
def test_bundled_volume_boots(
    root_tree: RootTree,
    boot_kernel: Path,
    boot_keys: BootKeys,
    out_dir: Path,
    builder: str,
    table: str,
    mode: str,
    record_property: Callable[[str, object], None],
) -> None:
    need(missing_pieces(uefi=mode == "uefi"), "apt-get install qemu-system-x86 ovmf")
    out = out_dir / "bundle"
    out.mkdir()
    out.chmod(0o777)
    result = _bundle_vol(root_tree, out, boot_keys, builder, table, mode)
    assert (result["builder"], result["partition"], result["boot_mode"]) == (builder, table, mode)
    bundle = result["bundle"]
    assert isinstance(bundle, dict)
    restored = amibundle.unbundle(
        Path(str(bundle["manifest_path"])),
        private_key=boot_keys.key,
        destination=out_dir,
        cert=boot_keys.cert,
    ).image_path
    if mode == "uefi":
        assert read_table(restored).of_type(ESP_TYPE) is not None
    run = boot(
        restored,
        out_dir,
        uefi=mode == "uefi",
        kernel=boot_kernel if table == "none" else None,
        append=FLAT_APPEND,
    )
    record_property(f"{BOOT_TIME}{builder}-{table}-{mode}", run.seconds)
    _check_report(run, root_tree, table, mode, restored)
