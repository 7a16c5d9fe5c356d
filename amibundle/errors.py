"""Every exception amibundle raises on purpose, in one tree.

Every error a user can cause is an :class:`AmibundleError` whose ``str()`` is
one line that says what is wrong; ``hint`` optionally says what to do about
it. Library code raises these and never exits; ``amibundle.cli._errors``
alone decides the exit status of each class, for both command families.

An error about one argument names it through ``param`` (the library's
parameter name, e.g. ``"user"``). Its message is written with a ``{param}``
placeholder (``{switch}`` for a switch to turn on, ``{off}`` for one to turn
off): a Python caller reads ``user=`` / ``force=True`` / ``size_checks=False``,
the command line reads its flag (``--user``, ``--force``, ``--no-size-checks``)::

    err = UsageError("{param} 'x' is not a 12-digit account number", param="user")
    str(err)                           # "user= 'x' is not a 12-digit account number"
    err.render(lambda param, off: "--user")  # "--user 'x' is not a 12-digit account number"

    AmibundleError
    ├── UsageError                an argument value or combination is not acceptable
    ├── OutputExistsError         an output exists and replacing it was not asked for
    ├── ManifestError             a manifest is malformed, hostile or incomplete
    ├── TarFormatError            the bundle's tar stream is not one regular file
    ├── IntegrityError            sizes, digests, signature or padding do not match
    ├── KeyMismatchError          the private key cannot unwrap the bundle key
    ├── CertificateError          a certificate or key cannot be found or read
    ├── StorageError              local file I/O failed (missing, no space, no permission)
    │   └── UploadSourceError         a file an upload must send is missing or unreadable
    ├── S3Error                   S3 refused or could not be reached
    │   ├── LocationMismatchError     the bucket is in another location
    │   ├── AclsDisabledError         the bucket's ACLs are disabled
    │   ├── S3CredentialsError        no credentials, or refused ones
    │   ├── BucketNotEmptyError       delete --clear: the bundle is gone, the bucket kept
    │   ├── NoSuchBucketError         the bucket does not exist
    │   └── LeftoversError            a failed streamed upload could not delete what it sent
    ├── Ec2Error                  EC2 (or STS) refused or could not be reached
    │   ├── Ec2CredentialsError       no credentials, or refused ones
    │   └── ImageFailedError          a registered image ended in state "failed"
    ├── PartialImageError         an image was written to a device or stream only in part
    ├── InstallError              install stopped after the upload: what exists is named
    ├── ToolNotFound              an external program is not installed
    ├── ToolError                 an external program failed
    ├── VolumeError               bundle-vol cannot build the image as asked
    │   └── BootError                 the boot loader cannot be installed as asked
    ├── MetadataUnavailable       the instance metadata service cannot be reached
    ├── EbsError                  EBS refused or could not be reached; a snapshot failed
    ├── DeclinedError             a question was answered no
    ├── PromptTimeout             nobody answered a question in time
    ├── ImageSizeError            the image is empty or larger than EC2 accepts
    ├── BackupExistsError         migrate-manifest's <manifest>.bak is in the way
    ├── MappingError              a kernel or ramdisk id has no match in the target region
    ├── MappingUnavailableError   EC2 cannot be asked to map ids (unknown region, refused)
    └── ImageSourceError          an image cannot be read as its format says (damaged
                                  compressed data, a stream shorter or longer than announced)
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "AclsDisabledError",
    "AmibundleError",
    "BackupExistsError",
    "BootError",
    "BucketNotEmptyError",
    "CertificateError",
    "DeclinedError",
    "EbsError",
    "Ec2CredentialsError",
    "Ec2Error",
    "ImageFailedError",
    "ImageSizeError",
    "ImageSourceError",
    "InstallError",
    "IntegrityError",
    "KeyMismatchError",
    "LeftoversError",
    "LocationMismatchError",
    "ManifestError",
    "MappingError",
    "MappingUnavailableError",
    "MetadataUnavailable",
    "NoSuchBucketError",
    "OutputExistsError",
    "PartialImageError",
    "PromptTimeout",
    "S3CredentialsError",
    "S3Error",
    "StorageError",
    "TarFormatError",
    "ToolError",
    "ToolNotFound",
    "UploadSourceError",
    "UsageError",
    "VolumeError",
    "Spelling",
    "python_spelling",
    "plural",
    "shorten",
]


SHOWN_CHARACTERS = 200


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def shorten(text: str, limit: int = SHOWN_CHARACTERS) -> str:
    """``text`` for a message: control characters escaped (a message stays
    one line), whole when short, else its first ``limit`` characters, an
    ellipsis and the full length. Names and values a user or an attacker
    chose can be a megabyte long."""
    text = _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def plural(count: int, noun: str) -> str:
    """``1 part``, ``2 parts``: counts in messages and summaries."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def python_spelling(template: str, param: str | None) -> str:
    """``template`` with its parameter placeholders as a Python caller writes
    them: ``{param}`` is ``name=``, ``{switch}`` ``name=True`` and ``{off}``
    ``name=False``."""
    if param is None:
        return template
    return (
        template.replace("{param}", f"{param}=")
        .replace("{switch}", f"{param}=True")
        .replace("{off}", f"{param}=False")
    )


