"""Independent cross-checks of our streams with the openssl command-line tool."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

__all__ = ["decrypt_parts", "field", "openssl_unwrap", "run"]


def run(argv: list[str], data: bytes | None = None) -> bytes:
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


def field(manifest: bytes, tag: str) -> str:
    match = re.search(
        rb"<" + tag.encode() + rb"(?: [^>]*)?>([^<]*)</" + tag.encode() + b">", manifest
    )
    assert match, tag
    return html.unescape(match.group(1).decode())


def openssl_unwrap(wrapped_hex: str, key: Path) -> str:
    """RSA-decrypts with the openssl CLI; the plaintext is the hex text of the secret."""
    text = run(
        [
            "openssl",
            "pkeyutl",
            "-decrypt",
            "-inkey",
            str(key),
            "-pkeyopt",
            "rsa_padding_mode:pkcs1",
        ],
        bytes.fromhex(wrapped_hex),
    ).decode()
    assert re.fullmatch(r"[0-9a-f]{32}", text)
    return text


def decrypt_parts(manifest_path: Path, key: Path) -> bytes:
    """openssl enc -d over the concatenated parts, named as the manifest lists them."""
    manifest = manifest_path.read_bytes()
    names = [
        html.unescape(n.decode()) for n in re.findall(rb"<filename>([^<]*)</filename>", manifest)
    ]
    ciphertext = b"".join((manifest_path.parent / n).read_bytes() for n in names)
    aes_key = openssl_unwrap(field(manifest, "user_encrypted_key"), key)
    aes_iv = openssl_unwrap(field(manifest, "user_encrypted_iv"), key)
    return run(["openssl", "enc", "-d", "-aes-128-cbc", "-K", aes_key, "-iv", aes_iv], ciphertext)
