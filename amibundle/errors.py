"""The exceptions amibundle raises on purpose.

Every error a user can cause is an :class:`AmibundleError` whose ``str()`` is one
line that says what is wrong; ``hint`` optionally says what to do about it.
Library code raises these and never exits; ``amibundle.cli`` maps them to exit
codes in one place.
"""

from __future__ import annotations

__all__ = [
    "AmibundleError",
    "CertificateError",
    "IntegrityError",
    "KeyMismatchError",
    "ManifestError",
    "OutputExistsError",
    "StorageError",
    "TarFormatError",
    "UsageError",
]


class AmibundleError(Exception):
    """Root of every deliberate error. ``str(err)`` is a single line."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(AmibundleError):
    """An argument or option value the user gave is not acceptable."""


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


class OutputExistsError(AmibundleError):
    """An output file already exists and overwriting was not asked for."""


class StorageError(AmibundleError):
    """Reading or writing local files failed (missing file, no space, no
    permission)."""
