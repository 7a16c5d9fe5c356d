"""The pieces of the loop-free boot loader, without booting: partition layouts,
the kernel and module choice, grub.cfg, the boot-sector patch, staging that
never writes through the volume's hard links, and the errors before a copy."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import amibundle
from amibundle.errors import BootError, UsageError
from amibundle.volume import grub
from amibundle.volume.boot import (
    BIOS_BOOT_TYPE,
    ESP_SECTORS,
    ESP_TYPE,
    BootMode,
    BootSetup,
    find_kernel,
    gpt_layout,
    prepare_boot,
    read_table,
    stage_boot_files,
)
from amibundle.volume.bundle import partition_for
from amibundle.volume.grub import GrubPlatform, KernelFiles, point_at_core
from amibundle.volume.plan import PartitionTable
from tests.support.volumes import cli

UUID = "0f2b8a36-6d2c-4b43-9d7e-0123456789ab"


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- modes and layouts ------------------------------------------------------------------


def test_boot_mode_values_and_refusal(tmp_path: Path) -> None:
    assert BootMode("uefi") is BootMode.UEFI and BootMode.UEFI == "uefi"
    assert BootMode.UEFI.platform.target == "x86_64-efi"
    assert BootMode.LEGACY_BIOS.platform.target == "i386-pc"
    # The library takes the Enum or its value; anything else names the parameter.
    with pytest.raises(UsageError, match="legacy-bios, uefi") as caught:
        amibundle.bundle_volume(
            tmp_path, metadata=None, keys=None, destination=tmp_path, boot_mode="bios"
        )
    assert caught.value.param == "boot_mode" and str(caught.value).startswith("boot_mode=")
    assert not list(tmp_path.iterdir())


def test_uefi_needs_gpt() -> None:
    notes: list[str] = []
    uefi = BootMode.UEFI
    assert partition_for(None, Path("/srv"), notes.append, boot_mode=uefi) is PartitionTable.GPT
    assert partition_for(None, Path("/srv"), notes.append) is PartitionTable.NONE
    assert partition_for(PartitionTable.GPT, Path("/srv"), notes.append, boot_mode=uefi) is (
        PartitionTable.GPT
    )
    for table in (PartitionTable.MBR, PartitionTable.NONE):
        with pytest.raises(UsageError, match="needs a GPT image") as caught:
            partition_for(table, Path("/srv"), notes.append, boot_mode=uefi)
        assert caught.value.param == "boot_mode"
        assert f"not a partition table of type {table.value}" in str(caught.value)


@pytest.mark.parametrize("mode", list(BootMode))
def test_gpt_layouts(tmp_path: Path, mode: BootMode) -> None:
    image = tmp_path / "disk"
    with open(image, "wb") as handle:
        handle.truncate(64 << 20)
    subprocess.run(["sgdisk", "--clear", *gpt_layout(mode), str(image)], check=True)
    table = read_table(image)
    assert table.label == "gpt"
    root, boot_part = table.number(1), table.number(128)
    assert boot_part.start == 2048
    if mode is BootMode.UEFI:
        assert boot_part.type == ESP_TYPE and boot_part.sectors == ESP_SECTORS
        assert table.of_type(BIOS_BOOT_TYPE) is None
    else:
        assert boot_part.type == BIOS_BOOT_TYPE and boot_part.sectors == 2048
    assert root.start == boot_part.start + boot_part.sectors
    # The PARTUUID the kernel will look for is the GUID sgdisk gave partition 1.
    info = subprocess.run(
        ["sgdisk", "-i", "1", str(image)], capture_output=True, text=True, check=True
    ).stdout
    guid = next(line for line in info.splitlines() if "unique GUID" in line).split()[-1]
    assert table.root_partuuid() == guid.lower()


def test_mbr_partuuid_is_the_disk_signature(tmp_path: Path) -> None:
    image = tmp_path / "disk"
    with open(image, "wb") as handle:
        handle.truncate(16 << 20)
    script = "label: dos\nlabel-id: 0x00c0ffee\n\nstart=2048, type=83, bootable\n"
    subprocess.run(["sfdisk", "--quiet", str(image)], input=script, text=True, check=True)
    with open(image, "rb") as handle:
        handle.seek(0x1B8)
        (signature,) = struct.unpack("<I", handle.read(4))
    assert read_table(image).root_partuuid() == f"{signature:08x}-01" == "00c0ffee-01"


# --- kernel, modules, configuration ----------------------------------------------------


def test_newest_kernel_and_its_initrd(tmp_path: Path) -> None:
    for name in ("vmlinuz-5.10.0-9-amd64", "vmlinuz-5.10.0-10-amd64", "vmlinuz-4.19.0-1"):
        _touch(tmp_path / "boot" / name)
    _touch(tmp_path / "boot/initrd.img-5.10.0-10-amd64")
    _touch(tmp_path / "boot/initrd.img-5.10.0-9-amd64")
    (tmp_path / "boot/vmlinuz-9.9").symlink_to("/etc/passwd")  # links do not count
    found = find_kernel(tmp_path)
    assert found == KernelFiles(
        "5.10.0-10-amd64", "/boot/vmlinuz-5.10.0-10-amd64", "/boot/initrd.img-5.10.0-10-amd64"
    )


def test_red_hat_initramfs_and_no_initrd(tmp_path: Path) -> None:
    _touch(tmp_path / "boot/vmlinuz-6.1.1-1.amzn2023.x86_64")
    _touch(tmp_path / "boot/initramfs-6.1.1-1.amzn2023.x86_64.img")
    assert find_kernel(tmp_path).initrd == "/boot/initramfs-6.1.1-1.amzn2023.x86_64.img"
    other = tmp_path / "other"
    _touch(other / "boot/vmlinuz-6.1")
    assert find_kernel(other).initrd is None


def test_no_kernel_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BootError, match="no kernel") as caught:
        find_kernel(tmp_path)
    # Python callers read the parameter; the command line reads its flag.
    assert caught.value.param == "bootloader"
    assert caught.value.hint is not None and "bootloader=False" in caught.value.hint
    hint = caught.value.render_hint(lambda param, off: "--no-bootloader" if off else "?")
    assert hint is not None and "--no-bootloader" in hint


def test_grub_config_finds_root_by_uuid() -> None:
    kernel = KernelFiles("6.1", "/boot/vmlinuz-6.1", "/boot/initrd.img-6.1")
    text = grub.grub_config(uuid=UUID, fs_type="ext4", kernel=kernel, root_device=f"UUID={UUID}")
    lines = [line.strip() for line in text.splitlines()]
    assert f"search --no-floppy --fs-uuid --set=root {UUID}" in lines
    assert "insmod ext2" in lines and "set timeout=0" in lines
    linux = next(line for line in lines if line.startswith("linux "))
    assert linux.split()[1:4] == ["/boot/vmlinuz-6.1", f"root=UUID={UUID}", "ro"]
    assert "console=ttyS0,115200n8" in linux.split()
    assert "initrd /boot/initrd.img-6.1" in lines
    bare = grub.grub_config(
        uuid=UUID,
        fs_type="xfs",
        kernel=KernelFiles("6.1", "/boot/vmlinuz-6.1", None),
        root_device="x",
    )
    assert "insmod xfs" in bare and "initrd" not in bare


def test_volume_modules_win_over_the_hosts(tmp_path: Path) -> None:
    own = tmp_path / "usr/lib/grub/i386-pc"
    for name in grub.BIOS.required:
        _touch(own / name)
    _touch(tmp_path / "boot/vmlinuz-6.1")
    setup = prepare_boot(tmp_path, BootMode.LEGACY_BIOS, uuid=UUID, fs_type="ext4")
    assert setup.modules == own


def test_missing_grub_names_the_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GrubPlatform, "host_modules", lambda self: tmp_path / "none")
    _touch(tmp_path / "boot/vmlinuz-6.1")
    with pytest.raises(BootError, match="no GRUB 2 for i386-pc") as caught:
        prepare_boot(tmp_path, BootMode.LEGACY_BIOS, uuid=UUID, fs_type="ext4")
    assert "grub-pc-bin grub2-common" in str(caught.value.hint)
    assert caught.value.param == "bootloader"
    with pytest.raises(BootError, match="x86_64-efi") as caught:
        prepare_boot(tmp_path, BootMode.UEFI, uuid=UUID, fs_type="ext4")
    assert "grub-efi-amd64-bin" in str(caught.value.hint)
    # Without a boot loader nothing of GRUB is needed.
    assert prepare_boot(tmp_path, BootMode.UEFI, uuid=UUID, fs_type="ext4", bootloader=False)


def test_cli_without_grub_mkimage_says_what_to_install(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    _touch(volume / "boot/vmlinuz-6.1")
    out = tmp_path / "out"
    out.mkdir()
    argv = ["-v", str(volume), "-d", str(out), "--clone-only", "--no-inherit", "-P", "mbr"]
    argv += ["--builder", "rootless", "--fs-type", "ext4", "-s", "32"]
    done = cli(argv, env={"PATH": str(tmp_path / "empty")})  # grub-mkimage lives in /usr/bin
    assert done.returncode == 1
    assert "grub-mkimage not found; install grub-pc-bin grub2-common" in done.stderr
    assert not list(out.iterdir())


# --- writing ------------------------------------------------------------------------------


@given(
    boot_sector=st.binary(min_size=512, max_size=512),
    core=st.binary(min_size=512, max_size=4096),
    sector=st.integers(min_value=1, max_value=(1 << 40)),
)
def test_boot_code_points_at_the_core_image(boot_sector: bytes, core: bytes, sector: int) -> None:
    code, patched = point_at_core(boot_sector, core, sector)
    assert len(code) == 440 and len(patched) == len(core)
    assert struct.unpack_from("<Q", code, 0x5C)[0] == sector
    assert code[0x66:0x68] == b"\x90\x90"
    assert code[:0x5C] == boot_sector[:0x5C] and code[0x68:] == boot_sector[0x68:440]
    assert code[0x64:0x66] == boot_sector[0x64:0x66]
    assert struct.unpack_from("<Q", patched, 500)[0] == sector + 1
    assert patched[:500] == core[:500] and patched[508:] == core[508:]


def test_staging_never_writes_through_hard_links(tmp_path: Path) -> None:
    """In the rootless builder's staging tree files are hard links to the volume."""
    volume, staging = tmp_path / "volume", tmp_path / "staging"
    old_cfg = _touch(volume / "boot/grub/grub.cfg", b"the volume's own\n")
    old_mod = _touch(volume / "boot/grub/i386-pc/normal.mod", b"another GRUB\n")
    _touch(volume / "boot/vmlinuz-6.1")
    for path in (old_cfg, old_mod, volume / "boot/vmlinuz-6.1"):
        target = staging / path.relative_to(volume)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)
    modules = Path("/usr/lib/grub/i386-pc")
    if not modules.is_dir():
        pytest.skip("grub-pc-bin is not installed")
    setup = BootSetup(BootMode.LEGACY_BIOS, UUID, "ext4", modules)
    image = tmp_path / "disk"
    with open(image, "wb") as handle:
        handle.truncate(8 << 20)
    subprocess.run(
        ["sfdisk", "--quiet", str(image)], input="label: dos\nstart=2048\n", text=True, check=True
    )
    created = stage_boot_files(staging, setup, read_table(image))
    assert old_cfg.read_bytes() == b"the volume's own\n"
    assert old_mod.read_bytes() == b"another GRUB\n"
    assert (staging / "boot/grub/grub.cfg.old").read_bytes() == b"the volume's own\n"
    assert (staging / "boot/grub/i386-pc/normal.mod").read_bytes() == (
        modules / "normal.mod"
    ).read_bytes()
    assert "boot/grub/grub.cfg" in created and "boot/grub/i386-pc" in created
    assert created.index("boot/grub/i386-pc") < created.index("boot/grub/i386-pc/normal.mod")
    assert "root=PARTUUID=" in (staging / "boot/grub/grub.cfg").read_text()