Spelling = Callable[[str, bool], str]  # (param, turned off?) -> how a caller writes it


def _spelled(template: str, param: str, spell: Spelling) -> str:
    on = spell(param, False)
    return (
        template.replace("{param}", on).replace("{switch}", on).replace("{off}", spell(param, True))
    )


class AmibundleError(Exception):
    """Root of every deliberate error. ``str(err)`` is a single line.

    ``problems`` holds the single errors of one that reports several at once
    (:meth:`combine`)."""

    def __init__(self, message: str, *, hint: str | None = None, param: str | None = None) -> None:
        super().__init__(python_spelling(message, param))
        self.template = message
        self.hint_template = hint
        self.hint = None if hint is None else python_spelling(hint, param)
        self.param = param
        self.problems: tuple[AmibundleError, ...] = ()

    @classmethod
    def combine(cls, errors: Sequence[AmibundleError]) -> AmibundleError:
        """One error reporting every one of ``errors`` (the error itself when alone)."""
        if len(errors) == 1:
            return errors[0]
        combined = cls("; ".join(str(error) for error in errors))
        combined.problems = tuple(errors)
        hints = [error.hint for error in errors if error.hint]
        combined.hint = "; ".join(hints) if hints else None
        return combined

    def render(self, spell: Spelling) -> str:
        """The message with each parameter spelled by ``spell(param, off)``
        (the CLI's flags: ``--user``; ``--no-inherit`` for ``inherit`` turned off)."""
        if self.problems:
            return "; ".join(problem.render(spell) for problem in self.problems)
        if self.param is None:
            return self.template
        return _spelled(self.template, self.param, spell)

    def render_hint(self, spell: Spelling) -> str | None:
        if self.problems:
            hints = [hint for problem in self.problems if (hint := problem.render_hint(spell))]
            return "; ".join(hints) if hints else None
        if self.hint_template is None or self.param is None:
            return self.hint_template
        return _spelled(self.hint_template, self.param, spell)


class UsageError(AmibundleError):
    """An argument or option value the user gave is not acceptable."""


class OutputExistsError(AmibundleError):
    """An output file already exists and overwriting was not asked for."""

    def __init__(self, path: Path | str, *, what: str = "") -> None:
        subject = f"{what} {path}" if what else str(path)
        super().__init__(f"{subject} already exists; use {{switch}} to replace it", param="force")
        self.path = Path(path)


class ManifestError(AmibundleError):
    """A manifest is not well-formed, is hostile, or lacks a required field."""


class TarFormatError(AmibundleError):
    """The tar stream inside a bundle is malformed or holds something other
    than the one expected regular file."""


class IntegrityError(AmibundleError):
    """Data does not match what the manifest promises: a size, a digest, a
    signature, or the cipher padding."""


class KeyMismatchError(AmibundleError):
    """A private key cannot unwrap the bundle key: it is not the key of the
    certificate the bundle was made for."""


class CertificateError(AmibundleError):
    """A certificate or private key cannot be found or read."""


class StorageError(AmibundleError):
    """Reading or writing local files failed (missing file, no space, no
    permission)."""


# --- S3 ---------------------------------------------------------------------------


class S3Error(AmibundleError):
    """S3 refused a request or could not be reached."""


class LocationMismatchError(S3Error):
    """The bucket exists in another location than the one asked for."""


class AclsDisabledError(S3Error):
    """The bucket's Object Ownership is BucketOwnerEnforced: ACLs are disabled,
    so the grant that lets EC2 read the bundle cannot be set."""


class S3CredentialsError(S3Error):
    """No credentials were found, or S3 refused them."""


class NoSuchBucketError(S3Error):
    """The bucket does not exist."""


# --- external programs, volumes, the instance ---------------------------------------------


class ToolNotFound(AmibundleError):
    """A program amibundle needs is not installed."""

    def __init__(self, tool: str, package: str) -> None:
        super().__init__(
            f"{tool} not found; install {package}", hint=f"e.g. apt-get install {package}"
        )
        self.tool = tool
        self.package = package


