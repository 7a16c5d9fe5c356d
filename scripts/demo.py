"""`make demo`: bundle, inspect, verify and unbundle a sample ext4 image.

Everything happens in ./demo-output (removed and rebuilt on each run). Each
step prints the command it runs, so the demo doubles as a tutorial.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK = REPO / "demo-output"
BIN = Path(sys.executable).parent
IMAGE_MIB = 512
SAMPLE_SOURCES = [Path("/usr/share/doc"), Path("/usr/share/perl5"), Path("/usr/lib/python3")]
SAMPLE_LIMIT = 120 << 20  # bytes of real files copied into the sample tree


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(*argv: str | Path) -> float:
    """Runs a command, showing it; returns its wall time."""
    words = [str(a) for a in argv]
    shown = [Path(words[0]).name, *(w.replace(str(WORK) + "/", "") for w in words[1:])]
    print("$ " + shlex.join(shown), flush=True)
    started = time.monotonic()
    subprocess.run(words, check=True)
    return time.monotonic() - started


def copy_sample_tree(target: Path) -> int:
    """Copies real files (documentation, libraries) until SAMPLE_LIMIT bytes."""
    copied = 0
    for source in SAMPLE_SOURCES:
        for root, dirs, files in os.walk(source):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                if path.is_symlink() or not path.is_file() or copied >= SAMPLE_LIMIT:
                    continue
                dest = target / path.relative_to("/")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
                copied += path.stat().st_size
    return copied


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def disk_usage(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size / 2**20:.0f} MiB apparent, {st.st_blocks * 512 / 2**20:.0f} MiB on disk"


def main() -> None:
    amibundle = BIN / "amibundle"
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "bundle").mkdir(parents=True)
    (WORK / "restored").mkdir()

    step("1. A sample root file system: ext4 built from real files with mke2fs -d (sparse)")
    tree = WORK / "tree"
    copied = copy_sample_tree(tree)
    print(f"copied {copied / 2**20:.0f} MiB of files into {tree.name}/")
    image = WORK / "root.img"
    mke2fs = shutil.which("mke2fs") or "/sbin/mke2fs"
    run(mke2fs, "-q", "-t", "ext4", "-L", "demo-root", "-d", tree, "-F", image, f"{IMAGE_MIB}M")
    print(f"root.img: {disk_usage(image)}")

    step("2. Keys: yours, and a stand-in for EC2's certificate")
    run(amibundle, "keygen", "-k", WORK / "pk.pem", "-c", WORK / "cert.pem", "--cn", "demo user")
    run(amibundle, "keygen", "-k", WORK / "ec2-pk.pem", "-c", WORK / "ec2-cert.pem",
        "--cn", "EC2 stand-in")
    print("(real bundles use EC2's certificate, found at run time: see the README)")

    step("3. Bundle it: tar -> gzip -> AES-128-CBC -> 10 MiB parts + signed manifest")
    seconds = run(amibundle, "bundle-image", "-i", image, "-c", WORK / "cert.pem",
                  "-k", WORK / "pk.pem", "-u", "1234-5678-9012", "-r", "x86_64",
                  "--ec2cert", WORK / "ec2-cert.pem", "-d", WORK / "bundle")
    manifest = WORK / "bundle" / "root.img.manifest.xml"
    print(f"bundled in {seconds:.2f} s ({copied / seconds / 1e6:.0f} MB/s of file data)")

    step("4. Inspect the manifest")
    run(amibundle, "inspect", "-m", manifest, "-c", WORK / "cert.pem")

    step("5. Verify the bundle offline: signature, parts, and the whole stream")
    seconds = run(amibundle, "verify", "-m", manifest, "-c", WORK / "cert.pem",
                  "-k", WORK / "pk.pem")
    print(f"verified in {seconds:.2f} s")

    step("6. Unbundle it")
    seconds = run(amibundle, "unbundle", "-m", manifest, "-k", WORK / "pk.pem",
                  "--cert", WORK / "cert.pem", "-d", WORK / "restored")
    restored = WORK / "restored" / "root.img"
    print(f"unbundled in {seconds:.2f} s; restored root.img: {disk_usage(restored)}")

    step("7. Compare")
    before, after = sha256(image), sha256(restored)
    print(f"original  sha256 {before}\nrestored  sha256 {after}")
    if before != after:
        sys.exit("FAILED: the restored image differs from the original")
    print("OK: the restored image is identical to the original.")
    print(f"Everything is in {WORK.relative_to(REPO)}/; `make demo` rebuilds it.")


if __name__ == "__main__":
    main()