def test_uefi_without_boot_loader_gets_an_empty_system_partition(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    _touch(volume / "etc/hostname", b"flat\n")
    out = tmp_path / "out"
    out.mkdir()
    argv = ["-v", str(volume), "-d", str(out), "--clone-only", "--no-inherit", "--json"]
    argv += ["--builder", "rootless", "--fs-type", "ext4", "-s", "48"]
    done = cli([*argv, "--boot-mode", "uefi", "--no-bootloader"])
    assert done.returncode == 0, done.stderr
    image = out / "image"
    esp = read_table(image).of_type(ESP_TYPE)
    assert esp is not None
    listing = subprocess.run(
        ["mdir", "-i", f"{image}@@{esp.start * 512}", "::/"],
        capture_output=True,
        text=True,
        env={**os.environ, "MTOOLS_SKIP_CHECK": "1"},
    )
    assert listing.returncode == 0, listing.stderr
    assert "Volume in drive : is EFI" in listing.stdout and "No files" in listing.stdout
    assert read_table(image).number(1).start == esp.start + esp.sectors


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--boot-mode", "bios"], "expected one of legacy-bios, uefi"),
        (["--boot-mode", "u", "-P", "mbr"], "--boot-mode uefi needs a GPT image"),
    ],
)
def test_cli_boot_mode_refusals(tmp_path: Path, extra: list[str], message: str) -> None:
    _touch(tmp_path / "vol/boot/vmlinuz-6.1")
    argv = ["-v", str(tmp_path / "vol"), "-d", str(tmp_path), "--clone-only", "--no-inherit"]
    done = cli([*argv, "--builder", "rootless", "--fs-type", "ext4", "-s", "32", *extra])
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "image").exists()


def test_staging_refuses_a_linked_boot_folder(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    _touch(tmp_path / "elsewhere/vmlinuz-6.1")
    _touch(staging / "boot/vmlinuz-6.1")
    (staging / "boot/grub").symlink_to(tmp_path / "elsewhere")
    setup = BootSetup(BootMode.LEGACY_BIOS, UUID, "ext4", tmp_path)
    image = tmp_path / "disk"
    with open(image, "wb") as handle:
        handle.truncate(4 << 20)
    subprocess.run(["sfdisk", "--quiet", str(image)], input="start=2048\n", text=True, check=True)
    with pytest.raises(BootError, match="symbolic link"):
        stage_boot_files(staging, setup, read_table(image))
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["vmlinuz-6.1"]
