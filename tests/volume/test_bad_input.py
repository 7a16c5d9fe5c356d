"""What goes wrong: each case gives one clear line, a non-zero status, and
leaves no image, staging tree, mount or loop device behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from amibundle import tools
from amibundle.errors import OutputExistsError, UsageError, VolumeError
from amibundle.volume.bundle import bundle_volume
from amibundle.volume.plan import loop_available
from tests.support.ext2read import read_tree
from tests.support.volumes import REPO, SyntheticVolume, cli

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own temp folder, so a mount another run left (or is using) is not ours."""
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    return private


def _our_mount_running() -> bool:
    return f"{tempfile.gettempdir()}/amibundle-mnt-" in Path("/proc/self/mountinfo").read_text()


def _leftovers(out: Path) -> list[str]:
    found = [p.name for p in out.iterdir()]
    if _our_mount_running():
        found.append("a mount")
    if os.geteuid() == 0:
        loops = subprocess.run(
            ["losetup", "-a"],
            capture_output=True,
            text=True,
            env={"PATH": "/usr/sbin:/sbin:/usr/bin:/bin"},
        ).stdout
        if str(out) in loops:
            found.append("a loop device")
    return found


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("hint:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_volume_missing(out_dir: Path) -> None:
    done = cli(["-v", "/nonexistent/volume", "-d", str(out_dir), "--clone-only"])
    assert done.returncode == 2
    assert "--volume" in done.stderr and "no such directory" in done.stderr
    with pytest.raises(UsageError, match="does not exist"):
        bundle_volume(Path("/nonexistent/volume"), destination=out_dir, metadata=None, keys=None)


def test_size_too_small_says_by_how_much(synthetic: SyntheticVolume, out_dir: Path) -> None:
    done = cli(
        [
            "-v",
            str(synthetic.root),
            "-d",
            str(out_dir),
            "--clone-only",
            "-s",
            "8",
            "--builder",
            "rootless",
            "--fs-type",
            "ext4",
            "--no-inherit",
        ]
    )
    assert done.returncode == 1
    line = _one_error_line(done.stderr)
    assert "does not fit" in line and "MiB short" in line
    assert re.search(r"hint: use --size \d+, or --size auto", done.stderr)
    assert _leftovers(out_dir) == []


def test_size_over_the_limit(synthetic: SyntheticVolume, out_dir: Path) -> None:
    done = cli(
        [
            "--classic",
            "-v",
            str(synthetic.root),
            "-d",
            str(out_dir),
            "--clone-only",
            "-s",
            "10241",
            "--no-inherit",
        ]
    )
    assert done.returncode == 254  # not a usage error: classic-cli.md §3.10
    assert "10240 MiB limit" in done.stderr
    assert "--help" not in done.stderr


def test_destination_inside_the_volume(world_dir: Path) -> None:
    """Inside an excluded folder, or anywhere in the volume, the output is never
    copied into itself; an -i that would pull it in is refused."""
    volume = world_dir / "dest-in-volume"
    (volume / "etc").mkdir(parents=True)
    (volume / "etc/hostname").write_text("x\n")
    for inside in ("mnt/out", "srv/out"):
        out = volume / inside
        out.mkdir(parents=True)
        (out / "notes.txt").write_text("an unrelated file\n")
        result = bundle_volume(
            volume,
            destination=out,
            metadata=None,
            keys=None,
            size_mib=16,
            builder="rootless",
            fs_type="ext4",
            inherit=False,
        )
        tree = read_tree(str(result.image_path))
        assert "etc/hostname" in tree
        assert not [r for r in tree if r.startswith("mnt/")]
    assert [r for r in tree if r.startswith("srv/out/")] == ["srv/out/notes.txt"]
    with pytest.raises(UsageError, match="would copy itself"):
        bundle_volume(
            volume,
            destination=volume / "srv/out",
            include=["/srv/out/image"],
            metadata=None,
            keys=None,
            size_mib=16,
            builder="rootless",
            fs_type="ext4",
            inherit=False,
            force=True,
        )


def test_script_failing(synthetic: SyntheticVolume, out_dir: Path, world_dir: Path) -> None:
    script = world_dir / "fails.sh"
    script.write_text("#!/bin/sh\necho 'cannot customise' >&2\nexit 7\n")
    script.chmod(0o755)
    done = cli(
        [
            "-v",
            str(synthetic.root),
            "-d",
            str(out_dir),
            "--clone-only",
            "-s",
            "40",
            "--builder",
            "rootless",
            "--fs-type",
            "ext4",
            "--no-inherit",
            "-S",
            str(script),
        ]
    )
    assert done.returncode == 1
    line = _one_error_line(done.stderr)
    assert "exit 7" in line and "cannot customise" in line and "fails.sh" in line
    assert _leftovers(out_dir) == []


def test_keep_partial(synthetic: SyntheticVolume, out_dir: Path, world_dir: Path) -> None:
    script = world_dir / "fails2.sh"
    script.write_text("#!/bin/sh\nexit 3\n")
    script.chmod(0o755)
    done = cli(
        [
            "-v",
            str(synthetic.root),
            "-d",
            str(out_dir),
            "--clone-only",
            "-s",
            "40",
            "--builder",
            "rootless",
            "--fs-type",
            "ext4",
            "--no-inherit",
            "-S",
            str(script),
            "--keep-partial",
        ]
    )
    assert done.returncode == 1
    kept = [p for p in out_dir.iterdir() if p.name.endswith(".partial")]
    assert len(kept) == 1 and kept[0].stat().st_size == 40 << 20


def test_tool_missing(
    synthetic: SyntheticVolume, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(tools, "_SBIN", ())
    with pytest.raises(tools.ToolNotFound) as caught:
        bundle_volume(
            synthetic.root,
            destination=out_dir,
            metadata=None,
            keys=None,
            size_mib=40,
            builder="rootless",
            fs_type="ext4",
            inherit=False,
        )
    assert str(caught.value) == "mke2fs not found; install e2fsprogs"
    assert _leftovers(out_dir) == []


def test_existing_image_refused_then_forced(synthetic: SyntheticVolume, out_dir: Path) -> None:
    (out_dir / "image").write_text("old")
    with pytest.raises(OutputExistsError, match="already exists"):
        bundle_volume(
            synthetic.root,
            destination=out_dir,
            metadata=None,
            keys=None,
            size_mib=40,
            builder="rootless",
            fs_type="ext4",
            inherit=False,
        )
    result = bundle_volume(
        synthetic.root,
        destination=out_dir,
        metadata=None,
            keys=None,
        size_mib=40,
        builder="rootless",
        fs_type="ext4",
        inherit=False,
        force=True,
    )
    assert result.image_path.stat().st_size == 40 << 20


def test_rootless_refuses_other_file_systems(synthetic: SyntheticVolume, out_dir: Path) -> None:
    with pytest.raises(VolumeError, match="ext2/ext3/ext4 only"):
        bundle_volume(
            synthetic.root,
            destination=out_dir,
            metadata=None,
            keys=None,
            size_mib=40,
            builder="rootless",
            fs_type="xfs",
            inherit=False,
        )


def _many_files(root: Path) -> Path:
    volume = root / "many"
    for folder in range(40):
        base = volume / f"d{folder}"
        base.mkdir(parents=True)
        for index in range(150):
            (base / f"f{index}").write_bytes(b"x" * 2048)
    return volume


@pytest.mark.parametrize("builder", ["rootless", "loop"])
def test_ctrl_c_mid_copy_leaves_nothing(world_dir: Path, out_dir: Path, builder: str) -> None:
    if builder == "loop" and not loop_available()[0]:
        pytest.skip(f"loop builder unavailable: {loop_available()[1]}")
    volume = world_dir / "many" if (world_dir / "many").exists() else _many_files(world_dir)
    command = [
        sys.executable,
        "-m",
        "tests.support.volume_runner",
        "-v",
        str(volume),
        "-d",
        str(out_dir),
        "--clone-only",
        "-s",
        "64",
        "--builder",
        builder,
        "--fs-type",
        "ext4",
        "--no-inherit",
        "-q",
    ]
    child = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 30
    copying = False
    while time.monotonic() < deadline and child.poll() is None:
        if builder == "loop":
            copying = _our_mount_running()
        else:
            copying = any(p.name.endswith(".staging") for p in out_dir.iterdir())
        if copying:
            time.sleep(0.05)  # well inside the copy of 6000 files
            child.send_signal(signal.SIGINT)
            break
        time.sleep(0.002)
    _out, err = child.communicate(timeout=60)
    if not copying:
        pytest.fail(f"the copy was never seen running (status {child.returncode}): {err}")
    assert child.returncode == 130, err
    assert "interrupted" in err
    assert _leftovers(out_dir) == []
