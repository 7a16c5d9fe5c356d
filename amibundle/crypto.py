"""Cryptography of a bundle: AES-128-CBC streams, RSA key wrapping, signatures.

* The bundle's AES key and IV are wrapped for each recipient by RSA-encrypting
  their 32-character lower-case hex *text* with PKCS#1 v1.5 (spec §2).
* The manifest is signed with RSA PKCS#1 v1.5 over SHA-1 (spec §3).
* Recipient certificates are used for their public key only: the classic EC2
  certificates are expired, RSA-1024 and SHA-1 signed, and must keep working.

Randomness is a parameter of :meth:`BundleKey.generate` so known-answer tests
are exact. Secrets never appear in ``repr`` or in log messages.
"""

from __future__ import annotations

import datetime
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from amibundle.errors import (
    CertificateError,
    IntegrityError,
    KeyMismatchError,
    OutputExistsError,
    StorageError,
)
from amibundle.files import read_input

__all__ = [
    "AES_BLOCK",
    "BundleKey",
    "CbcDecryptor",
    "CbcEncryptor",
    "generate_identity",
    "load_certificate",
    "load_private_key",
    "public_key_of",
    "sign",
    "unwrap_secret",
    "verify_signature",
    "wrap_secret",
    "write_private_key",
]

AES_BLOCK = 16
_SECRET_LEN = 16
Sink = Callable[[memoryview], None]


@dataclass(frozen=True)
class BundleKey:
    """The AES-128 key and IV of one bundle."""

    key: bytes = field(repr=False)
    iv: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != _SECRET_LEN or len(self.iv) != _SECRET_LEN:
            raise ValueError("AES-128-CBC needs a 16-byte key and a 16-byte IV")

    @classmethod
    def generate(cls, randbytes: Callable[[int], bytes] = os.urandom) -> BundleKey:
        """A fresh key and IV from a CSPRNG (``randbytes`` is injectable for tests)."""
        return cls(key=randbytes(_SECRET_LEN), iv=randbytes(_SECRET_LEN))

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.iv))


# --- keys and certificates -------------------------------------------------


_MAX_KEY_FILE = 1 << 20  # PEM keys and certificates are a few KiB


def _read_pem(path: Path, what: str) -> bytes:
    try:
        data = read_input(path, what, limit=_MAX_KEY_FILE)
    except FileNotFoundError:
        raise CertificateError(f"{what} {path} does not exist") from None
    except StorageError as err:
        raise CertificateError(str(err)) from None
    except OSError as err:
        raise CertificateError(f"cannot read {what} {path}: {err.strerror}") from None
    if len(data) > _MAX_KEY_FILE:
        kind = "an X.509 certificate" if what == "certificate" else "a private key"
        raise CertificateError(f"{path} is not {kind}: it is larger than 1 MiB")
    return data


def load_certificate(path: Path) -> x509.Certificate:
    """An X.509 certificate in PEM (or DER). Expiry and signature algorithm are
    deliberately not checked: only the public key is used."""
    data = _read_pem(path, "certificate")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise CertificateError(f"{path} is not an X.509 certificate") from None


