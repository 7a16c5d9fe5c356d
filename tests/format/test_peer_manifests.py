"""The manifest reader is liberal where EC2 is and strict where safety is.

Liberal: element order, quoting and white space between elements; white space around
token values; empty or missing <bundler> fields; parts listed in any order; part names
of any digit width; no <ancestry> or <block_device_mapping>. Strict: the part indices,
count, plain names, digests, hex and the signed bytes.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from amibundle.errors import IntegrityError, ManifestError
from amibundle.format.manifest import Bundler, Manifest, PartEntry
from amibundle.format.manifest_reader import parse
from amibundle.format.manifest_writer import render
from amibundle.reading import check_signature, read_manifest
from tests.support.common import Identity
from tests.support.manifests import make_manifest, manifests, rendered, replace_once
from tests.support.peers import Peer, make_peer_bundle

# Fields whose value is a token: white space around them is not part of the value.
TOKEN_FIELDS = (
    "version",
    "type",
    "size",
    "bundled_size",
    "digest",
    "ec2_encrypted_key",
    "user_encrypted_key",
    "ec2_encrypted_iv",
    "user_encrypted_iv",
    "signature",
)


def _reshaped(data: bytes, seed: int, *, pad_tokens: bool, pretty: bool) -> bytes:
    """The manifest as another tool could write it: children of <manifest>, <image>,
    <machine_configuration> and <parts> shuffled, double quotes, optionally white
    space around token values and between elements."""
    rng = random.Random(seed)
    root = etree.fromstring(data)
    for element in root.iter("manifest", "image", "machine_configuration", "parts"):
        children = list(element)
        rng.shuffle(children)
        element[:] = children
    if pad_tokens:
        tokens = [*root.findall("version"), *root.findall("signature")]
        tokens += [e for e in root.findall("image/*") if e.tag in TOKEN_FIELDS]
        tokens += root.findall("image/parts/part/digest")
        for element in tokens:
            if element.text:
                element.text = f"\n   {element.text}\t\n"
        for part in root.iter("part"):
            part.set("index", f" {part.get('index')} ")
    if pretty:
        etree.indent(root, space="  ")
    return etree.tostring(root, encoding="utf-8")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifest=manifests(), seed=st.integers(0, 2**32), pretty=st.booleans())
def test_any_order_quoting_and_white_space_read_the_same(
    manifest: Manifest, seed: int, pretty: bool
) -> None:
    original = render(manifest)
    data = _reshaped(original, seed, pad_tokens=True, pretty=pretty)
    assert parse(data).manifest == parse(original).manifest


def test_parts_are_read_by_their_index() -> None:
    data = rendered()
    data = replace_once(data, b"index='0'", b"index='X'")
    data = replace_once(data, b"index='1'", b"index='0'").replace(b"index='X'", b"index='1'")
    parts = parse(data).manifest.parts
    original = make_manifest().parts
    # The element listed first said index 1: it is the second part.
    assert parts == (
        PartEntry(0, original[1].filename, original[1].digest),
        PartEntry(1, original[0].filename, original[0].digest),
    )


@pytest.mark.parametrize(
    ("bundler_xml", "expected"),
    [
        ("<bundler><name>x</name></bundler>", Bundler("x", "", "")),
        ("<bundler><name></name><version></version><release></release></bundler>",
         Bundler("", "", "")),
        ("<bundler/>", Bundler("", "", "")),
        ("<bundler><name>go</name><version>0.1</version><release>1</release>"
         "<comment>extra</comment></bundler>", Bundler("go", "0.1", "1")),
    ],
)  # fmt: skip
def test_bundler_fields_may_be_empty_or_missing(bundler_xml: str, expected: Bundler) -> None:
    data = rendered()
    start, end = data.index(b"<bundler>"), data.index(b"</bundler>") + len(b"</bundler>")
    read = parse(data[:start] + bundler_xml.encode() + data[end:]).manifest
    assert read.bundler == expected
    # and such a record can be written again, empty fields as empty elements
    again = parse(render(replace(read, signature="ab"))).manifest
    assert again.bundler == expected


@pytest.mark.parametrize(
    "names",
    [
        ["x.part.0", "x.part.1"],
        ["x.part.00", "x.part.01"],
        ["x.part.000", "x.part.1"],
        ["first", "second"],
    ],
)
def test_part_names_of_any_digit_width(names: list[str]) -> None:
    manifest = make_manifest()
    parts = tuple(replace(p, filename=n) for p, n in zip(manifest.parts, names, strict=True))
    read = parse(render(replace(manifest, parts=parts))).manifest
    assert [p.filename for p in read.parts] == names


def test_optional_elements_absent() -> None:
    data = rendered()
    assert b"<ancestry>" not in data and b"<block_device_mapping>" not in data
    data = replace_once(data, b"<machine_configuration><architecture>x86_64</architecture>"
                        b"</machine_configuration>", b"")  # fmt: skip
    data = data.replace(b"<bundler><name>ec2-ami-tools</name><version>1.5</version>"
                        b"<release>3</release></bundler>", b"")  # fmt: skip
    read = parse(data)
    assert read.manifest.architecture is None and read.manifest.bundler is None
    assert read.signed_data.startswith(b"<image>")


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        (b"index='1'", b"index='2'", "part[1] has index '2'"),
        (b"index='1'", b"index='-1'", "part[1] has index '-1'"),
        (b"index='1'", b"index=''", "part[1] has no index attribute"),
        (b"count='2'", b"count=' 3 '", "count='3' but lists 2"),
        (b"<size>25165824", b"<size>25 165 824", "image/size"),
        (b"<version>2007-10-10", b"<version>2007 -10-10", "not supported"),
        (b"<type>machine", b"<type> machine kernel", "image/type"),
        (b"<size>25165824</size>", b"<size> </size>", "image/size is empty"),
    ],
)
def test_strict_where_safety_is(old: bytes, new: bytes, expect: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse(replace_once(rendered(), old, new))
    assert expect in str(err.value)


def test_white_space_inside_hex_is_refused() -> None:
    key = make_manifest().ec2_encrypted_key.encode()
    with pytest.raises(ManifestError, match="ec2_encrypted_key"):
        parse(replace_once(rendered(), key, key[:10] + b" " + key[10:]))


def test_a_reshaped_peer_manifest_reads_but_its_signature_does_not_hold(
    tmp_path: Path, user_id: Identity, ec2_id: Identity
) -> None:
    """Pretty-printing a signed manifest changes the signed bytes: it still reads, and
    the signature check says it does not verify (never a re-serialised comparison)."""
    bundle = make_peer_bundle(Peer.EUCA2OOLS, tmp_path / "b", user_id, ec2_id, part_size=30_000)
    check_signature(read_manifest(bundle.manifest), user_id.cert)
    pretty = tmp_path / "pretty.manifest.xml"
    pretty.write_bytes(_reshaped(bundle.manifest.read_bytes(), 0, pad_tokens=False, pretty=True))
    parsed = read_manifest(pretty)
    assert parsed.manifest == read_manifest(bundle.manifest).manifest
    with pytest.raises(IntegrityError, match="signature does not verify"):
        check_signature(parsed, user_id.cert)
