"""Finding the EC2 recipient certificate at run time.

amibundle ships the three public EC2 certificates (``certs/``, package data
``amibundle/certs/``), but a certificate the user already keeps wins. The
places, in order:

1. an explicit path (``--ec2cert``);
2. ``$AMIBUNDLE_EC2_CERT`` (a file);
3. ``$EC2_AMITOOL_HOME/etc/ec2/amitools/``, then ``$EC2_HOME/etc/ec2/amitools/``;
4. ``/opt/aws/amitools/ec2/etc/ec2/amitools/`` (Amazon Linux's classic tools);
5. ``<prefix>/share/amibundle/certs`` (a copy an installation put there);
6. the certificates shipped with amibundle.

In the folders, the file is chosen by region: ``cert-ec2-gov.pem`` for
``us-gov-*``, ``cert-ec2-cn-north-1.pem`` for ``cn-*``, else ``cert-ec2.pem``.
:func:`describe_ec2_certificates` reports the choice for every region.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from amibundle.errors import AmibundleError, CertificateError

__all__ = [
    "REGION_FILES",
    "CertificateLookup",
    "RegionCertificate",
    "certificate_file_for_region",
    "describe_ec2_certificates",
    "find_ec2_certificate",
]

_CLASSIC_SUBDIR = Path("etc/ec2/amitools")
_AMAZON_LINUX_DIR = Path("/opt/aws/amitools/ec2/etc/ec2/amitools")
# Package data; in a checkout, amibundle/certs is a symlink to the top-level certs/.
_SHIPPED_CERTS = Path(__file__).resolve().parent / "certs"
_SHARE_CERTS = Path(sys.prefix) / "share" / "amibundle" / "certs"
SHIPPED_SOURCE = "shipped with amibundle"

# Which regions each certificate file serves (and one of them), in the order shown.
REGION_FILES: tuple[tuple[str, str, str], ...] = (
    ("every other region", "cert-ec2.pem", "us-east-1"),
    ("us-gov-*", "cert-ec2-gov.pem", "us-gov-west-1"),
    ("cn-*", "cert-ec2-cn-north-1.pem", "cn-north-1"),
)


def certificate_file_for_region(region: str | None) -> str:
    if region and region.startswith("us-gov-"):
        return "cert-ec2-gov.pem"
    if region and region.startswith("cn-"):
        return "cert-ec2-cn-north-1.pem"
    return "cert-ec2.pem"


@dataclass(frozen=True)
class CertificateLookup:
    """Where a certificate was found and how (for ``--json`` and messages)."""

    path: Path
    source: str


def _region_from(region: str | None, env: Mapping[str, str]) -> str | None:
    return region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None


def _candidate_dirs(env: Mapping[str, str]) -> list[tuple[Path, str]]:
    dirs: list[tuple[Path, str]] = []
    for var in ("EC2_AMITOOL_HOME", "EC2_HOME"):
        if env.get(var):
            dirs.append((Path(env[var]) / _CLASSIC_SUBDIR, f"${var}"))
    dirs.append((_AMAZON_LINUX_DIR, "classic tools on Amazon Linux"))
    if _SHARE_CERTS != _SHIPPED_CERTS:
        dirs.append((_SHARE_CERTS, "amibundle installed certs folder"))
    dirs.append((_SHIPPED_CERTS, SHIPPED_SOURCE))
    return dirs


def find_ec2_certificate(
    explicit: Path | None = None,
    *,
    region: str | None = None,
    env: Mapping[str, str] | None = None,
) -> CertificateLookup:
    """The EC2 certificate to wrap the bundle key for, or one clear error
    listing every place looked at."""
    env = os.environ if env is None else env
    if explicit is not None:
        if not explicit.is_file():
            raise CertificateError(f"EC2 certificate {explicit} does not exist or is not a file")
        return CertificateLookup(explicit, "given")
    if env.get("AMIBUNDLE_EC2_CERT"):
        path = Path(env["AMIBUNDLE_EC2_CERT"])
        if not path.is_file():
            raise CertificateError(f"$AMIBUNDLE_EC2_CERT names {path}, which is not a file")
        return CertificateLookup(path, "$AMIBUNDLE_EC2_CERT")
    name = certificate_file_for_region(_region_from(region, env))
    looked: list[str] = []
    for folder, source in _candidate_dirs(env):
        path = folder / name
        if path.is_file():
            return CertificateLookup(path, source)
        looked.append(str(path))
    raise CertificateError(
        f"no EC2 certificate {name} found (looked in: {', '.join(looked)})",
        hint="pass one with {param} FILE or set AMIBUNDLE_EC2_CERT; amibundle ships "
        "them in its certs/ folder (a damaged installation?) and the classic "
        "ec2-ami-tools in etc/ec2/amitools/",
        param="ec2_cert",
    )


@dataclass(frozen=True)
class RegionCertificate:
    """Which certificate serves a group of regions, and where it was found."""

    regions: str  # "us-gov-*", "cn-*" or "every other region"
    file_name: str
    path: Path | None  # None: not found (``problem`` says why)
    source: str | None
    applies_here: bool  # the region of this environment is in the group
    problem: str | None = None


def describe_ec2_certificates(
    explicit: Path | None = None,
    *,
    region: str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[RegionCertificate, ...]:
    """For each group of regions, the certificate :func:`find_ec2_certificate`
    would use (``region`` or the environment's region marks the group that
    applies here). A group without one is reported, not raised."""
    env = os.environ if env is None else env
    here = certificate_file_for_region(_region_from(region, env))
    rows = []
    for regions, name, example in REGION_FILES:
        try:
            found = find_ec2_certificate(explicit, region=example, env=env)
        except AmibundleError as err:
            rows.append(RegionCertificate(regions, name, None, None, name == here, str(err)))
            continue
        rows.append(RegionCertificate(regions, name, found.path, found.source, name == here))
    return tuple(rows)
