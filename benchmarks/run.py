"""`make bench`: amibundle against the classic pipeline, measured in one run.

For each image (see images.py) it times:

* bundling: ``amibundle bundle-image`` against the classic reference
  ``tar -c -S -h --owner 0 --group 0 | gzip -9 | openssl enc -e -aes-128-cbc``
  into one file, then ``split`` into 10 MiB parts and ``sha1sum`` of each part;
* unbundling: ``amibundle unbundle`` against
  ``cat parts | openssl enc -d -aes-128-cbc | gunzip | tar -x -S``.

Every run starts with the image's data in the page cache (both sides read
the same warm data) and reports wall time, MB/s of image data, CPU use, peak
RSS and output size; ratios are taken against the reference of the same run.
It also measures single-core ceilings of the stages. The table goes to
benchmarks/README.md, the raw figures to benchmarks/work/results.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import images as image_builder

HERE = Path(__file__).resolve().parent
WORK = image_builder.WORK
BIN = Path(sys.executable).parent
MiB = 1 << 20
PART = 10 * MiB


@dataclass(frozen=True)
class Run:
    """One measured command."""

    wall: float
    cpu: float  # user + system seconds, all processes
    peak_rss: int  # bytes, largest single process
    output: int  # bytes written (parts, or the image's data)

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu / self.wall


def measure(argv: list[str], *, output: Path | None = None, cwd: Path | None = None) -> Run:
    """Runs ``argv`` and returns its wall time and the rusage of it and its children."""
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"benchmark command failed ({process.returncode}): {shlex.join(argv)}")
    written = 0
    if output is not None:
        written = sum(p.stat().st_size for p in output.iterdir() if p.name.count(".part."))
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, written)


def settle(*files: Path) -> None:
    """The same starting point for every timed command: earlier writes flushed,
    the page cache emptied where allowed (root), then the image's data read
    back in. Otherwise one command pays for the previous one's write-back
    and for reclaiming a full page cache."""
    os.sync()
    with contextlib.suppress(OSError):  # not root: the cache stays; the sync still helps
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    for path in files:
        warm(path)
    # Both sides start with their programs in memory too (the interpreter and
    # its libraries for us; tar, gzip and openssl for the reference).
    for argv in (
        ["tar", "--version"],
        ["gzip", "--version"],
        ["openssl", "version"],
        [str(BIN / "amibundle"), "--version"],
    ):
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)


def warm(path: Path) -> None:
    """Reads the image's data extents into the page cache (holes are not read)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for start, end in image_builder.extents(path):
            for chunk in range(start, end, 8 * MiB):
                os.pread(fd, min(8 * MiB, end - chunk), chunk)
    finally:
        os.close(fd)


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def keys() -> tuple[Path, Path]:
    folder = WORK / "keys"
    if not (folder / "pk.pem").exists():
        folder.mkdir(exist_ok=True)
        subprocess.run(
            [
                BIN / "amibundle",
                "keygen",
                "-k",
                folder / "pk.pem",
                "-c",
                folder / "cert.pem",
                "--force",
                "-q",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return folder / "pk.pem", folder / "cert.pem"


def reference_bundle(image: Path, out: Path) -> Run:
    key, iv = os.urandom(16).hex(), os.urandom(16).hex()
    enc = out / f"{image.name}.tar.gz.enc"
    script = (
        f"set -eo pipefail; tar -c -S -h --owner 0 --group 0 -C {shlex.quote(str(image.parent))} "
        f"{shlex.quote(image.name)} | gzip -9 | openssl enc -e -aes-128-cbc -K {key} -iv {iv} "
        f"> {shlex.quote(str(enc))}; "
        f"split -b {PART} -d -a 3 {shlex.quote(str(enc))} "
        f"{shlex.quote(str(out / image.name))}.part.; "
        f"rm {shlex.quote(str(enc))}; sha1sum {shlex.quote(str(out))}/*.part.* > /dev/null"
    )
    (out / "key").write_text(f"{key} {iv}")
    return measure(["bash", "-c", script], output=out)


def reference_unbundle(bundle: Path, image: Path, dest: Path) -> Run:
    key, iv = (bundle / "key").read_text().split()
    parts = " ".join(shlex.quote(str(p)) for p in sorted(bundle.glob(f"{image.name}.part.*")))
    script = (
        f"set -eo pipefail; cat {parts} | openssl enc -d -aes-128-cbc -K {key} -iv {iv} "
        f"| gunzip | tar -x -S -C {shlex.quote(str(dest))}"
    )
    return measure(["bash", "-c", script])


def our_bundle(image: Path, out: Path, pk: Path, cert: Path) -> Run:
    # Defaults for everything that affects speed; --no-size-checks because the
    # sparse image is 16 GiB apparent, over EC2's 10 GiB limit.
    keys = ["-c", str(cert), "-k", str(pk), "--ec2cert", str(cert)]
    argv = [
        str(BIN / "amibundle"),
        "bundle-image",
        "-i",
        str(image),
        *keys,
        "-u",
        "123456789012",
        "-r",
        "x86_64",
        "-d",
        str(out),
        "--no-size-checks",
        "--force",
        "-q",
    ]
    return measure(argv, output=out)


def our_verify(bundle: Path, image: Path, pk: Path) -> Run:
    """Everything unbundling does but writing the image: parts, digests,
    decryption, inflate, tar parsing."""
    manifest = bundle / f"{image.name}.manifest.xml"
    argv = [str(BIN / "amibundle"), "verify", "-m", str(manifest), "-k", str(pk), "-q"]
    return measure(argv)


def our_unbundle(bundle: Path, image: Path, dest: Path, pk: Path) -> Run:
    manifest = bundle / f"{image.name}.manifest.xml"
    argv = [
        str(BIN / "amibundle"),
        "unbundle",
        "-m",
        str(manifest),
        "-k",
        str(pk),
        "-d",
        str(dest),
        "--force",
        "-q",
    ]
    return measure(argv)


# --- single-core ceilings ---------------------------------------------------------


def sample_data(path: Path, nbytes: int) -> bytes:
    """``nbytes`` of the image's data, taken evenly from its data extents."""
    extents = image_builder.extents(path)
    stride = max(1, sum(end - start for start, end in extents) // nbytes)
    chunks, seen = [], 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for start, end in extents:
            for chunk in range(start, end, MiB):
                if (seen // MiB) % stride == 0:
                    chunks.append(os.pread(fd, min(MiB, end - chunk), chunk))
                seen += min(MiB, end - chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)[:nbytes]


# Stage names of the ceilings, used again for the floors below.
AES_ENC, AES_DEC, SHA1 = "AES-128-CBC encrypt", "AES-128-CBC decrypt", "SHA-1"
DEFLATE, INFLATE = "gzip level 2 (ISA-L)", "gunzip (ISA-L inflate)"
ZLIB9, ZLIB_INFLATE = "gzip -9 (zlib, as the classic)", "gunzip (zlib inflate, as the classic)"


def ceilings(sample: bytes) -> dict[str, float]:
    """MB/s of one core for each stage, on the realistic image's data (for
    inflate: MB/s of output)."""
    import hashlib
    import zlib

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from isal import isal_zlib

    def rate(fn: Callable[[], object], data_len: int) -> float:
        started = time.perf_counter()
        fn()
        return data_len / (time.perf_counter() - started) / 1e6

    def cipher() -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(os.urandom(16)), modes.CBC(os.urandom(16)))

    def inflate(module: Any, data: bytes) -> None:
        inflater = module.decompressobj(wbits=31)
        for start in range(0, len(data), MiB):
            inflater.decompress(data[start : start + MiB])

    out = bytearray(len(sample) + 16)
    small = sample[: 32 * MiB]
    gz = isal_zlib.compress(sample, 2, wbits=31)
    gz_small = zlib.compress(small, 9, wbits=31)
    return {
        AES_ENC: rate(lambda: cipher().encryptor().update_into(sample, out), len(sample)),
        AES_DEC: rate(lambda: cipher().decryptor().update_into(sample, out), len(sample)),
        SHA1: rate(lambda: hashlib.sha1(sample).digest(), len(sample)),
        DEFLATE: rate(lambda: isal_zlib.compress(sample, 2), len(sample)),
        INFLATE: rate(lambda: inflate(isal_zlib, gz), len(sample)),
        ZLIB9: rate(lambda: zlib.compress(small, 9), len(small)),
        ZLIB_INFLATE: rate(lambda: inflate(zlib, gz_small), len(small)),
    }


def floors(data: int, parts: int, limits: dict[str, float], cores: int) -> dict[str, float]:
    """The least wall time each command can take here: the CPU seconds of its
    stages at single-core speed, spread perfectly over every core. Reading the
    image or the parts and writing the result are left out (kernel time that
    overlaps the rest), so the real floor is higher still."""

    def seconds(nbytes: int, stage: str) -> float:
        return nbytes / 1e6 / limits[stage]

    bundle = (
        seconds(data, SHA1)
        + seconds(data, DEFLATE)
        + seconds(parts, AES_ENC)
        + seconds(parts, SHA1)
    )
    unbundle = (
        seconds(parts, SHA1)
        + seconds(parts, AES_DEC)
        + seconds(data, INFLATE)
        + seconds(data, SHA1)
    )
    # Inflating one gzip member is serial: no number of cores beats it.
    return {
        "bundle": bundle / cores,
        "unbundle": max(unbundle / cores, seconds(data, INFLATE)),
        "unbundle_inflate_alone": seconds(data, INFLATE),
    }


# --- the report ---------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        model = found.group(1) if found else model
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def row(label: str, run: Run, data: int, reference: Run | None) -> str:
    ratio = f"{reference.wall / run.wall:.1f}×" if reference else "1×"
    size = f"{run.output / MiB:.1f} MiB" if run.output else "–"
    return (
        f"| {label} | {run.wall:.2f} s | {data / run.wall / 1e6:.0f} MB/s | {ratio} | "
        f"{run.cpu_percent:.0f}% | {run.peak_rss / MiB:.0f} MiB | {size} |"
    )


def main() -> None:
    print("building or reusing the images in benchmarks/work ...", flush=True)
    built = image_builder.build()
    pk, cert = keys()
    results: dict[str, dict[str, Any]] = {}
    for name, image in built.items():
        data = image.data_bytes
        print(
            f"\n{name}: {image.size / MiB:.0f} MiB apparent, {data / MiB:.0f} MiB of data",
            flush=True,
        )
        ref_out, our_out = fresh(WORK / "out-ref"), fresh(WORK / "out-ours")
        settle(image.path)
        ref_b = reference_bundle(image.path, ref_out)
        print(f"  reference bundle   {ref_b.wall:7.2f} s", flush=True)
        settle(image.path)
        ours_b = our_bundle(image.path, our_out, pk, cert)
        print(
            f"  amibundle bundle   {ours_b.wall:7.2f} s  ({ref_b.wall / ours_b.wall:.1f}×)",
            flush=True,
        )
        ref_dest, our_dest = fresh(WORK / "restore-ref"), fresh(WORK / "restore-ours")
        settle(*ref_out.glob("*.part.*"))
        ref_u = reference_unbundle(ref_out, image.path, ref_dest)
        print(f"  reference unbundle {ref_u.wall:7.2f} s", flush=True)
        settle(*our_out.glob("*.part.*"))
        ours_u = our_unbundle(our_out, image.path, our_dest, pk)
        print(
            f"  amibundle unbundle {ours_u.wall:7.2f} s  ({ref_u.wall / ours_u.wall:.1f}×)",
            flush=True,
        )
        settle(*our_out.glob("*.part.*"))
        ours_v = our_verify(our_out, image.path, pk)
        print(
            f"  amibundle verify -k {ours_v.wall:6.2f} s  (unbundle without the writes)", flush=True
        )
        results[name] = {
            "description": image.description,
            "apparent": image.size,
            "data": data,
            "reference_bundle": asdict(ref_b),
            "amibundle_bundle": asdict(ours_b),
            "reference_unbundle": asdict(ref_u),
            "amibundle_unbundle": asdict(ours_u),
            "amibundle_verify": asdict(ours_v),
        }
        for folder in (ref_out, our_out, ref_dest, our_dest):
            shutil.rmtree(folder)
    print("\nsingle-core ceilings ...", flush=True)
    limits = ceilings(sample_data(built["realistic"].path, 256 * MiB))
    write_report(results, limits, machine())


OTHER_MARKER = "<!-- other benchmarks: kept by run.py -->"


def _other_benchmarks() -> str:
    """The S3 and bundle-vol sections (from their own scripts), kept as they are."""
    readme = HERE / "README.md"
    old = readme.read_text() if readme.exists() else ""
    return "\n" + old[old.index(OTHER_MARKER) :] if OTHER_MARKER in old else ""


def write_report(
    results: dict[str, dict[str, Any]], limits: dict[str, float], host: dict[str, str]
) -> None:
    def run_of(name: str, key: str) -> Run:
        return Run(**results[name][key])

    lines = [
        "| image / command | wall | image data | vs reference | CPU | peak RSS | parts |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, figures in results.items():
        data = figures["data"]
        ref_b, ours_b = run_of(name, "reference_bundle"), run_of(name, "amibundle_bundle")
        ref_u, ours_u = run_of(name, "reference_unbundle"), run_of(name, "amibundle_unbundle")
        lines += [
            row(f"{name}: reference bundle", ref_b, data, None),
            row(f"{name}: **amibundle bundle-image**", ours_b, data, ref_b),
            row(f"{name}: reference unbundle", ref_u, data, None),
            row(f"{name}: **amibundle unbundle**", ours_u, data, ref_u),
            row(
                f"{name}: amibundle verify -k (unbundle minus writing)",
                run_of(name, "amibundle_verify"),
                data,
                ref_u,
            ),
        ]

    def speedup(name: str, verb: str) -> float:
        return run_of(name, f"reference_{verb}").wall / run_of(name, f"amibundle_{verb}").wall

    ours = [run_of(n, f"amibundle_{v}") for n in results for v in ("bundle", "unbundle")]
    realistic_bundle = run_of("realistic", "amibundle_bundle")
    size_growth = 100 * (
        realistic_bundle.output / run_of("realistic", "reference_bundle").output - 1
    )
    sparse_vs_dense = (
        run_of("sparse", "amibundle_bundle").wall / run_of("dense", "amibundle_bundle").wall
    )
    # (label, measured, bound, True when the bound is a minimum)
    checks = [
        (
            "bundle ≥ 40× faster than the reference (realistic)",
            speedup("realistic", "bundle"),
            40,
            True,
        ),
        ("parts ≤ 15% larger than the reference's (realistic, %)", size_growth, 15, False),
        (
            "unbundle ≥ 5× faster than the reference (realistic)",
            speedup("realistic", "unbundle"),
            5,
            True,
        ),
        (
            "peak RSS ≤ 256 MiB, every image and command (MiB)",
            max(run.peak_rss for run in ours) / MiB,
            256,
            False,
        ),
        (
            "sparse 16 GiB bundles in ≤ 1.5× the time of the dense image",
            sparse_vs_dense,
            1.5,
            False,
        ),
        ("CPU ≥ 170% while bundling (realistic, %)", realistic_bundle.cpu_percent, 170, True),
    ]
    check_lines = ["| target | measured | holds |", "|---|---|---|"]
    for label, value, bound, is_minimum in checks:
        ok = value >= bound if is_minimum else value <= bound
        check_lines.append(f"| {label} | {value:.2f} | {'yes' if ok else '**no**'} |")
    real = results["realistic"]
    floor = floors(real["data"], realistic_bundle.output, limits, os.cpu_count() or 1)
    floor_lines = [
        "| command (realistic image) | floor here | measured | reference | best ratio possible |",
        "|---|---|---|---|---|",
    ]
    for verb in ("bundle", "unbundle"):
        measured = run_of("realistic", f"amibundle_{verb}").wall
        reference = run_of("realistic", f"reference_{verb}").wall
        floor_lines.append(
            f"| {verb} | {floor[verb]:.2f} s | {measured:.2f} s | "
            f"{reference:.2f} s | {reference / floor[verb]:.1f}× |"
        )
    floor_lines += [
        "",
        f"The floor is the CPU time of the stages at the single-core speeds below, spread "
        f"perfectly over {os.cpu_count()} cores. Unbundling must inflate, hash the tar "
        f"stream and the parts, decrypt and write; inflating one gzip member is serial, "
        f"and alone takes {floor['unbundle_inflate_alone']:.2f} s here. `amibundle verify -k`, "
        f"which does all of unbundling but writing the image, took "
        f"{run_of('realistic', 'amibundle_verify').wall:.2f} s in this run.",
    ]
    ceiling_lines = ["| stage (one core) | MB/s |", "|---|---|"]
    ceiling_lines += [f"| {stage} | {speed:.0f} |" for stage, speed in limits.items()]
    images_lines = [
        f"* **{n}**: {f['description']}; {f['apparent'] / MiB:.0f} MiB apparent, "
        f"{f['data'] / MiB:.0f} MiB of data"
        for n, f in results.items()
    ]
    text = "\n".join(
        [
            "# Benchmarks",
            "",
            "amibundle against the classic pipeline it replaces, measured in the same run.",
            "Produced by:",
            "",
            "    make bench        # = .venv/bin/python benchmarks/run.py",
            "",
            f"Machine: {host['cores']} cores, {host['cpu']}, {host['memory']}, "
            f"Python {host['python']}; run on {host['date']}.",
            "",
            "The reference rebuilds what the classic `ec2-bundle-image` runs: `tar -c -S -h "
            "--owner 0 --group 0 | gzip -9 | openssl enc -e -aes-128-cbc` into one file, then "
            "`split` into 10 MiB parts and `sha1sum` of each; unbundling is `cat parts | "
            "openssl enc -d | gunzip | tar -x -S`. amibundle runs at its defaults (gzip level 2 on "
            "all cores). Each command starts with the image's data in the page cache. MB/s counts "
            "the image's data bytes (holes excluded). CPU is user + system time of all processes "
            "over wall time; peak RSS is that of the largest process.",
            "",
            "Images (built by `benchmarks/images.py` into `benchmarks/work/`):",
            "",
            *images_lines,
            "",
            "## Results",
            "",
            *lines,
            "",
            "## Targets",
            "",
            *check_lines,
            "",
            "## What the hardware allows (same run)",
            "",
            *floor_lines,
            "",
            "## Single-core ceilings (same run, realistic image data)",
            "",
            *ceiling_lines,
            "",
        ]
    )
    (HERE / "README.md").write_text(text + _other_benchmarks())
    (WORK / "results.json").write_text(
        json.dumps({"machine": host, "results": results, "ceilings": limits}, indent=2)
    )
    print("\n" + "\n".join(check_lines))
    print("\nwrote benchmarks/README.md")


if __name__ == "__main__":
    main()
