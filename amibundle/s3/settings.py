"""How to reach S3 and where a bundle goes: settings, bucket references, regions."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from amibundle.errors import UsageError
from amibundle.validate import check_text

__all__ = [
    "DEFAULT_REGION",
    "BucketRef",
    "S3Settings",
    "as_bucket",
    "given_region",
    "is_aws_endpoint",
    "is_aws_url",
    "parse_bucket",
    "region_from_url",
    "region_of_location",
    "resolve_region",
]

DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3.

    Explicit keys (with the session token when given) win; otherwise boto3's
    standard chain applies (environment, ``profile``, instance role).
    ``attempts`` is the total number of tries per request (botocore's
    standard retry mode: backoff on 5xx, throttling such as SlowDown, and
    connection errors); ``jobs`` is the number of transfers run at once.
    """

    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    profile: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    attempts: int = 3
    jobs: int = 8

    def __post_init__(self) -> None:
        for name in (
            "access_key",
            "secret_key",
            "session_token",
            "profile",
            "region",
            "endpoint_url",
        ):
            check_text(getattr(self, name), name, optional=True)
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise UsageError(
                f"{{param}} must be a whole number, not {self.attempts!r}", param="attempts"
            )
        if self.attempts < 1:
            raise UsageError(f"{{param}} must be at least 1, not {self.attempts}", param="attempts")
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise UsageError(
                f"{{param}} must be a whole number of at least 1, not {self.jobs!r}", param="jobs"
            )
        if (self.access_key is None) != (self.secret_key is None):
            raise UsageError(
                "give both an access key and a secret key ({param}), or neither", param="secret_key"
            )
        if self.session_token is not None and self.access_key is None:
            raise UsageError(
                "a session token ({param}) needs an access key and a secret key too",
                param="session_token",
            )


_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{2,254}")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _bucket_name_problem(name: str) -> str | None:
    # The classic "S3 safe" rule, with upper case allowed as old US buckets have it.
    if not _BUCKET_NAME.fullmatch(name):
        return (
            f"bucket name {name!r} is not valid: use 3 to 255 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit"
        )
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return None
    return f"bucket name {name!r} is not valid: it has the form of an IP address"


def _prefix_problem(prefix: str) -> str | None:
    if _CONTROL.search(prefix):
        return f"key prefix {prefix!r} has a control character"
    # Keys are flat in S3, but servers that map keys to files (SeaweedFS's
    # filer, MinIO) may fold "a/../b" into "b": a prefix must never be able
    # to reach keys outside itself, so its folder components must be plain.
    for component in prefix.split("/")[:-1]:
        if component in ("", ".", ".."):
            return (
                f"key prefix {prefix!r} has an empty, '.' or '..' component; "
                "give folder names separated by single '/'"
            )
    return None


@dataclass(frozen=True)
class BucketRef:
    """A bucket and the key prefix every object key starts with
    (``parse_bucket("a/b/c/")`` is ``BucketRef("a", "b/c/")``)."""

    bucket: str
    prefix: str = ""

    def __post_init__(self) -> None:
        problem = _bucket_name_problem(self.bucket) or _prefix_problem(self.prefix)
        if problem is not None:
            raise UsageError(problem, param="bucket")

    def key(self, name: str) -> str:
        """The object key of the file ``name``."""
        return self.prefix + name

    def url(self, key: str | None = None) -> str:
        """``s3://bucket/key`` (the prefix itself without ``key``), for messages."""
        return f"s3://{self.bucket}/{self.prefix if key is None else key}"

    def __str__(self) -> str:
        return self.url()


def parse_bucket(value: str) -> BucketRef:
    """Parses the classic ``bucket[/key/prefix]`` argument: slashes around it
    are dropped, the first component is the bucket, the rest (if any) is the
    key prefix with a trailing ``/``."""
    if not isinstance(value, str):
        raise UsageError(
            f"{{param}} must be 'bucket/prefix' text, not {type(value).__name__}", param="bucket"
        )
    words = value.strip("/").split("/")
    if not words[0]:
        raise UsageError(f"no bucket name in {{param}} {value!r}", param="bucket")
    rest = words[1:]
    return BucketRef(words[0], "/".join(rest) + "/" if rest else "")


def region_of_location(location: str) -> str:
    """The region of an S3 location constraint (``EU`` and ``US`` are the
    old spellings of eu-west-1 and us-east-1; none means US Standard)."""
    if location in ("", "US"):
        return DEFAULT_REGION
    if location == "EU":
        return "eu-west-1"
    return location


def region_from_url(url: str) -> str:
    """The classic derivation of the signing region from an AWS endpoint's
    host name (``s3-eu-west-1.amazonaws.com``, ``s3.us-west-2.amazonaws.com``);
    us-east-1 for anything else. Unlike the classic tools, only AWS host
    names are read this way: ``s3.example.com`` is no region "example"."""
    host = (urlsplit(url).hostname or "").lower()
    labels = host.split(".")
    if not host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        return DEFAULT_REGION
    if host in ("s3.amazonaws.com", "s3-external-1.amazonaws.com") or len(labels) < 3:
        return DEFAULT_REGION
    first, second = labels[0], labels[1]
    if first.startswith("s3-") and len(first) > 3:
        return first[3:]
    if first == "s3":
        # s3.dualstack.<region>.amazonaws.com: the region is the next label.
        if second == "dualstack" and len(labels) > 3:
            return labels[2]
        return second
    return DEFAULT_REGION


def is_aws_endpoint(settings: S3Settings) -> bool:
    """Whether requests go to AWS: no endpoint set anywhere (boto3's default),
    or an AWS host name."""
    url = (
        settings.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if not url:
        return True
    return is_aws_url(url)


def given_region(
    settings: S3Settings, *, location: str | None = None, configured: str | None = None
) -> str | None:
    """The region the caller asked for, one way or another: ``settings.region``;
    else the region of the requested bucket ``location`` (upload); else
    AWS_REGION or AWS_DEFAULT_REGION; else the ``configured`` one (the
    profile's); else derived from an AWS endpoint URL's host; else None."""
    if settings.region:
        return settings.region
    if location:
        return region_of_location(location)
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if os.environ.get(variable):
            return os.environ[variable]
    if configured:
        return configured
    if settings.endpoint_url and is_aws_url(settings.endpoint_url):
        return region_from_url(settings.endpoint_url)
    return None


def resolve_region(
    settings: S3Settings, *, location: str | None = None, configured: str | None = None
) -> str:
    """The signing region: :func:`given_region`, else us-east-1."""
    return given_region(settings, location=location, configured=configured) or DEFAULT_REGION


def is_aws_url(url: str) -> bool:
    """Whether ``url`` is an AWS host name (anything else is an S3-compatible server)."""
    host = (urlsplit(url).hostname or "").lower()
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


def as_bucket(value: object) -> BucketRef:
    """A :class:`BucketRef`, or the ``bucket[/key/prefix]`` text of one."""
    if isinstance(value, BucketRef):
        return value
    if isinstance(value, str):
        return parse_bucket(value)
    raise UsageError(
        f"{{param}} must be a BucketRef or 'bucket/prefix' text, not {type(value).__name__}",
        param="bucket",
    )