class ToolError(AmibundleError):
    """A program exited with a non-zero status (or was killed by a signal)."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr_tail: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        name = Path(self.argv[0]).name if self.argv else "?"
        status = (
            f"killed by {_signal_name(-returncode)}" if returncode < 0 else f"exit {returncode}"
        )
        lines = [line.strip() for line in stderr_tail.splitlines() if line.strip()]
        last = lines[-1] if lines else ""
        super().__init__(f"{name} failed ({status})" + (f": {last}" if last else ""))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class VolumeError(AmibundleError):
    """The image cannot be built as asked (size, layout, builder, script)."""


class MetadataUnavailable(AmibundleError):
    """The instance metadata service cannot be reached (not on EC2, or blocked)."""


# --- questions ---------------------------------------------------------------------------


class DeclinedError(AmibundleError):
    """The user answered no. The classic tools then exited 0, which looks
    like success; amibundle exits 8 so scripts can tell."""


class PromptTimeout(AmibundleError):
    """Nobody answered a question in time."""


# --- the boot loader (bundle-vol) --------------------------------------------------------


class BootError(VolumeError):
    """The boot loader cannot be installed into the image as asked (no GRUB,
    no kernel in the volume, no room for GRUB's core image)."""


# --- classic parity (issue 11) ----------------------------------------------------------


class UploadSourceError(StorageError):
    """A local file an upload must send (a part) is missing or unreadable. The
    classic tools reported this as a failed upload, so it has the S3 commands'
    failure status there."""


class ImageSizeError(AmibundleError):
    """The image is empty, or larger than EC2 accepts for an instance-store
    image. Not a usage error: the command line was right, the data is not."""


class BackupExistsError(AmibundleError):
    """migrate-manifest keeps the original as ``<manifest>.bak`` and will not
    overwrite an earlier backup."""


class MappingError(AmibundleError):
    """A kernel or ramdisk id cannot be mapped to the target region: EC2 does
    not know it, or the target region has no image of the same owner, type and
    manifest key."""


class MappingUnavailableError(AmibundleError):
    """EC2 cannot be asked to map ids: the target region is not one EC2
    reports, or EC2 refused or could not be reached."""


class BucketNotEmptyError(S3Error):
    """The bundle was deleted, but the bucket was kept (as asked to remove it):
    it holds other objects. ``deleted`` names the keys that were deleted."""

    def __init__(
        self, message: str, *, deleted: Sequence[str] = (), hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint, param="clear")
        self.deleted = tuple(deleted)


# --- EBS (to-ebs) ---------------------------------------------------------------------------


class EbsError(AmibundleError):
    """The EBS direct APIs (or EC2's snapshot calls) refused a request or could
    not be reached, or a snapshot ended in the ``error`` state."""


# --- image sources -------------------------------------------------------------------------


class ImageSourceError(AmibundleError):
    """An image cannot be read as its format says: damaged compressed data, a
    stream that ends before (or goes on after) the size announced, a disk
    image qemu-img cannot map."""


# --- streaming to and from S3, EC2 ---------------------------------------------------------


class LeftoversError(S3Error):
    """A streamed upload failed and the objects it had already sent could not
    all be deleted: ``keys`` (full object keys) are left in ``bucket``;
    ``uncertain`` ones, whose upload failed, may be there too."""

    def __init__(
        self,
        message: str,
        *,
        bucket: str = "",
        keys: Sequence[str] = (),
        uncertain: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.bucket = bucket
        self.keys = tuple(keys)
        self.uncertain = tuple(uncertain)


class Ec2Error(AmibundleError):
    """EC2 (or STS, which says whose the credentials are) refused a request
    or could not be reached."""


class Ec2CredentialsError(Ec2Error):
    """No credentials were found, or EC2/STS refused them."""


class ImageFailedError(Ec2Error):
    """A registered image went to state ``failed`` instead of ``available``."""

    def __init__(self, message: str, *, image_id: str = "") -> None:
        super().__init__(message)
        self.image_id = image_id


class PartialImageError(AmibundleError):
    """Writing an image to a device or a stream stopped part way: what was
    written cannot be taken back. ``written`` is how far it got (bytes from
    the start of the image, every one before it written)."""

    def __init__(self, message: str, *, written: int = 0) -> None:
        super().__init__(message)
        self.written = written


class InstallError(AmibundleError):
    """``install`` uploaded a bundle but did not end with an available image.
    The message says what exists: ``manifest_location`` (the bundle, kept)
    and ``image_id`` (registered by this run, or None)."""

    def __init__(
        self,
        message: str,
        *,
        manifest_location: str = "",
        image_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.manifest_location = manifest_location
        self.image_id = image_id
