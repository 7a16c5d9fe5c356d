"""Unit tests of amibundle.crypto (and amibundle.keygen), cross-checked with
the openssl command line: AES-128-CBC streams, RSA key wrapping, SHA-1
signatures, and loading keys and certificates of every form a user may have."""

from __future__ import annotations

import datetime
import itertools
import os
import random
import re
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

import amibundle
from amibundle.crypto import (
    BundleKey,
    CbcDecryptor,
    CbcEncryptor,
    load_certificate,
    load_private_key,
    public_key_of,
    sign,
    unwrap_secret,
    verify_signature,
    wrap_secret,
)
from amibundle.errors import (
    CertificateError,
    IntegrityError,
    KeyMismatchError,
    OutputExistsError,
    UsageError,
)
from tests.support.common import SHARED, SHARED_ABSENT, Identity

EC2_CERTS = SHARED / "ec2-certs"
CHUNK_SIZES = [1, 5, 15, 16, 17, 33, 4096, 4 << 20]


def openssl(*args: str, data: bytes | None = None) -> bytes:
    """Runs ``openssl args``; returns stdout, failing the test on a non-zero exit."""
    done = subprocess.run(["openssl", *args], input=data, capture_output=True)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def openssl_enc(key: BundleKey, data: bytes, *, decrypt: bool = False) -> bytes:
    flags = ["-d"] if decrypt else []
    return openssl(
        "enc", *flags, "-aes-128-cbc", "-K", key.key.hex(), "-iv", key.iv.hex(), data=data
    )


def counting_randbytes(start: int = 0) -> Callable[[int], bytes]:
    """Deterministic 'randomness': consecutive byte values, so the order in
    which key and IV are drawn is visible."""
    counter = iter(range(start, 1 << 30))

    def randbytes(n: int) -> bytes:
        return bytes(next(counter) % 256 for _ in range(n))

    return randbytes


def encrypt(key: BundleKey, pieces: list[bytes], max_chunk: int = 4 << 20) -> bytes:
    out = bytearray()
    # extend() copies each view before the encryptor reuses its buffer.
    encryptor = CbcEncryptor(key, out.extend, max_chunk=max_chunk)
    for piece in pieces:
        encryptor.write(piece)
    encryptor.close()
    return bytes(out)


def decrypt(key: BundleKey, pieces: list[bytes], max_chunk: int = 4 << 20) -> bytes:
    out = bytearray()
    decryptor = CbcDecryptor(key, out.extend, max_chunk=max_chunk)
    for piece in pieces:
        decryptor.write(piece)
    decryptor.close()
    return bytes(out)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@st.composite
