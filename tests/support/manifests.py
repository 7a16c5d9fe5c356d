"""Manifests for tests: valid records, hand-written older versions, and odd or
hostile files, each with the defect it carries and what the error must say.

Everything here builds on the fly; nothing is copied from /work/shared. The
classic fixtures are referenced by path and tests skip when they are absent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from hypothesis import strategies as st

from amibundle.format.manifest import (
    CLASSIC_BUNDLER,
    MANIFEST_VERSION,
    Bundler,
    DeviceMapping,
    Manifest,
    PartEntry,
)
from amibundle.format.manifest_writer import render
from tests.support.common import CLASSIC

__all__ = [
    "FIXTURES",
    "HostileCase",
    "OldManifest",
    "fixture_manifest_paths",
    "hostile_cases",
    "invalid_cases",
    "make_manifest",
    "manifests",
    "old_manifest",
    "rendered",
    "replace_once",
]

FIXTURES = CLASSIC


def fixture_manifest_paths() -> list[Path]:
    """The classic manifests (empty when /work/shared is absent)."""
    return sorted(FIXTURES.glob("*/*.manifest.xml")) if FIXTURES.is_dir() else []


def _fake_hex(label: str, nbytes: int) -> str:
    """Deterministic lower-case hex standing in for RSA output or a digest."""
    out = b""
    counter = 0
    while len(out) < nbytes:
        out += hashlib.sha256(f"{label}/{counter}".encode()).digest()
        counter += 1
    return out[:nbytes].hex()


def make_manifest(**changes: object) -> Manifest:
    """A valid, signed 2007-10-10 record (two parts); ``changes`` override fields."""
    base = Manifest(
        name="test.img",
        user="123456789012",
        digest=_fake_hex("image", 20),
        size=25_165_824,
        bundled_size=20_969_568,
        ec2_encrypted_key=_fake_hex("ec2-key", 256),
        user_encrypted_key=_fake_hex("user-key", 256),
        ec2_encrypted_iv=_fake_hex("ec2-iv", 256),
        user_encrypted_iv=_fake_hex("user-iv", 256),
        parts=(
            PartEntry(0, "test.img.part.0", _fake_hex("part0", 20)),
            PartEntry(1, "test.img.part.1", _fake_hex("part1", 20)),
        ),
        architecture="x86_64",
        signature=_fake_hex("signature", 256),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def rendered(**changes: object) -> bytes:
    """The file bytes of :func:`make_manifest` with ``changes``."""
    return render(make_manifest(**changes))


def replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    """``data`` with the single occurrence of ``old`` replaced (fails loudly if
    ``old`` is not there exactly once, so a broken case cannot pass silently)."""
    assert data.count(old) == 1, f"{old!r} occurs {data.count(old)} times"
    return data.replace(old, new)


# --------------------------------------------------------------------------- older versions


@dataclass(frozen=True)
class OldManifest:
    """A hand-written manifest of an older version and what a reader must find."""

    data: bytes
    signed_data: bytes  # what the signature covers, cut by hand here
    expected: Manifest


def old_manifest(version: str, *, with_bundler: bool = True) -> OldManifest:
    """A manifest laid out as the classic ``ManifestV3`` / ``ManifestV20070829``
    wrote it: the 2007-10-10 element names and order, minus what the version
    lacks (``3``: no machine_configuration, no image type; ``2007-08-29``:
    machine_configuration holds the architecture only).

    Written out literally rather than with ``render`` so that the reader is
    checked against an independent construction."""
    assert version in ("3", "2007-08-29")
    digest, part_digest = _fake_hex("old-image", 20), _fake_hex("old-part", 20)
    keys = {k: _fake_hex(f"old-{k}", 128) for k in ("ek", "uk", "ei", "ui")}
    signature = _fake_hex("old-signature", 128)
    bundler = Bundler("ec2-ami-tools", "1.3", "20041") if with_bundler else None
    bundler_xml = (
        "<bundler><name>ec2-ami-tools</name><version>1.3</version>"
        "<release>20041</release></bundler>"
        if with_bundler
        else ""
    )
    machine = (
        ""
        if version == "3"
        else ("<machine_configuration><architecture>i386</architecture></machine_configuration>")
    )
    image = (
        "<image><name>old.img</name><user>123456789012</user>"
        f"<digest algorithm='SHA1'>{digest}</digest><size>10485761</size>"
        "<bundled_size>4242</bundled_size>"
        f"<ec2_encrypted_key algorithm='AES-128-CBC'>{keys['ek']}</ec2_encrypted_key>"
        f"<user_encrypted_key algorithm='AES-128-CBC'>{keys['uk']}</user_encrypted_key>"
        f"<ec2_encrypted_iv>{keys['ei']}</ec2_encrypted_iv>"
        f"<user_encrypted_iv>{keys['ui']}</user_encrypted_iv>"
        "<parts count='1'><part index='0'><filename>old.img.part.0</filename>"
        f"<digest algorithm='SHA1'>{part_digest}</digest></part></parts></image>"
    )
    text = (
        f"<?xml version='1.0'?><manifest><version>{version}</version>{bundler_xml}"
        f"{machine}{image}<signature>{signature}</signature></manifest>"
    )
    expected = Manifest(
        name="old.img",
        user="123456789012",
        digest=digest,
        size=10_485_761,
        bundled_size=4242,
        ec2_encrypted_key=keys["ek"],
        user_encrypted_key=keys["uk"],
        ec2_encrypted_iv=keys["ei"],
        user_encrypted_iv=keys["ui"],
        parts=(PartEntry(0, "old.img.part.0", part_digest),),
        version=version,
        bundler=bundler,
        architecture=None if version == "3" else "i386",
        image_type=None,
        signature=signature,
    )
    return OldManifest(text.encode(), (machine + image).encode(), expected)


# --------------------------------------------------------------------------- hostile and invalid


@dataclass(frozen=True)
class HostileCase:
    """One defect: the file, and a fragment the one-line error must contain."""

    id: str
    data: bytes
    expect: str


def _with_prolog(prolog: str, body_changes: dict[bytes, bytes] | None = None) -> bytes:
    """A valid manifest with ``prolog`` put between the XML declaration and
    <manifest>, and optional single replacements in the body."""
    data = rendered()
    for old, new in (body_changes or {}).items():
        data = replace_once(data, old, new)
    return replace_once(data, b"<?xml version='1.0'?>", b"<?xml version='1.0'?>" + prolog.encode())


BILLION_LAUGHS = (
    "<!DOCTYPE manifest [<!ENTITY lol 'lol'>"
    + "".join(
        f"<!ENTITY lol{i} '{('&lol' + (str(i - 1) if i > 1 else '') + ';') * 10}'>"
        for i in range(1, 10)
    )
    + "]>"
)


def hostile_cases(secret_file: Path, port: int) -> list[HostileCase]:
    """Files that try to make the reader load, fetch or expand something, or to
    sneak markup past it. ``secret_file`` is a local file whose content must
    never show up; ``port`` is a local TCP port that must never be contacted."""
    xxe_name = {b"<name>test.img</name>": b"<name>&xxe;</name>"}
    return [
        HostileCase(
            "xxe-file",
            _with_prolog(
                f"<!DOCTYPE manifest [<!ENTITY xxe SYSTEM '{secret_file.as_uri()}'>]>", xxe_name
            ),
            "DOCTYPE",
        ),
        HostileCase(
            "xxe-network",
            _with_prolog(
                f"<!DOCTYPE manifest [<!ENTITY xxe SYSTEM 'http://127.0.0.1:{port}/x'>]>",
                xxe_name,
            ),
            "DOCTYPE",
        ),
        HostileCase(
            "external-dtd",
            _with_prolog(f"<!DOCTYPE manifest SYSTEM 'http://127.0.0.1:{port}/evil.dtd'>"),
            "DOCTYPE",
        ),
        HostileCase(
            "parameter-entity",
            _with_prolog(
                f"<!DOCTYPE manifest [<!ENTITY % p SYSTEM '{secret_file.as_uri()}'> %p;]>"
            ),
            "DOCTYPE",
        ),
        HostileCase(
            "billion-laughs",
            _with_prolog(BILLION_LAUGHS, {b"<name>test.img</name>": b"<name>&lol9;</name>"}),
            "DOCTYPE",
        ),
        HostileCase("plain-doctype", _with_prolog("<!DOCTYPE manifest>"), "DOCTYPE"),
        HostileCase("lower-case-doctype", _with_prolog("<!doctype manifest>"), "DOCTYPE"),
        HostileCase(
            "entity-outside-doctype",
            _with_prolog("<!ENTITY x 'y'>"),
            "entity declaration",
        ),
        HostileCase(
            "comment-in-image",
            replace_once(rendered(), b"<image>", b"<image><!-- hello -->"),
            "comment",
        ),
        HostileCase(
            "comment-hiding-decoy-image",
            replace_once(rendered(), b"<signature>", b"<!--<image>decoy</image>--><signature>"),
            "comment",
        ),
        HostileCase(
            "cdata",
            replace_once(
                rendered(), b"<name>test.img</name>", b"<name><![CDATA[test.img]]></name>"
            ),
            "CDATA",
        ),
        HostileCase("pi-before-root", _with_prolog("<?evil data?>"), "processing instruction"),
        HostileCase(
            "pi-after-root",
            rendered() + b"<?evil data?>",
            "processing instruction",
        ),
        HostileCase(
            "stylesheet-pi",
            _with_prolog("<?xml-stylesheet href='http://127.0.0.1/x.xsl'?>"),
            "processing instruction",
        ),
        HostileCase(
            "utf16",
            rendered()
            .decode()
            .replace("version='1.0'", "version='1.0' encoding='UTF-16'")
            .encode("utf-16"),
            "UTF-8",
        ),
        HostileCase(
            "latin1-declared",
            replace_once(rendered(), b"version='1.0'", b"version='1.0' encoding='ISO-8859-1'"),
            "encoding",
        ),
        HostileCase(
            "not-utf8", replace_once(rendered(), b"test.img</name>", b"te\xffst</name>"), "UTF-8"
        ),
        HostileCase(
            "nul-reference",
            replace_once(rendered(), b"test.img.part.0<", b"test.img.part.0&#0;<"),
            "well-formed",
        ),
        HostileCase("truncated", rendered()[:-20], "well-formed"),
        HostileCase("empty", b"", "well-formed"),
        HostileCase("not-xml", b"PK\x03\x04 this is a zip file", "well-formed"),
        HostileCase("wrong-root", b"<?xml version='1.0'?><html><body/></html>", "<html>"),
    ]


def _without(element: bytes) -> bytes:
    """The default manifest with one whole leaf element removed."""
    data = rendered()
    start = data.index(element)
    end = data.index(b"</" + element[1:].split(b">")[0].split(b" ")[0] + b">", start)
    closing = data.index(b">", end) + 1
    return data[:start] + data[closing:]


def invalid_cases() -> list[HostileCase]:
    """Well-formed manifests with exactly one defect each."""
    data = rendered()
    part0 = make_manifest().parts[0]
    part1 = make_manifest().parts[1]
    signature = make_manifest().signature

    def edit(old: bytes, new: bytes) -> bytes:
        return replace_once(data, old, new)

    return [
        HostileCase("unknown-version", edit(b">2007-10-10<", b">2099-01-01<"), "'2099-01-01'"),
        HostileCase("no-version", _without(b"<version>"), "version is missing"),
        HostileCase("no-size", _without(b"<size>"), "image/size is missing"),
        HostileCase("no-image", _cut_image(data), "image is missing"),
        HostileCase(
            "negative-size",
            edit(b"<size>25165824", b"<size>-1"),
            "image/size '-1' is not a non-negative integer",
        ),
        HostileCase(
            "float-size",
            edit(b"<size>25165824", b"<size>2.5"),
            "image/size '2.5' is not a non-negative integer",
        ),
        HostileCase("huge-size", edit(b"<size>25165824", b"<size>" + b"9" * 30), "image/size"),
        HostileCase("unicode-digits", edit(b"<size>25165824", "<size>٣".encode()), "image/size"),
        HostileCase(
            "short-digest",
            edit(make_manifest().digest.encode(), b"abcdef"),
            "image/digest 'abcdef' is not a SHA-1 digest",
        ),
        HostileCase(
            "part-digest-not-hex",
            edit(part0.digest.encode(), b"z" * 40),
            "image/parts/part[0]/digest",
        ),
        HostileCase(
            "key-not-hex",
            edit(make_manifest().ec2_encrypted_key.encode(), b"xyz0"),
            "image/ec2_encrypted_key 'xyz0' is not hex",
        ),
        HostileCase(
            "iv-odd-length",
            edit(make_manifest().user_encrypted_iv.encode(), b"abc"),
            "image/user_encrypted_iv",
        ),
        HostileCase(
            "md5-digest",
            edit(
                b"<digest algorithm='SHA1'>" + make_manifest().digest.encode(),
                b"<digest algorithm='MD5'>" + make_manifest().digest.encode(),
            ),
            "'MD5'",
        ),
        HostileCase("other-cipher", data.replace(b"AES-128-CBC", b"DES", 1), "'DES'"),
        HostileCase(
            "count-mismatch", edit(b"count='2'", b"count='3'"), "count='3' but lists 2 parts"
        ),
        HostileCase("count-missing", edit(b"<parts count='2'>", b"<parts>"), "no count attribute"),
        HostileCase("indices-from-one", edit(b"index='0'", b"index='2'"), "part[0] has index '2'"),
        # Parts listed out of order are read by their index (see
        # tests/format/test_peer_manifests.py); an index twice is refused.
        HostileCase(
            "index-twice",
            edit(b"index='1'", b"index='0'"),
            "part[1] has index '0'; part indices must be exactly 0..n-1, each once",
        ),
        HostileCase(
            "index-not-a-number",
            edit(b"index='1'", b"index='one'"),
            "part[1] has index 'one'",
        ),
        HostileCase("index-missing", edit(b" index='1'", b""), "part[1] has no index attribute"),
        HostileCase(
            "filename-with-slash",
            edit(part0.filename.encode() + b"<", b"../../etc/passwd<"),
            "'../../etc/passwd' is not a plain file name",
        ),
        HostileCase(
            "filename-absolute",
            edit(part0.filename.encode() + b"<", b"/etc/passwd<"),
            "'/etc/passwd' is not a plain file name",
        ),
        HostileCase(
            "filename-backslash",
            edit(part0.filename.encode() + b"<", b"..\\..\\boot.ini<"),
            "not a plain file name",
        ),
        HostileCase(
            "filename-dotdot",
            edit(part0.filename.encode() + b"<", b"..<"),
            "'..' is not a plain file name",
        ),
        HostileCase(
            "filename-dot",
            edit(part0.filename.encode() + b"<", b".<"),
            "'.' is not a plain file name",
        ),
        HostileCase(
            "filename-empty",
            edit(
                b"<filename>" + part0.filename.encode() + b"</filename>", b"<filename></filename>"
            ),
            "part[0]/filename is empty",
        ),
        HostileCase(
            "filename-control",
            edit(part0.filename.encode() + b"<", b"a&#10;b<"),
            "control character",
        ),
        HostileCase(
            "filename-duplicate",
            edit(part1.filename.encode(), part0.filename.encode()),
            "is listed 2 times",
        ),
        HostileCase(
            "image-name-path",
            edit(b"<name>test.img</name>", b"<name>../up</name>"),
            "image/name '../up' is not a plain file name",
        ),
        HostileCase(
            "two-names",
            edit(b"<name>test.img</name>", b"<name>test.img</name><name>other</name>"),
            "image/name appears 2 times",
        ),
        HostileCase(
            "unknown-type",
            edit(b"<type>machine</type>", b"<type>toaster</type>"),
            "image/type 'toaster'",
        ),
        HostileCase("no-type", edit(b"<type>machine</type>", b""), "image/type is required"),
        HostileCase(
            "duplicate-mapping",
            rendered(
                block_device_mapping=(DeviceMapping("ami", "sda1"), DeviceMapping("root", "sda1"))
            ).replace(b"<virtual>root<", b"<virtual>ami<"),
            "maps 'ami' 2 times",
        ),
        HostileCase(
            "second-image-hidden",
            edit(b"<signature>", b"<x><image>decoy</image></x><signature>"),
            "the manifest has 2 <image> elements",
        ),
        HostileCase(
            "spaced-start-tag", edit(b"<image>", b"<image >"), "must be written as '<image>"
        ),
        HostileCase(
            "spaced-end-tag", edit(b"</image>", b"</image >"), "must be written as '<image>"
        ),
        HostileCase(
            "attribute-on-machine-configuration",
            edit(b"<machine_configuration>", b"<machine_configuration a='b'>"),
            "<machine_configuration> must be written as",
        ),
        HostileCase(
            "image-nested-only",
            _cut_image(data).replace(b"<signature>", b"<x>" + _image_of(data) + b"</x><signature>"),
            "image is missing",
        ),
        HostileCase(
            "two-machine-configurations",
            edit(b"<image>", b"<machine_configuration/><image>"),
            "machine_configuration appears 2 times",
        ),
        HostileCase(
            "namespaced", edit(b"<manifest>", b"<manifest xmlns='urn:x'>"), "not a bundle manifest"
        ),
        HostileCase(
            "v3-with-machine-configuration",
            edit(b">2007-10-10<", b">3<").replace(b"<type>machine</type>", b""),
            "machine_configuration/architecture is not part of a version 3 manifest",
        ),
        HostileCase(
            "v20070829-with-type",
            edit(b">2007-10-10<", b">2007-08-29<"),
            "image/type is not part of a version 2007-08-29 manifest",
        ),
        HostileCase(
            "signature-not-hex",
            edit(f">{signature}<".encode(), b">nothex<"),
            "signature 'nothex' is not hex",
        ),
        HostileCase(
            "text-in-leaf-with-child",
            edit(b"<user>123456789012</user>", b"<user>1<b/>2</user>"),
            "image/user must hold text only",
        ),
    ]


def _image_of(data: bytes) -> bytes:
    return data[data.index(b"<image>") : data.index(b"</image>") + len(b"</image>")]


def _cut_image(data: bytes) -> bytes:
    return data[: data.index(b"<image>")] + data[data.index(b"</image>") + len(b"</image>") :]


# --------------------------------------------------------------------------- hypothesis strategies

# Characters XML can carry unchanged: no controls (tab and newline aside, which
# names refuse anyway), no surrogates, no non-characters.
_CHAR = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Cn"))
_SPECIAL = st.sampled_from(list("&<>\"' ;#"))
TEXT = st.text(
    alphabet=st.one_of(_CHAR, _SPECIAL, st.sampled_from(["\t", "\n"])), min_size=1, max_size=16
)
PLAIN_NAME = st.text(
    alphabet=st.one_of(_CHAR, _SPECIAL).filter(lambda c: c not in "/\\"),
    min_size=1,
    max_size=24,
).filter(lambda s: s not in (".", ".."))
DIGEST = st.binary(min_size=20, max_size=20).map(bytes.hex)
HEX = st.binary(min_size=1, max_size=48).map(bytes.hex)
COUNT = st.integers(min_value=0, max_value=2**64 - 1)


@st.composite
def manifests(draw: st.DrawFn, *, max_parts: int = 12) -> Manifest:
    """Arbitrary writable, signed records of every supported version."""
    version = draw(st.sampled_from([MANIFEST_VERSION, "2007-08-29", "3"]))
    full = version == MANIFEST_VERSION
    names = draw(st.lists(PLAIN_NAME, max_size=max_parts, unique=True))
    mappings = draw(
        st.lists(st.builds(DeviceMapping, TEXT, TEXT), max_size=5, unique_by=lambda m: m.virtual)
        if full
        else st.just([])
    )
    optional = st.none() | TEXT
    return Manifest(
        name=draw(PLAIN_NAME),
        user=draw(TEXT),
        digest=draw(DIGEST),
        size=draw(COUNT),
        bundled_size=draw(COUNT),
        ec2_encrypted_key=draw(HEX),
        user_encrypted_key=draw(HEX),
        ec2_encrypted_iv=draw(HEX),
        user_encrypted_iv=draw(HEX),
        parts=tuple(PartEntry(i, name, draw(DIGEST)) for i, name in enumerate(names)),
        version=version,
        bundler=draw(st.none() | st.just(CLASSIC_BUNDLER) | st.builds(Bundler, TEXT, TEXT, TEXT)),
        architecture=draw(optional) if version != "3" else None,
        block_device_mapping=tuple(mappings),
        kernel_id=draw(optional) if full else None,
        ramdisk_id=draw(optional) if full else None,
        product_codes=tuple(draw(st.lists(TEXT, max_size=3))) if full else (),
        image_type=draw(st.sampled_from(["machine", "kernel", "ramdisk"])) if full else None,
        kernel_name=draw(optional) if full else None,
        ancestry=tuple(draw(st.lists(TEXT, max_size=3))) if full else (),
        signature=draw(HEX),
    )