def public_key_of(cert: x509.Certificate, path: Path | str = "certificate") -> rsa.RSAPublicKey:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise CertificateError(f"{path} does not hold an RSA public key; bundles need RSA")
    return key


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    """An unencrypted RSA private key in PEM (PKCS#1 or PKCS#8) or DER."""
    data = _read_pem(path, "private key")
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        raise CertificateError(
            f"private key {path} is protected by a passphrase; give an unencrypted key"
        ) from None
    except ValueError:
        raise CertificateError(f"{path} is not a readable private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CertificateError(f"{path} is not an RSA private key")
    return key


def write_private_key(path: Path, key: rsa.RSAPrivateKey, *, overwrite: bool = False) -> None:
    """Writes ``key`` as PEM with mode 0600 from the first byte on (never
    readable by others, not even briefly)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, stat.S_IRUSR | stat.S_IWUSR)
    except FileExistsError:
        raise OutputExistsError(path) from None
    except OSError as err:
        raise StorageError(f"cannot write {path}: {err.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), stat.S_IRUSR | stat.S_IWUSR)
        out.write(pem)


def generate_identity(
    common_name: str, *, days: int, bits: int = 2048
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A new RSA key and a self-signed certificate for it (bundling outside
    AWS, tests). The certificate is signed with SHA-256."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


# --- wrapping the bundle key for recipients --------------------------------


def wrap_secret(public_key: rsa.RSAPublicKey, secret: bytes) -> str:
    """RSA-encrypts the hex text of ``secret``; returns the ciphertext as hex."""
    return public_key.encrypt(secret.hex().encode("ascii"), padding.PKCS1v15()).hex()


def unwrap_secret(private_key: rsa.RSAPrivateKey, wrapped_hex: str, what: str) -> bytes:
    """Reverses :func:`wrap_secret`. A private key that is not the recipient's
    raises :class:`KeyMismatchError`."""
    try:
        wrapped = bytes.fromhex(wrapped_hex)
    except ValueError:
        raise IntegrityError(f"the manifest's {what} is not hex") from None
    # OpenSSL 3.2+ answers a wrong key with random bytes rather than an error
    # (implicit rejection, against padding oracles), so both cases end here.
    mismatch = KeyMismatchError(
        f"the private key cannot decrypt the bundle's {what}: it is not the key of the "
        "certificate the bundle was made for (or the manifest is damaged)"
    )
    try:
        text = private_key.decrypt(wrapped, padding.PKCS1v15())
        secret = bytes.fromhex(text.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise mismatch from None
    if len(secret) != _SECRET_LEN:
        raise mismatch
    return secret


# --- signatures ------------------------------------------------------------


def sign(private_key: rsa.RSAPrivateKey, data: bytes) -> str:
    """Hex RSA PKCS#1 v1.5 SHA-1 signature, as the manifest carries it."""
    return private_key.sign(data, padding.PKCS1v15(), hashes.SHA1()).hex()


def verify_signature(public_key: rsa.RSAPublicKey, data: bytes, signature_hex: str) -> None:
    """Raises :class:`IntegrityError` unless ``signature_hex`` signs ``data``."""
    try:
        signature = bytes.fromhex(signature_hex)
        public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA1())
    except (ValueError, InvalidSignature):
        raise IntegrityError(
            "manifest signature does not verify with the given certificate"
        ) from None


# --- streaming AES-128-CBC -------------------------------------------------


class CbcEncryptor:
    """Encrypts a stream with PKCS#7 padding, as ``openssl enc -aes-128-cbc``.

    Output goes to ``sink`` as views into one reused buffer: the sink must use
    (or copy) each view before it returns. Reusing the buffer is what makes
    ``update_into`` about twice as fast as ``update`` on large chunks.
    """

    def __init__(self, key: BundleKey, sink: Sink, *, max_chunk: int = 4 << 20) -> None:
        self._ctx = key._cipher().encryptor()
        self._pad = 0  # bytes fed so far modulo the block size
        self._sink = sink
        self._max_chunk = max_chunk
        # close() feeds up to one whole block of padding through the same buffer.
        self._buf = bytearray(max(max_chunk, AES_BLOCK) + AES_BLOCK - 1)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), self._max_chunk):
            piece = view[start : start + self._max_chunk]
            n = self._ctx.update_into(piece, self._buf)
            self._pad = (self._pad + len(piece)) % AES_BLOCK
            if n:
                self._sink(memoryview(self._buf)[:n])

    def close(self) -> None:
        """Writes the final padded block(s)."""
        fill = AES_BLOCK - self._pad
        n = self._ctx.update_into(bytes([fill]) * fill, self._buf)
        tail = self._ctx.finalize()
        self._sink(memoryview(bytes(self._buf[:n]) + tail))


class CbcDecryptor:
    """Decrypts a stream written by :class:`CbcEncryptor` (or openssl).

    The last 16 bytes are held back until :meth:`close`, which checks and
    removes the PKCS#7 padding; a truncated or tampered stream raises
    :class:`IntegrityError` there.
    """

    def __init__(self, key: BundleKey, sink: Sink, *, max_chunk: int = 4 << 20) -> None:
        self._ctx = key._cipher().decryptor()
        self._sink = sink
        self._max_chunk = max_chunk
        self._buf = bytearray(max_chunk + AES_BLOCK - 1)
        self._held = b""  # the newest decrypted block: it may be the padding

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), self._max_chunk):
            n = self._ctx.update_into(view[start : start + self._max_chunk], self._buf)
            if not n:
                continue
            if self._held:
                self._sink(memoryview(self._held))
            if n > AES_BLOCK:
                self._sink(memoryview(self._buf)[: n - AES_BLOCK])
            self._held = bytes(self._buf[n - AES_BLOCK : n])

    def close(self) -> None:
        try:
            whole_blocks = not self._ctx.finalize()
        except ValueError:  # a partial last block: the stream was cut short
            whole_blocks = False
        block = self._held
        fill = block[-1] if block else 0
        if not whole_blocks or not 1 <= fill <= AES_BLOCK or block[-fill:] != bytes([fill]) * fill:
            raise IntegrityError(
                "the encrypted data does not end with valid padding: "
                "a part is truncated or damaged, or the key is wrong"
            )
        if fill < AES_BLOCK:
            self._sink(memoryview(block)[: AES_BLOCK - fill])
