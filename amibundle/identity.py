"""Who a bundle is for and who signs it: the keys, loaded once, and keygen.

:class:`BundleKeys` holds the user's private key (it signs the manifest),
the public key of the user's certificate and that of EC2's certificate (each
receives a wrapped copy of the bundle key). :meth:`BundleKeys.load` reads
and checks them all before any image byte is read;
:meth:`BundleKeys.generate_for_bundle` makes a fresh key and certificate for
one bundle instead, to be written beside it (:meth:`BundleKeys.write_generated`)
when the bundle is complete.
"""

from __future__ import annotations

import contextlib
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
from amibundle.ec2certs import RegionCertificate, describe_ec2_certificates, find_ec2_certificate
from amibundle.errors import KeyMismatchError, OutputExistsError, UsageError
from amibundle.files import check_directory, refuse_existing, write_atomically
from amibundle.results import JsonRecord
from amibundle.validate import as_optional_path, as_path, check_plain_name, check_text

__all__ = [
    "BundleKeys",
    "Ec2CertificateReport",
    "GeneratedIdentity",
    "KeygenResult",
    "ec2_certificates",
    "keygen",
]

GENERATED_KEY_SUFFIX = ".key.pem"
GENERATED_CERT_SUFFIX = ".cert.pem"
_GENERATED_DAYS = 3650  # the certificate only carries the key: its expiry is never checked


@dataclass(frozen=True)
class GeneratedIdentity:
    """A key and self-signed certificate made for one bundle, and the files
    they go to beside it (written by :meth:`BundleKeys.write_generated`)."""

    private_key: Path
    certificate: Path
    certificate_pem: bytes = field(repr=False)

    @property
    def paths(self) -> tuple[Path, Path]:
        return self.private_key, self.certificate


@dataclass(frozen=True)
class BundleKeys:
    """The keys one bundle is made with. Build it with :meth:`load`."""

    signer: rsa.RSAPrivateKey = field(repr=False)
    user_public: rsa.RSAPublicKey = field(repr=False)
    ec2_public: rsa.RSAPublicKey = field(repr=False)
    certificate: Path
    ec2_certificate: Path
    generated: GeneratedIdentity | None = None  # set by generate_for_bundle

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
        :func:`amibundle.ec2certs.find_ec2_certificate`). A private key that
        is not the certificate's is refused: its signature would not verify."""
        cert_path = as_path(cert, "cert")
        key_path = as_path(private_key, "private_key")
        lookup = find_ec2_certificate(as_optional_path(ec2_cert, "ec2_cert"), region=region)
        signer = load_private_key(key_path)
        user_public = public_key_of(load_certificate(cert_path), cert_path)
        if signer.public_key().public_numbers() != user_public.public_numbers():
            raise KeyMismatchError(
                f"{{param}} {key_path} is not the key of the certificate {cert_path}: "
                "nobody could verify the bundle's signature or unbundle it with that pair",
                hint="give the key the certificate was made for",
                param="private_key",
            )
        return cls(
            signer=signer,
            user_public=user_public,
            ec2_public=public_key_of(load_certificate(lookup.path), lookup.path),
            certificate=cert_path,
            ec2_certificate=lookup.path,
        )

    @classmethod
    def generate_for_bundle(
        cls,
        destination: str | os.PathLike[str],
        prefix: str,
        *,
        ec2_cert: str | os.PathLike[str] | None = None,
        region: str | None = None,
        force: bool = False,
    ) -> BundleKeys:
        """A fresh 2048-bit key and self-signed certificate for the bundle
        ``prefix`` in ``destination``, for when the user has no X.509
        certificate. Nothing is written yet: the bundle's maker calls
        :meth:`write_generated` once the bundle is complete, which puts them at
        ``<destination>/<prefix>.key.pem`` and ``.cert.pem`` (mode 0600), so
        that the bundle can be verified and unbundled later. Existing files
        there are refused now (unless ``force``), before any work."""
        folder = as_path(destination, "destination")
        check_directory(folder, "destination")
        name = check_plain_name(prefix, "prefix")
        key_path = folder / f"{name}{GENERATED_KEY_SUFFIX}"
        cert_path = folder / f"{name}{GENERATED_CERT_SUFFIX}"
        refuse_existing([key_path, cert_path], force=force)
        lookup = find_ec2_certificate(as_optional_path(ec2_cert, "ec2_cert"), region=region)
        ec2_public = public_key_of(load_certificate(lookup.path), lookup.path)
        key, cert = generate_identity(f"amibundle bundle {name}", days=_GENERATED_DAYS)
        return cls(
            signer=key,
            user_public=public_key_of(cert, "the generated certificate"),
            ec2_public=ec2_public,
            certificate=cert_path,
            ec2_certificate=lookup.path,
            generated=GeneratedIdentity(
                key_path, cert_path, cert.public_bytes(serialization.Encoding.PEM)
            ),
        )

    def generated_files(self) -> list[tuple[Path, bytes]]:
        """The files of a generated key and certificate, as (path, PEM
        bytes); none for keys the user gave. A bundle's maker publishes them
        with the bundle (mode 0600), before its manifest."""
        if self.generated is None:
            return []
        key_pem = self.signer.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        return [
            (self.generated.private_key, key_pem),
            (self.generated.certificate, self.generated.certificate_pem),
        ]

    def write_generated(self, *, force: bool = False) -> tuple[Path, ...]:
        """Writes a generated key and certificate (both mode 0600, under a
        temporary ``.amibundle-<pid>-...`` name until complete); returns their
        paths (none for keys the user gave). For sinks that cannot publish
        them with the bundle: call it when the bundle is complete, before its
        manifest is written, so that a bundle whose manifest exists always has
        its key beside it."""
        written: list[Path] = []
        try:
            for path, data in self.generated_files():
                write_atomically(path, data, overwrite=force, mode=0o600)
                written.append(path)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return tuple(written)

    def remove_generated(self) -> None:
        """Removes what :meth:`write_generated` wrote (after a later failure)."""
        if self.generated is not None:
            for path in self.generated.paths:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


@dataclass(frozen=True)
class Ec2CertificateReport(JsonRecord):
    """Which EC2 certificate serves which regions, and where each was found."""

    certificates: tuple[RegionCertificate, ...]

    @property
    def ok(self) -> bool:
        return all(row.path is not None for row in self.certificates)


def ec2_certificates(
    ec2_cert: str | os.PathLike[str] | None = None, *, region: str | None = None
) -> Ec2CertificateReport:
    """The EC2 certificate bundles would be wrapped for, region by region
    (``ec2_cert`` overrides them all, as it does when bundling); ``region``
    (default: ``AWS_REGION``/``AWS_DEFAULT_REGION``) marks the row that applies."""
    explicit = as_optional_path(ec2_cert, "ec2_cert")
    return Ec2CertificateReport(describe_ec2_certificates(explicit, region=region))


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
