"""What is copied: the rsync-style rules, cross-checked against real rsync, the
mount table, and the size measurement."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amibundle.errors import UsageError
from amibundle.volume.rules import (
    DEFAULT_FILTER,
    MountPoint,
    Pattern,
    check_patterns_exist,
    measure,
    mount_table,
    non_local_mounts_below,
    rules_for_volume,
    walk,
)
from tests.support.errors import cli_text
from tests.support.volumes import ABSENT, EXCLUDES, INCLUDES, SyntheticVolume


@pytest.mark.parametrize(
    ("pattern", "path", "is_dir", "matches"),
    [
        ("*/#*#", "etc/#auto#", False, True),
        ("*/#*#", "#top#", False, False),  # needs a folder, as in rsync
        ("*.pem", "a/b/key.pem", False, True),
        ("*.pem", "a/key.pem.bak", False, False),
        ("*id_rsa*", "home/u/.ssh/id_rsa.pub", False, True),
        ("*/.ssh/authorized_keys", "root/.ssh/authorized_keys", False, True),
        ("*/.ssh/authorized_keys", "home/u/x/.ssh/authorized_keys", False, True),
        ("/var/cache", "var/cache", True, True),
        ("/var/cache", "srv/var/cache", True, False),
        ("var/cache", "srv/var/cache", True, True),
        ("cache", "srv/var/cache", True, True),
        ("/var/*/x", "var/a/x", False, True),
        ("/var/*/x", "var/a/b/x", False, False),
        ("/var/**/x", "var/a/b/x", False, True),
        ("logs/", "var/logs", False, False),  # a trailing / matches folders only
        ("logs/", "var/logs", True, True),
        ("/data/[ab]?", "data/a1", False, True),
        ("/data/[!ab]?", "data/a1", False, False),
        ("/new\nline", "new\nline", False, True),
    ],
)
def test_patterns(pattern: str, path: str, is_dir: bool, matches: bool) -> None:
    assert Pattern.parse(pattern).matches(path, is_dir) is matches


def test_includes_win_over_excludes_and_filter(tmp_path: Path) -> None:
    rules = rules_for_volume(
        tmp_path, excludes=["/var"], includes=["/var/keep", "key.pem"], mounts=()
    )
    assert rules.decide("var/keep", False)
    assert rules.decide("a/key.pem", False)
    assert not rules.decide("var", True)
    assert not rules.decide("b/other.pem", False)
    assert rules.leads_to_include("var")
    assert not rules_for_volume(tmp_path, use_filter=False, mounts=()).filters


def test_walk_of_synthetic_volume(synthetic: SyntheticVolume) -> None:
    rules = rules_for_volume(synthetic.root, excludes=EXCLUDES, includes=INCLUDES, mounts=())
    found = [entry.rel for entry in walk(synthetic.root, rules)]
    assert found == sorted(set(found), key=found.index)  # no duplicates
    assert set(found) == set(synthetic.expected())
    for absent in ABSENT:
        assert absent not in found
    assert ".dotfile" in found and ".dotdir/inner" in found


def _rsync_selection(volume: Path, filters: list[str]) -> set[str]:
    """What rsync itself would copy with the same ordered filter rules."""
    done = subprocess.run(
        ["rsync", "-a", "--dry-run", "--out-format=%n", *filters, f"{volume}/", "/nonexistent-x/"],
        capture_output=True,
        check=True,
    )
    names = done.stdout.decode("utf-8", "surrogateescape").split("\n")
    # rsync writes unprintable bytes (a newline in a name) as \#ooo.
    names = [re.sub(r"\\#([0-7]{3})", lambda m: chr(int(m.group(1), 8)), n) for n in names]
    return {n.rstrip("/") for n in names if n and n not in ("./", ".")}


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_same_selection_as_rsync(synthetic: SyntheticVolume) -> None:
    excludes = ["/proc", "/sys", "/dev", "/mnt", "/media", *EXCLUDES]
    filters = [f"--include={p}" for p in ("/etc/keep.pem",)]
    filters += [f"--exclude={p}" for p in (*excludes, *DEFAULT_FILTER)]
    expected = _rsync_selection(synthetic.root, filters)
    rules = rules_for_volume(
        synthetic.root, excludes=EXCLUDES, includes=["/etc/keep.pem"], mounts=()
    )
    assert {e.rel for e in walk(synthetic.root, rules)} == expected


_names = st.sampled_from(
    [
        "a",
        "b.pem",
        "c~",
        ".#d",
        "#e#",
        "f.swp",
        "id_rsa",
        "g",
        ".ssh",
        "authorized_keys",
        ".bash_history",
        "x.jks",
        "h i",
    ]
)


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    paths=st.lists(st.lists(_names, min_size=1, max_size=4), min_size=1, max_size=12),
    extra=st.lists(st.sampled_from(["/a", "a", "/g/a", "*.pem", "g/", "/b.pem", "h*"]), max_size=2),
)
def test_filter_agrees_with_rsync_on_random_trees(
    tmp_path_factory: pytest.TempPathFactory, paths: list[list[str]], extra: list[str]
) -> None:
    root = tmp_path_factory.mktemp("rand")
    for parts in paths:
        target = root.joinpath(*parts)
        if any(p.is_file() for p in target.parents if p != root and root in p.parents):
            continue
        if target.is_dir():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("x")
    filters = [f"--exclude={p}" for p in (*extra, *DEFAULT_FILTER)]
    rules = rules_for_volume(root, excludes=extra, mounts=(), own_paths=[Path("/nonexistent")])
    rules = type(rules)(
        excludes=tuple(
            p for p in rules.excludes if p.text not in ("/dev", "/media", "/mnt", "/proc", "/sys")
        ),
        filters=rules.filters,
    )
    assert {e.rel for e in walk(root, rules)} == _rsync_selection(root, filters)


def test_mount_table_and_non_local_mounts(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:21 / / rw - ext4 /dev/xvda1 rw\n"
        "23 22 0:22 / /proc rw - proc proc rw\n"
        "24 22 0:23 / /srv/nfs\\040share rw shared:1 - nfs server:/x rw\n"
        "25 22 0:24 / /home rw - xfs /dev/xvdb rw\n"
        "26 22 0:25 / /run/user/1000 rw - fuse.gvfs gvfs rw\n"
    )
    mounts = mount_table(info)
    assert mounts[2] == MountPoint(Path("/srv/nfs share"), "nfs", "server:/x", "0:23")
    assert non_local_mounts_below(Path("/"), mounts) == ["proc", "run/user/1000", "srv/nfs share"]
    assert non_local_mounts_below(Path("/srv"), mounts) == ["nfs share"]
    assert len(mount_table(Path("/proc/self/mountinfo"))) > 0


def test_non_local_mounts_excluded_unless_all(tmp_path: Path) -> None:
    (tmp_path / "share/x").mkdir(parents=True)
    mounts = [MountPoint(tmp_path / "share", "nfs", "srv:/", "0:1")]
    rules = rules_for_volume(tmp_path, mounts=mounts)
    assert not rules.decide("share", True)
    assert rules_for_volume(tmp_path, mounts=mounts, all_mounts=True).decide("share", True)


def test_own_outputs_excluded_and_never_included(tmp_path: Path) -> None:
    out = tmp_path / "srv/out"
    own = [out / "root.img", out / ".root.img.*", out / "root.img.part.*"]
    rules = rules_for_volume(tmp_path, own_paths=own, mounts=())
    assert rules.decide("srv/out", True)  # the folder itself is copied, as in the classic
    assert rules.decide("srv/out/other", False)
    for name in ("root.img", ".root.img.x1.partial", ".root.img.x2.staging", "root.img.part.07"):
        assert not rules.decide(f"srv/out/{name}", False), name
    assert rules_for_volume(tmp_path, own_paths=own, includes=["/srv"], mounts=())
    with pytest.raises(UsageError, match="would copy itself"):
        rules_for_volume(tmp_path, own_paths=own, includes=["*.img"], mounts=())


def test_patterns_must_exist(synthetic: SyntheticVolume) -> None:
    check_patterns_exist(synthetic.root, ["/etc/host*", "anything-unanchored"], "exclude")
    with pytest.raises(UsageError, match="exclude= /no/such: nothing in the volume") as err:
        check_patterns_exist(synthetic.root, ["/no/such"], "exclude")
    assert cli_text(err, "bundle_vol").startswith("--exclude /no/such: nothing in the volume")


def test_measure_counts_hard_links_once_and_holes_not_at_all(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(10000))
    os.link(data, tmp_path / "link")
    with open(tmp_path / "sparse", "wb") as handle:
        handle.truncate(64 << 20)
    totals = measure(walk(tmp_path, rules_for_volume(tmp_path, mounts=())))
    assert totals.entries == 3 and totals.inodes == 2 and totals.hard_links == 1
    assert totals.data_bytes == 12288  # 10000 bytes in 4 KiB blocks; the sparse file has none
