"""`make bench-ebs`: to-ebs of the realistic image's bundle into the local EBS stand-in,
against unbundle of the same bundle, measured in one run.

    .venv/bin/python benchmarks/ebs.py [--repeat 3] [--jobs 8]

The realistic image (images.py) is bundled once with amibundle's defaults. Then, each
round, from the same starting point (writes flushed, caches dropped when root, the
bundle's parts read back in): ``amibundle unbundle`` into a folder; ``amibundle to-ebs``
into the strict EBS stand-in of the test suite (moto with tests/support's EBS rules: every
block's SHA-256, the count and the LINEAR checksum checked), its block listing then
compared with the image's non-zero blocks; and ``amibundle to-ebs`` into ebs_sink.py, a
minimal server making the same checks for the cost of hashing (what the client costs
alone: the stand-in's Python takes ~4.5 ms of CPU a block from the same two cores). Each
server runs in a process of its own. Reported per command: wall time (best of the rounds,
and every round), CPU, the peak RSS of the command's own process, and the CPU the server
spent. Other users' work is measured too: the CPU the rest of the machine used during each
command (/proc/stat's busy time less the command's and the server's), in cores; it shows in
the spread of the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import images as image_builder

WORK = image_builder.WORK / "ebs"
BIN = Path(sys.executable).parent
MiB = 1 << 20
BLOCK = 512 * 1024


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float  # user + system seconds of the command and its children
    peak_rss: int  # bytes, the command's largest process
    server_cpu: float = 0.0  # the stand-in's user + system seconds during the run
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after
    others: float = 0.0  # CPU seconds the rest of the machine used meanwhile


def serve() -> None:
    """The stand-in's process: start it, say where it is and how to reach it (the
    environment of a client), serve until stdin closes. moto stays out of the measuring
    process: a child forked from a process that has loaded it would count its pages in
    its peak RSS."""
    from tests.support.aws import AwsStandIn

    with AwsStandIn() as stand_in:
        print(json.dumps(stand_in.environment()), flush=True)
        sys.stdin.read()


@contextlib.contextmanager
def server_process(argv: list[str]) -> Iterator[tuple[int, str]]:
    """A server in a process of its own: its pid and the first line it prints."""
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield process.pid, process.stdout.readline().strip()
    finally:
        if process.stdin:
            process.stdin.close()
        process.wait(30)


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy since boot (all cores)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    argv: list[str], *, env: dict[str, str] | None = None, server: int = 0
) -> tuple[Run, str]:
    load = os.getloadavg()[0]
    server_before = process_cpu(server) if server else 0.0
    busy = machine_busy()
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    out = process.stdout.read().decode() if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(argv)}")
    server_cpu = process_cpu(server) - server_before if server else 0.0
    cpu = usage.ru_utime + usage.ru_stime
    others = max(0.0, machine_busy() - busy - cpu - server_cpu)
    run = Run(wall, cpu, usage.ru_maxrss * 1024, server_cpu, (load, os.getloadavg()[0]), others)
    return run, out


def settle(*folders: Path) -> None:
    """Earlier writes flushed, the page cache dropped (root), the bundle read back in."""
    os.sync()
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    for folder in folders:
        for path in folder.iterdir():
            with open(path, "rb") as handle:
                while handle.read(8 * MiB):
                    pass
    subprocess.run([str(BIN / "amibundle"), "--version"], stdout=subprocess.DEVNULL, check=True)


def bundle_of(image: Path) -> tuple[Path, Path]:
    """The realistic image's bundle (made once) and the key that opens it."""
    folder, keys = WORK / "bundle", WORK / "keys"
    manifest = folder / f"{image.name}.manifest.xml"
    if not manifest.exists():
        shutil.rmtree(WORK, ignore_errors=True)
        folder.mkdir(parents=True)
        keys.mkdir()
        amibundle = str(BIN / "amibundle")
        subprocess.run([amibundle, "keygen", "-k", str(keys / "pk.pem"), "-c",
                        str(keys / "cert.pem"), "-q"], check=True)  # fmt: skip
        subprocess.run(
            [amibundle, "bundle-image", "-i", str(image), "-c", str(keys / "cert.pem"),
             "-k", str(keys / "pk.pem"), "-u", "123456789012", "-r", "x86_64",
             "--ec2cert", str(keys / "cert.pem"), "-d", str(folder), "-q", "--batch"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return manifest, keys / "pk.pem"


def image_blocks(image: Path) -> int:
    """The image's non-zero 512 KiB blocks, counted here with plain reads."""
    count = 0
    fd = os.open(image, os.O_RDONLY)
    try:
        indexes = {
            i
            for start, end in image_builder.extents(image)
            for i in range(start // BLOCK, -(-end // BLOCK))
        }
        for index in indexes:
            if os.pread(fd, BLOCK, index * BLOCK).count(0) != BLOCK:
                count += 1
    finally:
        os.close(fd)
    return count


def listed_blocks(snapshot_id: str, env: dict[str, str]) -> int:
    """The snapshot's block count, as ListSnapshotBlocks gives it (in a child process:
    boto3 loaded here would count in the peak RSS of every command started after)."""
    argv = [sys.executable, __file__, "--list-blocks", snapshot_id]
    return int(subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout)


def count_blocks(snapshot_id: str) -> int:
    import boto3

    env, endpoint = os.environ, os.environ["AWS_ENDPOINT_URL"]

    ebs = boto3.client(
        "ebs",
        endpoint_url=endpoint,
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    ec2 = boto3.client(
        "ec2",
        endpoint_url=endpoint,
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    for _ in range(5):  # the stand-in completes a snapshot once it has been looked at
        if (
            ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"]
            == "completed"
        ):
            break
    count, token = 0, None
    while True:
        page = ebs.list_snapshot_blocks(
            SnapshotId=snapshot_id, MaxResults=10_000, **({"NextToken": token} if token else {})
        )
        count += len(page["Blocks"])
        token = page.get("NextToken")
        if not token:
            return count


def row(label: str, runs: list[Run], server: bool) -> str:
    best = min(runs, key=lambda r: r.wall)
    walls = ", ".join(f"{r.wall:.2f}" for r in runs)
    loads = ", ".join(f"{r.others / r.wall:.2f}" for r in runs)
    served = f"{best.server_cpu:.2f} s" if server else "–"
    return (
        f"| {label} | {best.wall:.2f} s | {walls} | {best.cpu:.2f} s "
        f"({100 * best.cpu / best.wall:.0f}%) | {best.peak_rss / MiB:.0f} MiB | {served} | "
        f"{loads} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3; best counts)")
    parser.add_argument("--jobs", type=int, default=8, help="to-ebs --jobs (default 8)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--list-blocks", metavar="SNAPSHOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    if args.list_blocks:
        print(count_blocks(args.list_blocks))
        return 0
    image = image_builder.realistic().path
    manifest, key = bundle_of(image)
    expected = image_blocks(image)
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    with (
        server_process([sys.executable, __file__, "--serve"]) as (stand_in, first_line),
        server_process([sys.executable, str(HERE / "ebs_sink.py")]) as (sink, sink_url),
    ):
        env = {**os.environ, **json.loads(first_line)}
        sink_env = {**env, "AWS_ENDPOINT_URL": sink_url}
        unbundles, to_ebs, to_sink = [], [], []
        restored = WORK / "restored"
        to_ebs_argv = [str(BIN / "amibundle"), "to-ebs", "-m", str(manifest), "-k", str(key),
                       "--json", "--jobs", str(args.jobs)]  # fmt: skip
        for round_number in range(args.repeat):
            shutil.rmtree(restored, ignore_errors=True)
            restored.mkdir()
            settle(manifest.parent)
            run, _ = measure([str(BIN / "amibundle"), "unbundle", "-m", str(manifest), "-k",
                              str(key), "-d", str(restored), "-q"])  # fmt: skip
            unbundles.append(run)
            shutil.rmtree(restored)
            settle(manifest.parent)
            run, out = measure(to_ebs_argv, env=env, server=stand_in)
            to_ebs.append(run)
            report = json.loads(out)
            listed = listed_blocks(report["snapshot_id"], env)
            if not report["blocks_written"] == listed == expected:
                raise SystemExit("the snapshot's blocks do not match the image's")
            settle(manifest.parent)
            sink_run, _ = measure(to_ebs_argv, env=sink_env, server=sink)
            to_sink.append(sink_run)
            print(
                f"round {round_number + 1}: unbundle {unbundles[-1].wall:.2f} s; to-ebs "
                f"{run.wall:.2f} s into the stand-in ({report['blocks_written']} blocks written, "
                f"{listed} listed, {expected} expected; its CPU {run.server_cpu:.2f} s), "
                f"{sink_run.wall:.2f} s into the sink (its CPU {sink_run.server_cpu:.2f} s); "
                f"load {unbundles[-1].load[0]:.1f}→{sink_run.load[1]:.1f}; other processes used "
                + ", ".join(f"{r.others / r.wall:.2f}" for r in (unbundles[-1], run, sink_run))
                + " cores during the three"
            )
    best = min(r.wall for r in unbundles)
    peak = max(r.peak_rss for r in to_ebs + to_sink)
    print()
    print("| command | best wall | every round (s) | CPU | peak RSS | server CPU | others' cores |")
    print("|---|---|---|---|---|---|---|")
    print(row("amibundle unbundle", unbundles, False))
    print(row("amibundle to-ebs, into the strict stand-in (moto)", to_ebs, True))
    print(row("amibundle to-ebs, into the minimal sink", to_sink, True))
    print()
    for label, runs in (("stand-in", to_ebs), ("sink", to_sink)):
        ratio = min(r.wall for r in runs) / best
        verdict = "yes" if ratio <= 1.3 else "NO"
        print(f"to-ebs into the {label} / unbundle: {ratio:.2f}x (goal <= 1.3x): {verdict}")
    verdict = "yes" if peak <= 256 * MiB else "NO"
    print(f"to-ebs peak RSS: {peak / MiB:.0f} MiB (goal <= 256 MiB): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
