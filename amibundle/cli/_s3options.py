"""Options shared by the S3 commands (upload, download, delete) and their classic twins.

The classic flags keep their letters and meaning (``classic-cli.md`` §1.9, §4.2,
§5.2, §7.2): ``-b`` bucket[/prefix], ``-a``/``-s``/``-t`` credentials, ``--url``,
``--region``, ``--sigv``, ``--retry``. Ours: ``--profile`` and ``--jobs``.

The classic tools check their mandatory options after parsing in a fixed order
(access key, secret key, bucket, ``--sigv``, then the command's own), which the
generic ``mandatory()`` machinery of :mod:`amibundle.cli._options` cannot
interleave with value checks; so each command registers one ordered check built
from :func:`check_common` plus its own steps, and lists its required options in
the help's "mandatory" group and its usage line itself.

Adding options to a classic parser can make a unique prefix that classic
scripts use ambiguous (``--pr`` meant ``--prefix`` to ``ec2-delete-bundle``
before ``--profile`` existed). :func:`finish_s3_parser` has the classic
parser resolve the classic tool's options first
(:meth:`~amibundle.cli._options.OptionParser.keep_classic_abbreviations`),
so every classic command line keeps working.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from amibundle import s3
from amibundle.cli._common import Announcements
from amibundle.cli._options import (
    CLASSIC_COMMON_LONGS,
    OptionParser,
    Style,
    add_check,
    add_common_options,
)
from amibundle.cli._values import integer
from amibundle.errors import AmibundleError, UsageError

__all__ = [
    "check_bundle_names",
    "check_manifest_or_prefix",
    "finish_s3_parser",
    "CLASSIC_COMMON_LONGS",
    "DEFAULT_JOBS",
    "RETRY_ATTEMPTS",
    "add_s3_options",
    "attempts",
    "bucket_ref",
    "bundle_file_name",
    "check_common",
    "endpoint_url",
    "is_v2_safe",
    "jobs",
    "note_sigv",
    "region_name",
    "settings_from",
]

# --retry without a value: the classic "up to 5 attempts per file" (§1.9.6).
RETRY_ATTEMPTS = 5
DEFAULT_ATTEMPTS = s3.S3Settings().attempts
DEFAULT_JOBS = s3.S3Settings().jobs

# botocore's own check of a region name, applied while parsing so a typo is a
# usage error and not an internal one when the client is made.
_REGION = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")
_S3_SAFE = re.compile(r"[a-z0-9][a-z0-9._-]{2,254}")


# -- value converters (argparse type=) ------------------------------------------


def endpoint_url(value: str) -> str:
    """``--url``: an ``http://`` or ``https://`` URL with a host (any S3-compatible server)."""
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise argparse.ArgumentTypeError(f"{value!r}: expected http(s)://HOST[:PORT]")
    return value


def region_name(value: str) -> str:
    if not _REGION.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r}: not a region name (like eu-west-1)")
    return value