def payloads(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """Data of 0..70000 bytes (block-boundary lengths favoured) and an odd
    split of it into write() calls, some of them empty."""
    length = draw(
        st.one_of(
            st.integers(0, 70_000),
            st.sampled_from([0, 1, 15, 16, 17, 31, 32, 33, 65_535, 65_536, 65_537]),
        )
    )
    data = random.Random(draw(st.integers(0, 2**32))).randbytes(length)
    cuts = draw(st.lists(st.integers(0, length), max_size=8))
    return data, split(data, cuts)


keys = st.builds(
    BundleKey,
    key=st.binary(min_size=16, max_size=16),
    iv=st.binary(min_size=16, max_size=16),
)


# --- BundleKey -------------------------------------------------------------


def test_generate_draws_key_then_iv_from_the_given_randomness() -> None:
    key = BundleKey.generate(randbytes=counting_randbytes())
    assert key.key == bytes(range(16))
    assert key.iv == bytes(range(16, 32))


def test_generate_defaults_to_fresh_randomness() -> None:
    assert BundleKey.generate() != BundleKey.generate()


@pytest.mark.parametrize(("key_len", "iv_len"), [(15, 16), (16, 17), (32, 16), (0, 0)])
def test_bundle_key_needs_16_byte_key_and_iv(key_len: int, iv_len: int) -> None:
    with pytest.raises(ValueError, match="16-byte"):
        BundleKey(key=bytes(key_len), iv=bytes(iv_len))


def test_bundle_key_repr_never_shows_the_secrets() -> None:
    key = BundleKey(key=bytes(range(100, 116)), iv=bytes(range(200, 216)))
    for text in (repr(key), str(key)):
        for secret in (key.key, key.iv):
            assert secret.hex() not in text
            assert repr(secret) not in text
            assert secret.hex().upper() not in text
        assert "100" not in text  # not even as a list of integers


# --- AES-128-CBC -------------------------------------------------------------


def test_nist_sp800_38a_cbc_aes128_vector() -> None:
    """SP 800-38A F.2.1: the first ciphertext blocks are the standard's; our
    PKCS#7 padding block follows."""
    key = BundleKey(
        key=bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"),
        iv=bytes.fromhex("000102030405060708090a0b0c0d0e0f"),
    )
    plain = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
    cipher = encrypt(key, [plain])
    assert cipher[:32].hex() == "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
    assert len(cipher) == 48
    assert decrypt(key, [cipher]) == plain


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 1000, 70_000])
def test_known_answer_with_injected_randomness_matches_openssl(length: int) -> None:
    key = BundleKey.generate(randbytes=counting_randbytes(7))
    data = random.Random(length).randbytes(length)
    expected = openssl_enc(key, data)
    assert len(expected) == (length // 16 + 1) * 16
    assert encrypt(key, [data]) == expected
    assert decrypt(key, [expected]) == data


@settings(max_examples=60, deadline=None)
@given(key=keys, payload=payloads(), max_chunk=st.sampled_from(CHUNK_SIZES))
def test_encryptor_output_equals_openssl_enc(
    key: BundleKey, payload: tuple[bytes, list[bytes]], max_chunk: int
) -> None:
    data, pieces = payload
    assert encrypt(key, pieces, max_chunk) == openssl_enc(key, data)


@settings(max_examples=60, deadline=None)
@given(
    key=keys,
    payload=payloads(),
    enc_chunk=st.sampled_from(CHUNK_SIZES),
    dec_chunk=st.sampled_from(CHUNK_SIZES),
    cuts=st.lists(st.integers(0, 70_016), max_size=8),
)
def test_decryptor_round_trips_with_any_splits(
    key: BundleKey,
    payload: tuple[bytes, list[bytes]],
    enc_chunk: int,
    dec_chunk: int,
    cuts: list[int],
) -> None:
    data, pieces = payload
    cipher = encrypt(key, pieces, enc_chunk)
    assert decrypt(key, split(cipher, cuts), dec_chunk) == data


@settings(max_examples=40, deadline=None)
@given(
    key=keys,
    payload=payloads(),
    dec_chunk=st.sampled_from(CHUNK_SIZES),
    cuts=st.lists(st.integers(0, 70_016), max_size=8),
)
def test_decryptor_reads_openssl_output(
    key: BundleKey, payload: tuple[bytes, list[bytes]], dec_chunk: int, cuts: list[int]
) -> None:
    data, _ = payload
    assert decrypt(key, split(openssl_enc(key, data), cuts), dec_chunk) == data


def test_encryptor_views_are_only_valid_during_the_call() -> None:
    """The documented contract: the sink gets views into one reused buffer,
    so a sink that keeps views (instead of copying) sees them change."""
    key = BundleKey(bytes(16), bytes(16))
    kept: list[memoryview] = []
    encryptor = CbcEncryptor(key, kept.append, max_chunk=64)
    encryptor.write(bytes(64))
    first = bytes(kept[0])
    encryptor.write(b"\xff" * 64)
    encryptor.close()
    assert bytes(kept[0]) != first  # reused, so copying in the sink is required
    assert first == openssl_enc(key, bytes(64))[:64]


def _full_padding_cipher() -> tuple[BundleKey, bytes]:
    """A ciphertext whose last plaintext block is the full padding block 16 x 0x10."""
    key = BundleKey.generate(randbytes=counting_randbytes(99))
    return key, encrypt(key, [b"A" * 32])


def _with_last_plaintext_block(last_block: bytes) -> tuple[BundleKey, bytes]:
    """Flipping bits of the next-to-last ciphertext block flips exactly the
    same bits of the last plaintext block (CBC), so the padding the
    decryptor sees is chosen exactly."""
    key, cipher = _full_padding_cipher()
    tampered = bytearray(cipher)
    for i, (want, have) in enumerate(zip(last_block, bytes([0x10] * 16), strict=True)):
        tampered[-32 + i] ^= want ^ have
    return key, bytes(tampered)


@pytest.mark.parametrize("cut", [1, 5, 15, 17, 31])
def test_decryptor_rejects_truncated_ciphertext(cut: int) -> None:
    key, cipher = _full_padding_cipher()
    with pytest.raises(IntegrityError, match="padding"):
        decrypt(key, [cipher[:-cut]])


def test_decryptor_rejects_empty_input() -> None:
    key, _ = _full_padding_cipher()
    with pytest.raises(IntegrityError, match="truncated or damaged"):
        decrypt(key, [])
    with pytest.raises(IntegrityError):
        decrypt(key, [b"", b""])


@pytest.mark.parametrize(
    "last_block",
    [
        bytes([0x10] * 15 + [0x00]),  # fill 0
        bytes([0x10] * 15 + [0x11]),  # fill 17
        bytes([0x10] * 15 + [0xFF]),
        bytes([0x10] * 14 + [0x03, 0x03]),  # claims 3 bytes, only 2 agree
        bytes([0x10] * 15 + [0x02]),
        bytes([0x11] * 16),
    ],
)
def test_decryptor_rejects_bad_padding(last_block: bytes) -> None:
    key, tampered = _with_last_plaintext_block(last_block)
    with pytest.raises(IntegrityError, match="padding"):
        decrypt(key, [tampered])
    failed = subprocess.run(
        ["openssl", "enc", "-d", "-aes-128-cbc", "-K", key.key.hex(), "-iv", key.iv.hex()],
        input=tampered,
        capture_output=True,
    )
    assert failed.returncode != 0  # openssl agrees the padding is bad


@pytest.mark.parametrize("fill", [1, 2, 15, 16])
def test_decryptor_strips_exactly_the_padding_it_finds(fill: int) -> None:
    """The same bit-flipping makes other valid paddings: the decryptor keeps
    16 - fill bytes of the last block, as openssl does (so the tests above
    fail for the padding, not for any change at all)."""
    last_block = bytes([0x0F] * (16 - fill) + [fill] * fill)
    key, tampered = _with_last_plaintext_block(last_block)
    out = decrypt(key, [tampered])
    # (the flipped block itself decrypts to noise: only the last block is known)
    assert len(out) == 48 - fill
    assert out[32:] == bytes([0x0F] * (16 - fill))
    assert out == openssl_enc(key, tampered, decrypt=True)


@pytest.mark.parametrize("position", range(16))
def test_decryptor_agrees_with_openssl_on_a_damaged_last_block(position: int) -> None:
    """A damaged last ciphertext block decrypts to noise: whatever openssl
    makes of it (almost always 'bad decrypt'), we must too."""
    key, cipher = _full_padding_cipher()
    damaged = bytearray(cipher)
    damaged[-16 + position] ^= 0x5A
    theirs = subprocess.run(
        ["openssl", "enc", "-d", "-aes-128-cbc", "-K", key.key.hex(), "-iv", key.iv.hex()],
        input=bytes(damaged),
        capture_output=True,
    )
    if theirs.returncode == 0:
        assert decrypt(key, [bytes(damaged)]) == theirs.stdout
    else:
        with pytest.raises(IntegrityError):
            decrypt(key, [bytes(damaged)])


# --- wrapping the bundle key ---------------------------------------------------


def public_key(identity: Identity) -> rsa.RSAPublicKey:
    return public_key_of(load_certificate(identity.cert), identity.cert)


@pytest.mark.parametrize("secret", [bytes(16), bytes(range(16)), b"\xff" * 16])
def test_openssl_unwraps_our_wrapping_to_the_hex_text(secret: bytes, user_id: Identity) -> None:
    wrapped = wrap_secret(public_key(user_id), secret)
    assert re.fullmatch(r"[0-9a-f]{512}", wrapped)  # 2048-bit RSA, lower-case hex
    text = openssl(
        "pkeyutl",
        "-decrypt",
        "-inkey",
        str(user_id.key),
        "-pkeyopt",
        "rsa_padding_mode:pkcs1",
        data=bytes.fromhex(wrapped),
    )
    assert text == secret.hex().encode()


def test_wrapping_is_randomised(user_id: Identity) -> None:
    secret = os.urandom(16)
    one, two = (wrap_secret(public_key(user_id), secret) for _ in range(2))
    assert one != two
    private = load_private_key(user_id.key)
    assert unwrap_secret(private, one, "key") == unwrap_secret(private, two, "key") == secret


def openssl_wrap(text: bytes, identity: Identity) -> str:
    return openssl(
        "pkeyutl",
        "-encrypt",
        "-certin",
        "-inkey",
        str(identity.cert),
        "-pkeyopt",
        "rsa_padding_mode:pkcs1",
        data=text,
    ).hex()


def test_we_unwrap_openssl_wrapping(user_id: Identity) -> None:
    secret = os.urandom(16)
    wrapped = openssl_wrap(secret.hex().encode(), user_id)
    assert unwrap_secret(load_private_key(user_id.key), wrapped, "user_encrypted_key") == secret


def test_unwrap_accepts_upper_case_hex_manifests(user_id: Identity) -> None:
    secret = os.urandom(16)
    wrapped = openssl_wrap(secret.hex().encode(), user_id).upper()
    assert unwrap_secret(load_private_key(user_id.key), wrapped, "key") == secret


@pytest.mark.parametrize("attempt", range(4))
def test_unwrap_with_a_wrong_private_key_is_a_key_mismatch(
    attempt: int, user_id: Identity, other_id: Identity
) -> None:
    """OpenSSL may answer a wrong key with an error or (implicit rejection)
    with random bytes; either way the outcome is KeyMismatchError."""
    wrapped = wrap_secret(public_key(user_id), os.urandom(16))
    with pytest.raises(KeyMismatchError, match="user_encrypted_iv") as caught:
        unwrap_secret(load_private_key(other_id.key), wrapped, "user_encrypted_iv")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "plaintext",
    [
        b"00112233445566778899aabbccddeeff00",  # 17 bytes of hex
        b"0011223344556677",  # 8 bytes of hex
        b"not hex at all, but 32 chars ok!",
        b"",
    ],
)
def test_unwrap_rejects_a_plaintext_that_is_not_16_bytes_of_hex(
    plaintext: bytes, user_id: Identity
) -> None:
    wrapped = openssl_wrap(plaintext, user_id)
    with pytest.raises(KeyMismatchError):
        unwrap_secret(load_private_key(user_id.key), wrapped, "user_encrypted_key")


