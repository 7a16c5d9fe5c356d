"""Who a bundle is for and who signs it: the keys, loaded once, and keygen.

:class:`BundleKeys` holds the user's private key (it signs the manifest),
the public key of the user's certificate and that of EC2's certificate (each
receives a wrapped copy of the bundle key). :meth:`BundleKeys.load` reads
and checks them all before any image byte is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from amibundle.crypto import (
    generate_identity,
    load_certificate,
    load_private_key,
    public_key_of,
    write_private_key,
)
from amibundle.ec2certs import find_ec2_certificate
from amibundle.errors import OutputExistsError, UsageError
from amibundle.files import write_atomically
from amibundle.results import JsonRecord
from amibundle.validate import as_optional_path, as_path, check_text

__all__ = ["BundleKeys", "KeygenResult", "keygen"]


@dataclass(frozen=True)
class BundleKeys:
    """The keys one bundle is made with. Build it with :meth:`load`."""

    signer: rsa.RSAPrivateKey = field(repr=False)
    user_public: rsa.RSAPublicKey = field(repr=False)
    ec2_public: rsa.RSAPublicKey = field(repr=False)
    certificate: Path
    ec2_certificate: Path

    @classmethod
    def load(
        cls,
        *,
        cert: str | os.PathLike[str],
        private_key: str | os.PathLike[str],
        ec2_cert: str | os.PathLike[str] | None = None,
        region: str | None = None,
    ) -> BundleKeys:
        """Reads the user's certificate and private key and finds EC2's
        certificate (``ec2_cert``, else by ``region``: see
        :func:`amibundle.ec2certs.find_ec2_certificate`)."""
        cert_path = as_path(cert, "cert")
        key_path = as_path(private_key, "private_key")
        lookup = find_ec2_certificate(as_optional_path(ec2_cert, "ec2_cert"), region=region)
        return cls(
            signer=load_private_key(key_path),
            user_public=public_key_of(load_certificate(cert_path), cert_path),
            ec2_public=public_key_of(load_certificate(lookup.path), lookup.path),
            certificate=cert_path,
            ec2_certificate=lookup.path,
        )


@dataclass(frozen=True)
class KeygenResult(JsonRecord):
    private_key: Path
    certificate: Path
    common_name: str
    sha1_fingerprint: str


def keygen(
    private_key: str | os.PathLike[str],
    certificate: str | os.PathLike[str],
    *,
    common_name: str = "amibundle",
    days: int = 3650,
    force: bool = False,
) -> KeygenResult:
    """Writes a new 2048-bit RSA private key (mode 0600) and a self-signed
    X.509 certificate for it."""
    key_path = as_path(private_key, "private_key")
    cert_path = as_path(certificate, "certificate")
    check_text(common_name, "common_name")
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise UsageError(f"{{param}} must be at least 1, not {days!r}", param="days")
    if not force:
        for path in (key_path, cert_path):
            if path.exists():
                raise OutputExistsError(path)
    key, cert = generate_identity(common_name, days=days)
    write_private_key(key_path, key, overwrite=force)
    write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), overwrite=force)
    fingerprint = cert.fingerprint(hashes.SHA1()).hex(":").upper()
    return KeygenResult(key_path, cert_path, common_name, fingerprint)
