"""Unit tests of amibundle.identity: keys that do not belong together are
refused, keys made for one bundle are written only when asked, 0600, and
really are a pair."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from amibundle.crypto import load_certificate, load_private_key, public_key_of
from amibundle.errors import KeyMismatchError, OutputExistsError, UsageError
from amibundle.identity import BundleKeys
from tests.support.common import Identity, tree
from tests.support.errors import cli_text


def test_a_private_key_of_another_certificate_is_refused(
    user_id: Identity, other_id: Identity
) -> None:
    with pytest.raises(KeyMismatchError) as caught:
        BundleKeys.load(cert=user_id.cert, private_key=other_id.key)
    assert caught.value.param == "private_key"
    assert str(caught.value).startswith(f"private_key= {other_id.key} is not the key of")
    assert "--privatekey" in cli_text(caught, "bundle_image")
    # the matching pair loads, and so does the other one
    assert BundleKeys.load(cert=other_id.cert, private_key=other_id.key).generated is None


def test_keys_made_for_a_bundle_are_written_only_when_asked(tmp_path: Path) -> None:
    keys = BundleKeys.generate_for_bundle(tmp_path, "root.img")
    assert keys.generated is not None
    assert tree(tmp_path) == []  # nothing yet: a failed bundle leaves no key behind
    written = keys.write_generated()
    assert written == (tmp_path / "root.img.key.pem", tmp_path / "root.img.cert.pem")
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = load_private_key(written[0])
    cert_public = public_key_of(load_certificate(written[1]))
    assert key.key_size == 2048
    assert key.public_key().public_numbers() == cert_public.public_numbers()
    assert keys.certificate == written[1]
    # what was written is what signs and receives the bundle key
    assert keys.signer.private_numbers() == key.private_numbers()
    assert BundleKeys.load(cert=written[1], private_key=written[0]).generated is None
    keys.remove_generated()
    assert tree(tmp_path) == []


def test_existing_key_files_are_refused_before_any_work(tmp_path: Path) -> None:
    (tmp_path / "img.cert.pem").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"img\.cert\.pem already exists"):
        BundleKeys.generate_for_bundle(tmp_path, "img")
    keys = BundleKeys.generate_for_bundle(tmp_path, "img", force=True)
    keys.write_generated(force=True)
    assert (tmp_path / "img.cert.pem").read_text().startswith("-----BEGIN CERTIFICATE")


@pytest.mark.parametrize(
    ("folder", "prefix", "param"),
    [("missing", "img", "destination"), (".", "a/b", "prefix"), (".", "", "prefix")],
)
def test_bad_places_for_generated_keys(
    folder: str, prefix: str, param: str, tmp_path: Path
) -> None:
    with pytest.raises(UsageError) as caught:
        BundleKeys.generate_for_bundle(tmp_path / folder, prefix)
    assert caught.value.param == param