@pytest.mark.parametrize("wrapped", ["xyz", "0", "0g"])
def test_unwrap_of_non_hex_is_an_integrity_error(wrapped: str, user_id: Identity) -> None:
    with pytest.raises(IntegrityError, match="ec2_encrypted_key is not hex"):
        unwrap_secret(load_private_key(user_id.key), wrapped, "ec2_encrypted_key")


# --- signatures --------------------------------------------------------------


@pytest.fixture(scope="module")
def user_public_pem(user_id: Identity, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pub") / "user-pub.pem"
    path.write_bytes(openssl("x509", "-pubkey", "-noout", "-in", str(user_id.cert)))
    return path


SIGNED_TEXTS = [b"", b"<machine_configuration></machine_configuration>", os.urandom(5000)]


@pytest.mark.parametrize("data", SIGNED_TEXTS)
def test_signature_equals_openssl_dgst_sign(data: bytes, user_id: Identity) -> None:
    """PKCS#1 v1.5 signatures are deterministic, so ours must be openssl's."""
    theirs = openssl("dgst", "-sha1", "-sign", str(user_id.key), data=data)
    assert sign(load_private_key(user_id.key), data) == theirs.hex()


@pytest.mark.parametrize("data", SIGNED_TEXTS)
def test_openssl_verifies_our_signature(
    data: bytes, user_id: Identity, user_public_pem: Path, tmp_path: Path
) -> None:
    signature = tmp_path / "sig"
    signature.write_bytes(bytes.fromhex(sign(load_private_key(user_id.key), data)))
    out = openssl(
        "dgst", "-sha1", "-verify", str(user_public_pem), "-signature", str(signature), data=data
    )
    assert b"Verified OK" in out


def test_we_verify_openssl_signatures_and_reject_tampering(user_id: Identity) -> None:
    data = b"<machine_configuration><architecture>x86_64</architecture></machine_configuration>"
    signature = openssl("dgst", "-sha1", "-sign", str(user_id.key), data=data).hex()
    verify_signature(public_key(user_id), data, signature)
    for i in (0, len(data) // 2, len(data) - 1):
        tampered = bytearray(data)
        tampered[i] ^= 0x01
        with pytest.raises(IntegrityError, match="signature does not verify"):
            verify_signature(public_key(user_id), bytes(tampered), signature)
    bad_signature = bytearray(bytes.fromhex(signature))
    bad_signature[-1] ^= 0x01
    with pytest.raises(IntegrityError):
        verify_signature(public_key(user_id), data, bad_signature.hex())
    with pytest.raises(IntegrityError):
        verify_signature(public_key(user_id), data, signature[:-2])
    with pytest.raises(IntegrityError):
        verify_signature(public_key(user_id), data, "not hex")


def test_signature_by_another_key_does_not_verify(user_id: Identity, other_id: Identity) -> None:
    signature = sign(load_private_key(other_id.key), b"data")
    with pytest.raises(IntegrityError):
        verify_signature(public_key(user_id), b"data", signature)


# --- loading keys and certificates ---------------------------------------------


def same_key(private: rsa.RSAPrivateKey, public: rsa.RSAPublicKey) -> bool:
    return private.public_key().public_numbers() == public.public_numbers()


@pytest.mark.parametrize(
    "convert",
    [
        [],  # as keygen wrote it: PEM, PKCS#1
        ["pkcs8", "-topk8", "-nocrypt"],  # PEM, PKCS#8
        ["rsa", "-outform", "DER", "-traditional"],  # DER, PKCS#1
        ["pkcs8", "-topk8", "-nocrypt", "-outform", "DER"],  # DER, PKCS#8
    ],
    ids=["pem-pkcs1", "pem-pkcs8", "der-pkcs1", "der-pkcs8"],
)
def test_private_key_forms_load(convert: list[str], user_id: Identity, tmp_path: Path) -> None:
    path = user_id.key
    if convert:
        path = tmp_path / "key"
        path.write_bytes(openssl(*convert, "-in", str(user_id.key)))
    assert same_key(load_private_key(path), public_key(user_id))


@pytest.mark.parametrize("form", ["PEM", "DER"])
def test_certificate_forms_load(form: str, user_id: Identity, tmp_path: Path) -> None:
    path = tmp_path / "cert"
    path.write_bytes(openssl("x509", "-in", str(user_id.cert), "-outform", form))
    cert = load_certificate(path)
    assert same_key(load_private_key(user_id.key), public_key_of(cert, path))


def assert_one_line(err: pytest.ExceptionInfo[CertificateError], *parts: str) -> None:
    message = str(err.value)
    assert "\n" not in message
    for part in parts:
        assert part in message


def test_missing_files_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(CertificateError) as err:
        load_certificate(missing)
    assert_one_line(err, str(missing), "does not exist")
    with pytest.raises(CertificateError) as err:
        load_private_key(missing)
    assert_one_line(err, str(missing), "does not exist")


def test_a_directory_is_not_a_key_or_certificate(tmp_path: Path) -> None:
    with pytest.raises(CertificateError) as err:
        load_certificate(tmp_path)
    assert_one_line(err, "is a directory, not a regular file", str(tmp_path))
    with pytest.raises(CertificateError) as err:
        load_private_key(tmp_path)
    assert_one_line(err, "is a directory, not a regular file", str(tmp_path))


GARBAGE = {
    "random": os.urandom(300),
    "empty": b"",
    "text": b"hello world\n",
    "bad-pem-cert": b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    "bad-pem-key": b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
}


@pytest.mark.parametrize("name", GARBAGE)
def test_garbage_is_a_certificate_error(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.pem"
    path.write_bytes(GARBAGE[name])
    with pytest.raises(CertificateError) as err:
        load_certificate(path)
    assert_one_line(err, str(path), "not an X.509 certificate")
    with pytest.raises(CertificateError) as err:
        load_private_key(path)
    assert_one_line(err, str(path), "not a readable private key")


def test_key_and_certificate_swapped(user_id: Identity) -> None:
    with pytest.raises(CertificateError) as err:
        load_certificate(user_id.key)
    assert_one_line(err, str(user_id.key))
    with pytest.raises(CertificateError) as err:
        load_private_key(user_id.cert)
    assert_one_line(err, str(user_id.cert))


@pytest.fixture(scope="module")
def ec_identity(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    folder = tmp_path_factory.mktemp("ec")
    key, cert = folder / "ec-pk.pem", folder / "ec-cert.pem"
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    openssl(
        "req", "-new", "-x509", "-key", str(key), "-subj", "/CN=ec", "-days", "1", "-out", str(cert)
    )
    return Identity(key, cert)


def test_an_ec_key_is_refused_as_not_rsa(ec_identity: Identity) -> None:
    with pytest.raises(CertificateError) as err:
        load_private_key(ec_identity.key)
    assert_one_line(err, str(ec_identity.key), "not an RSA private key")
    cert = load_certificate(ec_identity.cert)  # a fine certificate...
    with pytest.raises(CertificateError) as err:
        public_key_of(cert, ec_identity.cert)  # ...but bundles need RSA
    assert_one_line(err, str(ec_identity.cert), "RSA")


@pytest.mark.parametrize(
    "encrypt_args",
    [
        ["pkcs8", "-topk8", "-v2", "aes-128-cbc", "-passout", "pass:secret"],
        ["rsa", "-aes128", "-traditional", "-passout", "pass:secret"],
        ["pkcs8", "-topk8", "-v2", "aes-128-cbc", "-passout", "pass:secret", "-outform", "DER"],
    ],
    ids=["pkcs8-pem", "traditional-pem", "pkcs8-der"],
)
def test_a_passphrase_protected_key_gets_a_clear_message(
    encrypt_args: list[str], user_id: Identity, tmp_path: Path
) -> None:
    path = tmp_path / "locked.pem"
    path.write_bytes(openssl(*encrypt_args, "-in", str(user_id.key)))
    with pytest.raises(CertificateError) as err:
        load_private_key(path)
    assert_one_line(err, str(path), "passphrase")


def classic_ec2_certs() -> list[Path]:
    return sorted(EC2_CERTS.glob("cert-ec2*.pem")) if EC2_CERTS.is_dir() else []


@pytest.mark.parametrize("path", classic_ec2_certs() or [EC2_CERTS / "absent"], ids=str)
def test_classic_expired_sha1_ec2_certificates_load(path: Path) -> None:
    if not path.is_file():
        pytest.skip(f"{SHARED_ABSENT}: no classic EC2 certificates in {EC2_CERTS}")
    cert = load_certificate(path)
    key = public_key_of(cert, path)
    assert cert.not_valid_after_utc < datetime.datetime.now(datetime.timezone.utc)  # expired
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha1"
    assert key.key_size in (1024, 2048)
    modulus = openssl("x509", "-noout", "-modulus", "-in", str(path)).decode().strip()
    assert int(modulus.removeprefix("Modulus="), 16) == key.public_numbers().n
    secret = os.urandom(16)
    assert len(wrap_secret(key, secret)) == key.key_size // 4  # usable for wrapping


# --- keygen ------------------------------------------------------------------


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """Mode bits then come only from the code, not from the caller's umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_keygen_writes_a_0600_key_and_a_matching_certificate(
    tmp_path: Path, umask_zero: None
) -> None:
    key, cert = tmp_path / "pk.pem", tmp_path / "cert.pem"
    result = amibundle.keygen(key, cert, common_name="build-bot", days=30)
    assert (result.private_key, result.certificate) == (key, cert)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert b"CN = build-bot" in openssl("x509", "-noout", "-subject", "-in", str(cert))
    assert b"RSA key ok" in openssl("rsa", "-check", "-noout", "-in", str(key))
    assert b"Private-Key: (2048 bit" in openssl("rsa", "-noout", "-text", "-in", str(key))
    assert openssl("x509", "-pubkey", "-noout", "-in", str(cert)) == openssl(
        "rsa", "-pubout", "-in", str(key)
    )
    fingerprint = openssl("x509", "-noout", "-fingerprint", "-sha1", "-in", str(cert)).decode()
    assert fingerprint.strip().split("=", 1)[1] == result.sha1_fingerprint
    end = openssl("x509", "-noout", "-enddate", "-in", str(cert)).decode().strip()
    not_after = datetime.datetime.strptime(end.split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    days = (not_after - now).days
    assert 29 <= days <= 30


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    key, cert = tmp_path / "pk.pem", tmp_path / "cert.pem"
    amibundle.keygen(key, cert)
    before = key.read_bytes(), cert.read_bytes()
    for existing in (key, cert):
        other = tmp_path / "new.pem"
        args = (existing, other) if existing == key else (other, existing)
        with pytest.raises(OutputExistsError, match=re.escape(str(existing))):
            amibundle.keygen(*args)
        assert not other.exists()  # nothing half-written
    assert (key.read_bytes(), cert.read_bytes()) == before


def test_keygen_replaces_with_force_and_keeps_0600(tmp_path: Path, umask_zero: None) -> None:
    key, cert = tmp_path / "pk.pem", tmp_path / "cert.pem"
    amibundle.keygen(key, cert)
    old_key = key.read_bytes()
    key.chmod(0o644)  # even a key made readable by mistake ends up private
    amibundle.keygen(key, cert, force=True)
    assert key.read_bytes() != old_key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert same_key(load_private_key(key), public_key_of(load_certificate(cert), cert))


@pytest.mark.parametrize("days", [0, -1])
def test_keygen_needs_positive_days(days: int, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="days="):
        amibundle.keygen(tmp_path / "pk.pem", tmp_path / "cert.pem", days=days)
    assert list(tmp_path.iterdir()) == []


def test_keygen_outputs_work_for_a_bundle_key_round_trip(tmp_path: Path) -> None:
    key, cert = tmp_path / "pk.pem", tmp_path / "cert.pem"
    amibundle.keygen(key, cert)
    secret = os.urandom(16)
    wrapped = wrap_secret(public_key_of(load_certificate(cert), cert), secret)
    assert unwrap_secret(load_private_key(key), wrapped, "key") == secret