def attempts(value: str) -> int:
    """``--retry=N``: attempts in all per request, at least 1."""
    number = integer(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: needs at least 1 attempt")
    return number


def jobs(value: str) -> int:
    number = integer(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: needs at least 1")
    return number


def bundle_file_name(option: str, value: str) -> str:
    """A plain file name for ``-m``/``-p`` of download and delete: it becomes both a
    key under the bucket prefix and a local file name, so no ``/`` (classic) and
    nothing that names a folder."""
    if not value or "/" in value or "\0" in value or value in (".", ".."):
        raise UsageError(f"invalid value for {option}: {value!r}: must be a plain name, no '/'")
    return value


# -- declaring the options --------------------------------------------------------


def add_s3_options(
    parser: OptionParser, *, bucket: bool = True, bucket_region: bool = False
) -> None:
    """``-b`` (in the mandatory group; not with ``bucket=False``), credentials,
    endpoint, retry, ``--profile``, ``--jobs``. Required-ness is checked by
    :func:`check_common`. ``bucket_region``: the command falls back to the
    bucket's region rather than us-east-1 (its help says so)."""
    if bucket:
        parser.mandatory_group.add_argument(
            "-b",
            "--bucket",
            metavar="BUCKET[/PREFIX]",
            help="the bucket, optionally followed by a key prefix: mybucket/images/2024",
        )
    group = parser._optionals
    group.add_argument(
        "-a",
        "--access-key",
        metavar="ID",
        help="AWS access key id (default: the standard AWS chain: environment, "
        "--profile or ~/.aws, instance role)",
    )
    group.add_argument(
        "-s", "--secret-key", metavar="KEY", help="AWS secret access key (goes with -a)"
    )
    group.add_argument(
        "-t",
        "--delegation-token",
        metavar="TOKEN",
        help="AWS session token of temporary credentials (goes with -a and -s)",
    )
    group.add_argument(
        "--profile",
        metavar="NAME",
        help="use this profile of ~/.aws/config and ~/.aws/credentials",
    )
    group.add_argument(
        "--region",
        metavar="REGION",
        type=region_name,
        help="S3 region (default: $AWS_REGION, $AWS_DEFAULT_REGION, the profile's, "
        "derived from an AWS --url host name, else "
        + ("the bucket's region" if bucket_region else "us-east-1")
        + ")",
    )
    group.add_argument(
        "--url",
        metavar="URL",
        type=endpoint_url,
        help="S3 endpoint, for any S3-compatible server, e.g. http://127.0.0.1:8333 "
        "(path-style addressing; default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, the "
        "profile's endpoint_url, else AWS)",
    )
    group.add_argument(
        "--sigv",
        metavar="VERSION",
        help="2 or 4; accepted for compatibility: Signature Version 4 is always used",
    )
    group.add_argument(
        "--retry",
        metavar="N",
        nargs="?",
        const=RETRY_ATTEMPTS,
        type=attempts,
        help=f"try each request up to {RETRY_ATTEMPTS} times (--retry=N: N times) on "
        "server errors, throttling and dropped connections; without --retry, up to "
        f"{DEFAULT_ATTEMPTS} times",
    )
    group.add_argument(
        "--jobs",
        metavar="N",
        type=jobs,
        default=DEFAULT_JOBS,
        help=f"parallel transfers (default: {DEFAULT_JOBS})",
    )


# -- post-parse checks ---------------------------------------------------------------


def check_common(args: argparse.Namespace, *, bucket: bool = True) -> None:
    """The classic order: access key, secret key, bucket (unless ``bucket``
    is False), ``--sigv``.

    Sets ``args.bucket_ref`` (the parsed :class:`amibundle.s3.BucketRef`).
    """
    if args.secret_key and not args.access_key:
        raise UsageError("missing mandatory option --access-key (it goes with --secret-key)")
    if args.access_key and not args.secret_key:
        raise UsageError("missing mandatory option --secret-key (it goes with --access-key)")
    if args.delegation_token and not args.access_key:
        raise UsageError("--delegation-token needs --access-key and --secret-key")
    if args.profile and args.access_key:
        raise UsageError("--profile cannot be combined with --access-key")
    if bucket:
        if not args.bucket:
            raise UsageError("missing mandatory option --bucket")
        args.bucket_ref = bucket_ref(args.bucket)
    if args.sigv is not None and args.sigv not in ("2", "4"):
        raise UsageError(f"invalid value for --sigv: {args.sigv!r}: expected 2 or 4")


def bucket_ref(value: str) -> s3.BucketRef:
    try:
        return s3.parse_bucket(value)
    except AmibundleError as error:
        spell = lambda param, off: "--bucket"  # noqa: E731 - the one flag here
        raise UsageError(
            f"invalid value for --bucket: {error.render(spell)}", hint=error.render_hint(spell)
        ) from None


# -- using the options ------------------------------------------------------------------


def note_sigv(args: argparse.Namespace, notes: Announcements | None = None) -> None:
    """The note about ``--sigv 2``: held in ``notes`` when given, else printed
    now; silenced by ``-q`` either way."""
    if args.sigv != "2":
        return
    line = "note: --sigv 2 is accepted for compatibility; Signature Version 4 is always used"
    if notes is not None:
        notes.add(line, stderr=True)
    else:
        Announcements.of(args).say(line, stderr=True)


def settings_from(args: argparse.Namespace, *, region: str | None = None) -> s3.S3Settings:
    """The :class:`~amibundle.s3.S3Settings` the options describe; ``region``
    overrides ``--region`` (upload derives one from ``--location``)."""
    options: dict[str, Any] = {
        "access_key": args.access_key,
        "secret_key": args.secret_key,
        "session_token": args.delegation_token,
        "profile": args.profile,
        "region": region if region is not None else args.region,
        "endpoint_url": args.url,
        "jobs": args.jobs,
    }
    if args.retry is not None:
        options["attempts"] = args.retry
    return s3.S3Settings(**options)


def is_v2_safe(name: str) -> bool:
    """The classic "S3 v2 safe" bucket name of ``classic-cli.md`` §1.9.4: what
    virtual-host addressing and every AWS region since 2018 accept."""
    if not _S3_SAFE.fullmatch(name) or _looks_like_ipv4(name):
        return False
    return (
        len(name) <= 63
        and "_" not in name
        and not name.endswith("-")
        and "-." not in name
        and ".-" not in name
    )


def _looks_like_ipv4(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def finish_s3_parser(
    parser: OptionParser,
    style: Style,
    classic_longs: Sequence[str],
    check: Callable[[argparse.Namespace], None],
) -> OptionParser:
    """What every S3 command's parser ends with: --json, the common options,
    the classic abbreviations (classic style) and the post-parse check."""
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    add_common_options(parser)
    if style is Style.CLASSIC:
        parser.keep_classic_abbreviations(classic_longs)
    add_check(parser, check)
    return parser


def check_manifest_or_prefix(args: argparse.Namespace) -> None:
    """-m and -p name the same thing two ways: at most one of them."""
    if args.manifest is not None and args.prefix is not None:
        raise UsageError("--manifest cannot be combined with --prefix")


def check_bundle_names(args: argparse.Namespace) -> None:
    """At most one of -m and -p, and whichever is given a plain file name
    (download, download-unbundle, to-ebs -b)."""
    check_manifest_or_prefix(args)
    for option, value in (("--manifest", args.manifest), ("--prefix", args.prefix)):
        if value is not None:
            bundle_file_name(option, value)
