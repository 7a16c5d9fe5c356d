"""Time bundle-vol on a 1 GiB tree with each builder.

    .venv/bin/python benchmarks/volume.py [--size-mib 1024] [--keep]

Builds a synthetic root-like tree in benchmarks/work/voltree (once): 70% of
the bytes in 20,000 small files (4-96 KiB, about half compressible text),
the rest in a few large files, plus hard links and symlinks. Then, for each
builder that can run here (rootless always; loop as root with loop devices),
it times ``bundle-vol --clone-only`` (the image alone) and a full
``bundle-vol`` (image, gzip, AES, parts, manifest), with a warm page cache.
The rootless builder also runs as an unprivileged user when started as root
(every file then takes the copy path and a debugfs owner fixup).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "work"
MiB = 1 << 20


def make_tree(root: Path, total: int) -> None:
    rng = random.Random(5)
    text = b"".join(b"line %d of a configuration file, key=value\n" % i for i in range(4000))
    small_budget = total * 7 // 10
    written = 0
    index = 0
    while written < small_budget:
        size = rng.randint(4, 96) << 10
        folder = root / f"usr/share/pkg{index // 200:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        half = size // 2
        (folder / f"file{index:05d}").write_bytes(rng.randbytes(half) + text[: size - half])
        written += size
        index += 1
    big = (total - written) // 4
    for number in range(4):
        path = root / f"usr/lib/big{number}.so"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            for _ in range(big // MiB):
                handle.write(rng.randbytes(MiB // 2) + text[: MiB // 2])
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    for number in range(200):
        os.link(root / "usr/share/pkg000/file00000", root / f"usr/share/pkg000/link{number}")
        (root / f"usr/share/pkg000/sym{number}").symlink_to(f"file{number:05d}")


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def warm(root: Path) -> None:
    subprocess.run(["tar", "-cf", "/dev/null", "-C", str(root), "."], check=True)


def run(args: list[str], *, unprivileged: bool = False) -> float:
    command = [sys.executable, "-m", "tests.support.volume_runner", *args, "-q"]
    if unprivileged:
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *command]
    started = time.monotonic()
    done = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PATH": os.environ["PATH"] + ":/usr/sbin:/sbin",
        },
    )
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"bundle-vol failed: {done.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--keep", action="store_true", help="keep the tree for the next run")
    options = parser.parse_args()
    tree = WORK / "voltree"
    if not (tree / "etc/fstab").exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        make_tree(tree, options.size_mib * MiB)
    WORK.chmod(0o755)
    HERE.chmod(0o755)
    sys.path.insert(0, str(REPO))
    from amibundle import keygen
    from amibundle.volume.plan import loop_available

    keys = Path(tempfile.mkdtemp(prefix="amibundle-bench-keys-"))
    identity = keygen(keys / "pk.pem", keys / "cert.pem")
    os.environ["AMIBUNDLE_EC2_CERT"] = str(identity.certificate)
    data = tree_bytes(tree)
    builders = ["rootless"] + (["loop"] if loop_available()[0] else [])
    results = {"tree_bytes": data, "cores": os.cpu_count(), "runs": []}
    common = ["-v", str(tree), "--size", "auto", "--fs-type", "ext4", "--no-inherit", "--force"]
    keys_args = [
        "-c",
        str(identity.certificate),
        "-k",
        str(identity.private_key),
        "-u",
        "123456789012",
        "-r",
        "x86_64",
        "--batch",
    ]
    cases = [(b, False) for b in builders]
    if os.geteuid() == 0 and shutil.which("setpriv"):
        cases.insert(1, ("rootless", True))
    for builder, unprivileged in cases:
        out = Path(tempfile.mkdtemp(prefix="amibundle-bench-out-", dir=WORK))
        out.chmod(0o777)
        try:
            warm(tree)
            clone = run(
                [*common, "-d", str(out), "--builder", builder, "--clone-only"],
                unprivileged=unprivileged,
            )
            warm(tree)
            full = None
            if not unprivileged:
                full = run([*common, *keys_args, "-d", str(out), "--builder", builder])
        finally:
            shutil.rmtree(out, ignore_errors=True)
        label = builder + (" (unprivileged)" if unprivileged else "")
        results["runs"].append(
            {
                "builder": label,
                "image_seconds": round(clone, 2),
                "bundle_seconds": None if full is None else round(full, 2),
            }
        )
        print(
            f"{label:24} image {clone:6.1f} s ({data / clone / 1e6:5.0f} MB/s)"
            + ("" if full is None else f"   image + bundle {full:6.1f} s"),
            flush=True,
        )
    (WORK / "volume-results.json").write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(keys, ignore_errors=True)
    if not options.keep:
        shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    main()
