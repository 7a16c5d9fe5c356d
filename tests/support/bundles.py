"""Builds bundles around arbitrary tar streams (hostile ones included), using
gzip and the openssl CLI for the stream and our manifest writer for the rest.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
from pathlib import Path

from amibundle.crypto import load_certificate, load_private_key, public_key_of, sign, wrap_secret
from amibundle.format import manifest as mf
from amibundle.format.manifest_writer import render, signed_sections
from tests.support.common import Identity


def bundle_from_tar(
    tar: bytes, folder: Path, identity: Identity, *, name: str = "disk.img", size: int = 0
) -> Path:
    """Writes ``<name>.part.0`` and a signed ``<name>.manifest.xml`` whose
    digest matches ``tar``; returns the manifest path."""
    folder.mkdir(parents=True, exist_ok=True)
    key, iv = os.urandom(16), os.urandom(16)
    ciphertext = subprocess.run(
        ["openssl", "enc", "-e", "-aes-128-cbc", "-K", key.hex(), "-iv", iv.hex()],
        input=gzip.compress(tar, mtime=0),
        capture_output=True,
        check=True,
    ).stdout
    part = folder / f"{name}.part.0"
    part.write_bytes(ciphertext)
    public = public_key_of(load_certificate(identity.cert))
    unsigned = mf.Manifest(
        name=name,
        user="123456789012",
        digest=hashlib.sha1(tar).hexdigest(),
        size=size,
        bundled_size=len(ciphertext),
        ec2_encrypted_key=wrap_secret(public, key),
        user_encrypted_key=wrap_secret(public, key),
        ec2_encrypted_iv=wrap_secret(public, iv),
        user_encrypted_iv=wrap_secret(public, iv),
        parts=(mf.PartEntry(0, part.name, hashlib.sha1(ciphertext).hexdigest()),),
        architecture="x86_64",
    )
    signature = sign(load_private_key(identity.key), signed_sections(unsigned))
    manifest_path = folder / f"{name}.manifest.xml"
    manifest_path.write_bytes(
        render(mf.Manifest(**{**unsigned.__dict__, "signature": signature}))
    )
    return manifest_path
