"""The bundle manifest (``<prefix>.manifest.xml``): records, writer and hardened reader.

Pure: bytes in, bytes or records out. Signing and verifying happen elsewhere,
over the bytes :func:`signed_sections` (when writing) or
:attr:`ParsedManifest.signed_data` (when reading) give.

Writer decisions, taken from the classic Ruby tools (``ManifestV20071010`` and
its ``XMLBuilder``), so that :func:`render` reproduces classic manifests byte
for byte:

* The classic builder skips a field whose value is nil and creates parent
  elements lazily, so ``<machine_configuration>`` is written whenever it has at
  least one child: a kernel id without an architecture still gives one. With no
  child at all it is omitted, and the signed data is then ``<image>`` alone.
* Text is escaped as REXML does it: ``& < > " '`` become ``&amp; &lt; &gt;
  &quot; &apos;``. (The fixtures hold none of these characters; this follows
  ``REXML::Text.normalize``.) Characters XML cannot carry faithfully (C0
  controls other than tab and newline, carriage return, U+FFFE/U+FFFF, lone
  surrogates) are refused rather than silently changed.
* A bundle with no parts gets ``<parts count='0'/>``, as REXML writes an
  element without children.

Older versions (from the classic ``ManifestWrapper``): ``3`` has bundler and
image fields only (no ``<machine_configuration>``, no image type);
``2007-08-29`` adds ``<machine_configuration><architecture>``; ``2007-10-10``
adds the image type, kernel name, ancestry, block-device mapping, kernel and
ramdisk ids and product codes. The signed data has the same definition for all
three (the machine configuration part is empty when the element is absent).
The reader keeps what the file says: it does not fill in the defaults the
classic tools assumed for old versions (architecture ``i386``, type
``machine``); ``migrate-manifest`` does that.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lxml import etree

from amibundle.errors import ManifestError

__all__ = [
    "plain_name_problem",
    "CLASSIC_BUNDLER",
    "DEFAULT_PART_SIZE",
    "IMAGE_TYPES",
    "MANIFEST_VERSION",
    "MAX_MANIFEST_SIZE",
    "SUPPORTED_VERSIONS",
    "Bundler",
    "DeviceMapping",
    "Manifest",
    "ParsedManifest",
    "PartEntry",
    "parse",
    "part_filenames",
    "render",
    "signed_sections",
]

MANIFEST_VERSION = "2007-10-10"
SUPPORTED_VERSIONS = ("2007-10-10", "2007-08-29", "3")
DEFAULT_PART_SIZE = 10 * 1024 * 1024
IMAGE_TYPES = ("machine", "kernel", "ramdisk")
# Real manifests are a few KiB (about 150 bytes per 10 MiB part); 16 MiB is
# far beyond any bundle and still cheap to hold in memory.
MAX_MANIFEST_SIZE = 16 * 1024 * 1024

_DIGEST_ALGORITHM = "SHA1"
_CIPHER_ALGORITHM = "AES-128-CBC"
_MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class Bundler:
    """The tool that made the bundle, as recorded in ``<bundler>``."""

    name: str
    version: str
    release: str


CLASSIC_BUNDLER = Bundler("ec2-ami-tools", "1.5", "3")


@dataclass(frozen=True)
class DeviceMapping:
    """One block-device mapping: a virtual name (``ami``, ``root``, ...) to a device."""

    virtual: str
    device: str


@dataclass(frozen=True)
class PartEntry:
    """One part file: its position, plain file name and SHA-1 (40 lower-case hex)."""

    index: int
    filename: str
    digest: str


@dataclass(frozen=True)
class Manifest:
    """Everything a manifest says. Hex fields are lower case."""

    name: str
    user: str
    digest: str
    size: int
    bundled_size: int
    ec2_encrypted_key: str
    user_encrypted_key: str
    ec2_encrypted_iv: str
    user_encrypted_iv: str
    parts: tuple[PartEntry, ...]
    version: str = MANIFEST_VERSION
    bundler: Bundler | None = CLASSIC_BUNDLER
    architecture: str | None = None
    block_device_mapping: tuple[DeviceMapping, ...] = ()
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    product_codes: tuple[str, ...] = ()
    image_type: str | None = "machine"
    kernel_name: str | None = None
    ancestry: tuple[str, ...] = ()
    signature: str | None = None


@dataclass(frozen=True)
class ParsedManifest:
    """A parsed manifest file.

    ``signed_data`` is cut from the file's own bytes (``raw``), never
    re-serialised: it is what the signature must be checked against.
    """

    manifest: Manifest
    signed_data: bytes
    raw: bytes


# --------------------------------------------------------------------------- part names


def part_filenames(prefix: str, count: int) -> list[str]:
    """The part file names for ``count`` parts: ``<prefix>.part.<i>``, with ``i``
    zero-padded to the number of decimal digits in ``count`` (spec section 1)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"part count must be a non-negative integer, not {count!r}")
    problem = plain_name_problem("bundle prefix", prefix)
    if problem is not None:
        raise ValueError(problem)
    digits = len(str(count))
    return [f"{prefix}.part.{index:0{digits}d}" for index in range(count)]


# --------------------------------------------------------------------------- shared checks

_HEX = re.compile(r"[0-9a-f]+")
_DIGEST = re.compile(r"[0-9a-f]{40}")
# Characters an XML 1.0 document cannot carry unchanged in text: most C0
# controls are illegal, a carriage return is turned into a newline by every
# parser, and the rest are not characters at all.
_NOT_XML_SAFE = re.compile("[\x00-\x08\x0b-\x1f\ud800-\udfff\ufffe\uffff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class _Layout:
    """Which optional parts a manifest version has."""

    architecture: bool
    machine_extras: bool  # block-device mapping, kernel/ramdisk ids, product codes
    image_extras: bool  # image type, kernel name, ancestry


_LAYOUTS = {
    "2007-10-10": _Layout(architecture=True, machine_extras=True, image_extras=True),
    "2007-08-29": _Layout(architecture=True, machine_extras=False, image_extras=False),
    "3": _Layout(architecture=False, machine_extras=False, image_extras=False),
}

# A problem is (label, message); the label lets the reader drop a record-level
# complaint about a field it has already reported as missing or malformed.
_Problem = tuple[str, str]


def _show(value: object) -> str:
    """A short, one-line rendering of a value for an error message."""
    if isinstance(value, str) and len(value) > 60:
        return repr(value[:60]) + "..."
    return repr(value)


def plain_name_problem(label: str, value: object) -> str | None:
    """Why ``value`` is not a plain file name, or None. Later code opens
    ``<bundle dir>/<name>``, so a name must never be able to leave that directory."""
    if not isinstance(value, str):
        return f"{label} must be a string, not {_show(value)}"
    if value in ("", ".", ".."):
        return f"{label} {_show(value)} is not a plain file name"
    if "/" in value or "\\" in value:
        return f"{label} {_show(value)} is not a plain file name (it has a path separator)"
    if _CONTROL.search(value):
        return f"{label} {_show(value)} is not a plain file name (it has a control character)"
    if _NOT_XML_SAFE.search(value):
        return f"{label} {_show(value)} has a character XML cannot carry"
    return None


def _text_problem(label: str, value: object) -> str | None:
    """Why ``value`` cannot be written as element text, or None."""
    if not isinstance(value, str):
        return f"{label} must be a string, not {_show(value)}"
    if value == "":
        return f"{label} is empty"
    if _NOT_XML_SAFE.search(value):
        return f"{label} {_show(value)} has a character XML cannot carry"
    return None


def _count_problem(label: str, value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"{label} must be a non-negative integer, not {_show(value)}"
    return None


def _digest_problem(label: str, value: object) -> str | None:
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        return f"{label} {_show(value)} is not a SHA-1 digest (40 lower-case hex digits)"
    return None


def _hex_problem(label: str, value: object) -> str | None:
    if not isinstance(value, str) or not _HEX.fullmatch(value) or len(value) % 2:
        return f"{label} {_show(value)} is not lower-case hex of whole bytes"
    return None


def _optional_text_problems(fields: Iterable[tuple[str, str | None]]) -> list[_Problem]:
    problems: list[_Problem] = []
    for label, value in fields:
        problem = None if value is None else _text_problem(label, value)
        if problem is not None:
            problems.append((label, problem))
    return problems


def _layout_problems(manifest: Manifest, layout: _Layout) -> list[_Problem]:
    """Fields the manifest's version has no place for, and the image type rule."""
    problems: list[_Problem] = []
    version = manifest.version
    present: list[tuple[str, bool, bool]] = [
        ("machine_configuration/architecture", manifest.architecture is not None,
         layout.architecture),
        ("machine_configuration/block_device_mapping", bool(manifest.block_device_mapping),
         layout.machine_extras),
        ("machine_configuration/kernel_id", manifest.kernel_id is not None,
         layout.machine_extras),
        ("machine_configuration/ramdisk_id", manifest.ramdisk_id is not None,
         layout.machine_extras),
        ("machine_configuration/product_codes", bool(manifest.product_codes),
         layout.machine_extras),
        ("image/type", manifest.image_type is not None, layout.image_extras),
        ("image/kernel_name", manifest.kernel_name is not None, layout.image_extras),
        ("image/ancestry", bool(manifest.ancestry), layout.image_extras),
    ]  # fmt: skip
    for label, is_present, allowed in present:
        if is_present and not allowed:
            problems.append((label, f"{label} is not part of a version {version} manifest"))
    if layout.image_extras:
        if manifest.image_type is None:
            problems.append(
                ("image/type", f"image/type is required in a version {version} manifest")
            )
        elif manifest.image_type not in IMAGE_TYPES:
            problems.append(
                (
                    "image/type",
                    f"image/type {_show(manifest.image_type)} is not "
                    f"one of {', '.join(IMAGE_TYPES)}",
                )
            )
    return problems


def _part_problems(parts: object) -> list[_Problem]:
    # Typed loosely on purpose: render() may be handed a hand-built record.
    problems: list[_Problem] = []
    if not isinstance(parts, tuple | list):
        return [("image/parts", f"image/parts must be a tuple of PartEntry, not {_show(parts)}")]
    for position, part in enumerate(parts):
        where = f"image/parts/part[{position}]"
        if not isinstance(part, PartEntry):
            problems.append((where, f"{where} is not a PartEntry: {_show(part)}"))
            continue
        if isinstance(part.index, bool) or part.index != position:
            problems.append(
                (
                    f"{where}/index",
                    f"{where} has index {_show(part.index)}; part "
                    "indices must be exactly 0..n-1 in order",
                )
            )
        for label, problem in (
            (f"{where}/filename", plain_name_problem(f"{where}/filename", part.filename)),
            (f"{where}/digest", _digest_problem(f"{where}/digest", part.digest)),
        ):
            if problem is not None:
                problems.append((label, problem))
    # Empty names are reported on their own (as missing or empty), not as duplicates.
    names = Counter(p.filename for p in parts if isinstance(p, PartEntry) and p.filename)
    for filename, times in names.items():
        if times > 1:
            problems.append(
                ("image/parts", f"part file name {_show(filename)} is listed {times} times")
            )
    return problems


def _mapping_problems(mappings: object) -> list[_Problem]:
    base = "machine_configuration/block_device_mapping"
    if not isinstance(mappings, tuple | list):
        return [(base, f"{base} must be a tuple of DeviceMapping, not {_show(mappings)}")]
    problems: list[_Problem] = []
    for position, mapping in enumerate(mappings):
        where = f"{base}/mapping[{position}]"
        if not isinstance(mapping, DeviceMapping):
            problems.append((where, f"{where} is not a DeviceMapping: {_show(mapping)}"))
            continue
        problems += _optional_text_problems(
            [(f"{where}/virtual", mapping.virtual), (f"{where}/device", mapping.device)]
        )
    virtuals = Counter(m.virtual for m in mappings if isinstance(m, DeviceMapping) and m.virtual)
    for virtual, times in virtuals.items():
        if times > 1:
            problems.append((base, f"{base} maps {_show(virtual)} {times} times"))
    return problems


def _record_problems(manifest: Manifest, *, need_signature: bool) -> list[_Problem]:
    """Everything that keeps ``manifest`` from being written as a classic manifest."""
    layout = _LAYOUTS.get(manifest.version)
    if layout is None:
        return [
            (
                "version",
                f"manifest version {_show(manifest.version)} is not supported "
                f"(supported: {', '.join(SUPPORTED_VERSIONS)})",
            )
        ]
    problems: list[_Problem] = []

    def check(label: str, problem: str | None) -> None:
        if problem is not None:
            problems.append((label, problem))

    check("image/name", plain_name_problem("image/name", manifest.name))
    check("image/user", _text_problem("image/user", manifest.user))
    check("image/digest", _digest_problem("image/digest", manifest.digest))
    for label in ("size", "bundled_size"):
        check(f"image/{label}", _count_problem(f"image/{label}", getattr(manifest, label)))
    for label in (
        "ec2_encrypted_key",
        "user_encrypted_key",
        "ec2_encrypted_iv",
        "user_encrypted_iv",
    ):
        check(f"image/{label}", _hex_problem(f"image/{label}", getattr(manifest, label)))
    if manifest.signature is not None:
        check("signature", _hex_problem("signature", manifest.signature))
    elif need_signature:
        check("signature", "the manifest has no signature (sign signed_sections() first)")
    if manifest.bundler is not None:
        problems += _optional_text_problems(
            (f"bundler/{field}", getattr(manifest.bundler, field))
            for field in ("name", "version", "release")
        )
    problems += _optional_text_problems(
        [
            ("machine_configuration/architecture", manifest.architecture),
            ("machine_configuration/kernel_id", manifest.kernel_id),
            ("machine_configuration/ramdisk_id", manifest.ramdisk_id),
            ("image/kernel_name", manifest.kernel_name),
        ]
    )
    problems += _optional_text_problems(
        (f"machine_configuration/product_codes/product_code[{i}]", code)
        for i, code in enumerate(manifest.product_codes)
    )
    problems += _optional_text_problems(
        (f"image/ancestry/ancestor_ami_id[{i}]", ami) for i, ami in enumerate(manifest.ancestry)
    )
    problems += _mapping_problems(manifest.block_device_mapping)
    problems += _part_problems(manifest.parts)
    problems += _layout_problems(manifest, layout)
    return problems


# --------------------------------------------------------------------------- writer

# Spec §3: text is escaped as &amp; &lt; &gt; only; quotes stay as they are.
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def _element(tag: str, text: str) -> str:
    return f"<{tag}>{text.translate(_ESCAPES)}</{tag}>"


def _list_element(tag: str, item_tag: str, items: Iterable[str]) -> str:
    inner = "".join(_element(item_tag, item) for item in items)
    return f"<{tag}>{inner}</{tag}>" if inner else ""


def _machine_configuration_xml(manifest: Manifest) -> str:
    children = []
    if manifest.architecture is not None:
        children.append(_element("architecture", manifest.architecture))
    if manifest.block_device_mapping:
        # Sorted by virtual name, as the classic tools write them (Ruby sorts
        # strings bytewise; code-point order on str is the same order).
        mappings = sorted(manifest.block_device_mapping, key=lambda m: m.virtual)
        children.append(
            "<block_device_mapping>"
            + "".join(
                f"<mapping>{_element('virtual', m.virtual)}{_element('device', m.device)}</mapping>"
                for m in mappings
            )
            + "</block_device_mapping>"
        )
    if manifest.kernel_id is not None:
        children.append(_element("kernel_id", manifest.kernel_id))
    if manifest.ramdisk_id is not None:
        children.append(_element("ramdisk_id", manifest.ramdisk_id))
    children.append(_list_element("product_codes", "product_code", manifest.product_codes))
    inner = "".join(children)
    return f"<machine_configuration>{inner}</machine_configuration>" if inner else ""


def _parts_xml(parts: Sequence[PartEntry]) -> str:
    if not parts:
        return "<parts count='0'/>"
    entries = "".join(
        f"<part index='{part.index}'>{_element('filename', part.filename)}"
        f"<digest algorithm='{_DIGEST_ALGORITHM}'>{part.digest}</digest></part>"
        for part in parts
    )
    return f"<parts count='{len(parts)}'>{entries}</parts>"


def _image_xml(manifest: Manifest) -> str:
    pieces = [_element("name", manifest.name), _element("user", manifest.user)]
    if manifest.image_type is not None:
        pieces.append(_element("type", manifest.image_type))
    if manifest.kernel_name is not None:
        pieces.append(_element("kernel_name", manifest.kernel_name))
    pieces += [
        _list_element("ancestry", "ancestor_ami_id", manifest.ancestry),
        f"<digest algorithm='{_DIGEST_ALGORITHM}'>{manifest.digest}</digest>",
        f"<size>{manifest.size}</size>",
        f"<bundled_size>{manifest.bundled_size}</bundled_size>",
        f"<ec2_encrypted_key algorithm='{_CIPHER_ALGORITHM}'>{manifest.ec2_encrypted_key}"
        "</ec2_encrypted_key>",
        f"<user_encrypted_key algorithm='{_CIPHER_ALGORITHM}'>{manifest.user_encrypted_key}"
        "</user_encrypted_key>",
        f"<ec2_encrypted_iv>{manifest.ec2_encrypted_iv}</ec2_encrypted_iv>",
        f"<user_encrypted_iv>{manifest.user_encrypted_iv}</user_encrypted_iv>",
        _parts_xml(manifest.parts),
    ]
    return f"<image>{''.join(pieces)}</image>"


def _require_writable(manifest: Manifest, *, need_signature: bool) -> None:
    if not isinstance(manifest, Manifest):
        raise TypeError(f"expected a Manifest, not {type(manifest).__name__}")
    problems = _record_problems(manifest, need_signature=need_signature)
    if problems:
        raise ValueError("cannot write manifest: " + _join([text for _, text in problems]))


def signed_sections(manifest: Manifest) -> bytes:
    """The exact bytes to sign: ``<machine_configuration>...</machine_configuration>``
    (empty when there is none) followed by ``<image>...</image>``, as :func:`render`
    writes them. Raises ValueError for a record that cannot be written."""
    _require_writable(manifest, need_signature=False)
    text = _machine_configuration_xml(manifest) + _image_xml(manifest)
    return text.encode("utf-8")


def render(manifest: Manifest) -> bytes:
    """The whole manifest file, byte for byte as the classic tools write it.

    Requires ``manifest.signature``; raises ValueError for a record that cannot
    be written (unsigned, parts not indexed 0..n-1, names that are not plain,
    fields the version has no place for, ...), naming every problem."""
    _require_writable(manifest, need_signature=True)
    assert manifest.signature is not None  # checked above; tells the type checker
    bundler = ""
    if manifest.bundler is not None:
        b = manifest.bundler
        bundler = (
            f"<bundler>{_element('name', b.name)}{_element('version', b.version)}"
            f"{_element('release', b.release)}</bundler>"
        )
    text = (
        "<?xml version='1.0'?><manifest>"
        + _element("version", manifest.version)
        + bundler
        + _machine_configuration_xml(manifest)
        + _image_xml(manifest)
        + _element("signature", manifest.signature)
        + "</manifest>"
    )
    return text.encode("utf-8")


# --------------------------------------------------------------------------- reader: hostile input

# The XML declaration, the only "<?" allowed. It holds no "?" of its own.
_DECLARATION = re.compile(rb"\A(?:\xef\xbb\xbf)?<\?xml[ \t\r\n][^?<>]*\?>")
# In a well-formed document "<" appears only in markup (never in text or
# attribute values), so these byte patterns find every DOCTYPE, entity
# declaration, comment, CDATA section and processing instruction, wherever it is.
_REFUSED_MARKUP: tuple[tuple[re.Pattern[bytes], str], ...] = (
    (re.compile(rb"<!\s*DOCTYPE", re.IGNORECASE), "a DOCTYPE"),
    (re.compile(rb"<!\s*ENTITY", re.IGNORECASE), "an entity declaration"),
    (re.compile(rb"<!--"), "a comment"),
    (re.compile(rb"<!\[CDATA\[", re.IGNORECASE), "a CDATA section"),
    (re.compile(rb"<\?"), "a processing instruction"),
    (re.compile(rb"<!"), "a markup declaration"),
)
_ACCEPTED_ENCODINGS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


def _refuse_hostile_bytes(raw: bytes) -> None:
    if len(raw) > MAX_MANIFEST_SIZE:
        raise ManifestError(
            f"manifest is {len(raw)} bytes, more than the {MAX_MANIFEST_SIZE} allowed; refusing it"
        )
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ManifestError(f"manifest is not valid UTF-8 (byte {err.start})") from None
    declaration = _DECLARATION.match(raw)
    body = raw[declaration.end() :] if declaration else raw
    for pattern, what in _REFUSED_MARKUP:
        if pattern.search(body):
            raise ManifestError(f"manifest has {what}; refusing it")


def _hardened_parser() -> etree.XMLParser:
    """An lxml parser that never loads, fetches or expands anything.

    Hostile markup is refused before parsing; these options are the second
    line of defence. A fresh parser per call: lxml parsers are not to be
    shared between threads."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        huge_tree=False,
        remove_comments=False,
        remove_pis=False,
        strip_cdata=False,
        recover=False,
        collect_ids=False,
    )


def _parse_tree(raw: bytes) -> etree._Element:
    try:
        root = etree.fromstring(raw, _hardened_parser())
    except etree.XMLSyntaxError as err:
        first_line = (str(err).splitlines() or ["syntax error"])[0]
        raise ManifestError(f"manifest is not well-formed XML: {first_line}") from None
    tree = root.getroottree()
    encoding = (tree.docinfo.encoding or "utf-8").lower()
    if encoding not in _ACCEPTED_ENCODINGS:
        raise ManifestError(f"manifest declares encoding {encoding!r}; only UTF-8 is accepted")
    if getattr(tree.docinfo, "doctype", ""):  # not in lxml-stubs
        raise ManifestError("manifest has a DOCTYPE; refusing it")
    # Refused before parsing already; checked again in case the byte scan and
    # libxml2 ever disagree about what is markup.
    strays = root.iter(etree.Comment, etree.ProcessingInstruction, etree.Entity)
    outside = (*root.itersiblings(preceding=True), *root.itersiblings())
    if next(strays, None) is not None or outside:
        raise ManifestError("manifest has a comment, processing instruction or entity; refusing it")
    if root.tag != "manifest":
        raise ManifestError(f"not a bundle manifest: the root element is <{root.tag}>")
    return root


# --------------------------------------------------------------------------- reader: signed data


def _cut_section(raw: bytes, root: etree._Element, name: str) -> tuple[bytes, str | None]:
    """The substring ``<name>...</name>`` of the raw bytes, or b"" when the
    element is absent, with a problem when the cut could be ambiguous.

    The signature covers these raw bytes while the record comes from the
    tree, so both must mean the same element: exactly one such element in
    the whole tree, a direct child of <manifest>, and exactly one start tag
    and one end tag for it in the bytes, written plainly (no attributes, no
    white space) so that the cut is the element the tree read."""
    tag = name.encode("ascii")
    in_tree = sum(1 for _ in root.iter(name))
    any_start = len(re.findall(rb"<" + tag + rb"[\s/>]", raw))
    any_end = len(re.findall(rb"</" + tag + rb"[\s>]", raw))
    if in_tree == 0 and any_start == 0 and any_end == 0:
        return b"", None
    start_tag, end_tag = b"<" + tag + b">", b"</" + tag + b">"
    start, end = raw.find(start_tag), raw.find(end_tag)
    if in_tree != 1:
        return b"", f"the manifest has {in_tree} <{name}> elements; exactly one is allowed"
    if root.find(name) is None:
        return b"", f"<{name}> is not directly inside <manifest>"
    spelled_plainly = (
        any_start == 1
        and any_end == 1
        and raw.count(start_tag) == 1
        and raw.count(end_tag) == 1
        and start < end
    )
    if not spelled_plainly:
        # Only then does a byte search find the element the tree read.
        return b"", (
            f"<{name}> must be written as '<{name}>...</{name}>' without attributes or "
            "spaces, so that the signed bytes can be cut out unambiguously"
        )
    return raw[start : end + len(end_tag)], None


# --------------------------------------------------------------------------- reader: fields


class _FieldReader:
    """Reads fields from the tree, collecting every problem instead of stopping."""

    def __init__(self) -> None:
        self.problems: list[_Problem] = []

    def report(self, label: str, message: str) -> None:
        self.problems.append((label, message))

    def one(
        self, parent: etree._Element | None, tag: str, label: str, *, required: bool
    ) -> etree._Element | None:
        if parent is None:
            return None
        found = parent.findall(tag)
        if len(found) > 1:
            self.report(label, f"{label} appears {len(found)} times")
            return None
        if not found:
            if required:
                self.report(label, f"{label} is missing")
            return None
        return found[0]

    def text_of(self, element: etree._Element, label: str) -> str | None:
        """Element text; None (reported) if it has child elements; None if empty."""
        if len(element):
            self.report(label, f"{label} must hold text only")
            return None
        return element.text or None

    def leaf(
        self, parent: etree._Element | None, tag: str, label: str, *, required: bool
    ) -> tuple[etree._Element | None, str | None]:
        """The child element ``tag`` and its text (None when absent or empty)."""
        element = self.one(parent, tag, label, required=required)
        if element is None:
            return None, None
        value = self.text_of(element, label)
        if value is None and required and not len(element):
            self.report(label, f"{label} is empty")
        return element, value

    def text(
        self, parent: etree._Element | None, tag: str, label: str, *, required: bool
    ) -> str | None:
        return self.leaf(parent, tag, label, required=required)[1]

    def required(self, parent: etree._Element | None, tag: str, label: str) -> str:
        # "" stands in for a missing value; the problem is already reported.
        return self.text(parent, tag, label, required=True) or ""

    def integer(self, parent: etree._Element | None, tag: str, label: str) -> int:
        value = self.text(parent, tag, label, required=True)
        return 0 if value is None else self.parse_integer(value, label)

    def parse_integer(self, value: str, label: str) -> int:
        # 20 digits hold any 64-bit size; Python's int() would also take signs,
        # spaces, underscores and non-ASCII digits, none of which belong here.
        if not re.fullmatch(r"[0-9]{1,20}", value):
            self.report(label, f"{label} {_show(value)} is not a non-negative integer")
            return 0
        return int(value)

    def hex(self, value: str | None, label: str) -> str:
        if value is None:
            return ""
        if not re.fullmatch(r"[0-9a-fA-F]+", value) or len(value) % 2:
            self.report(label, f"{label} {_show(value)} is not hex")
        return value.lower()

    def algorithm(self, element: etree._Element | None, label: str, expected: str) -> None:
        found = None if element is None else element.get("algorithm")
        if found is not None and found.upper() != expected:
            self.report(
                label, f"{label} uses algorithm {_show(found)}; only {expected} is supported"
            )

    def texts(self, parent: etree._Element | None, tag: str, label: str) -> tuple[str, ...]:
        if parent is None:
            return ()
        values = (
            self.text_of(child, f"{label}[{i}]") for i, child in enumerate(parent.findall(tag))
        )
        # Empty entries carry nothing; the classic reader skipped them too.
        return tuple(value for value in values if value)


def _read_bundler(r: _FieldReader, root: etree._Element) -> Bundler | None:
    element = r.one(root, "bundler", "bundler", required=False)
    if element is None:
        return None
    return Bundler(
        *(
            r.required(element, field, f"bundler/{field}")
            for field in ("name", "version", "release")
        )
    )


def _read_mappings(r: _FieldReader, machine: etree._Element | None) -> tuple[DeviceMapping, ...]:
    base = "machine_configuration/block_device_mapping"
    container = r.one(machine, "block_device_mapping", base, required=False)
    if container is None:
        return ()
    return tuple(
        DeviceMapping(
            r.required(mapping, "virtual", f"{base}/mapping[{i}]/virtual"),
            r.required(mapping, "device", f"{base}/mapping[{i}]/device"),
        )
        for i, mapping in enumerate(container.findall("mapping"))
    )


def _read_parts(r: _FieldReader, image: etree._Element | None) -> tuple[PartEntry, ...]:
    container = r.one(image, "parts", "image/parts", required=True)
    if container is None:
        return ()
    elements = container.findall("part")
    count = container.get("count")
    if count is None:
        r.report("image/parts/count", "image/parts has no count attribute")
    else:
        declared = r.parse_integer(count, "image/parts count")
        if declared != len(elements) and not any(
            label == "image/parts count" for label, _ in r.problems
        ):
            r.report(
                "image/parts/count",
                f"image/parts says count='{count}' but lists {len(elements)} part(s)",
            )
    parts = []
    for position, element in enumerate(elements):
        where = f"image/parts/part[{position}]"
        index = element.get("index")
        if index is None:
            r.report(f"{where}/index", f"{where} has no index attribute")
        elif index != str(position):
            r.report(
                f"{where}/index",
                f"{where} has index {_show(index)}; part indices must be exactly 0..n-1 in order",
            )
        filename = r.text(element, "filename", f"{where}/filename", required=True)
        digest_element, digest = r.leaf(element, "digest", f"{where}/digest", required=True)
        r.algorithm(digest_element, f"{where}/digest", _DIGEST_ALGORITHM)
        parts.append(PartEntry(position, filename or "", (digest or "").lower()))
    return tuple(parts)


def _read_secret(r: _FieldReader, image: etree._Element | None, field: str) -> str:
    """An RSA-wrapped key or IV, hex; the key elements carry the cipher name."""
    element, value = r.leaf(image, field, f"image/{field}", required=True)
    if field.endswith("_key"):
        r.algorithm(element, f"image/{field}", _CIPHER_ALGORITHM)
    return r.hex(value, f"image/{field}")


def _read_manifest(r: _FieldReader, root: etree._Element, version: str) -> Manifest:
    machine = r.one(root, "machine_configuration", "machine_configuration", required=False)
    image = r.one(root, "image", "image", required=True)
    signature = r.text(root, "signature", "signature", required=False)
    digest_element, digest = r.leaf(image, "digest", "image/digest", required=True)
    r.algorithm(digest_element, "image/digest", _DIGEST_ALGORITHM)
    product_codes = r.one(
        machine, "product_codes", "machine_configuration/product_codes", required=False
    )
    ancestry = r.one(image, "ancestry", "image/ancestry", required=False)
    return Manifest(
        name=r.required(image, "name", "image/name"),
        user=r.required(image, "user", "image/user"),
        digest=(digest or "").lower(),
        size=r.integer(image, "size", "image/size"),
        bundled_size=r.integer(image, "bundled_size", "image/bundled_size"),
        ec2_encrypted_key=_read_secret(r, image, "ec2_encrypted_key"),
        user_encrypted_key=_read_secret(r, image, "user_encrypted_key"),
        ec2_encrypted_iv=_read_secret(r, image, "ec2_encrypted_iv"),
        user_encrypted_iv=_read_secret(r, image, "user_encrypted_iv"),
        parts=_read_parts(r, image),
        version=version,
        bundler=_read_bundler(r, root),
        architecture=r.text(
            machine, "architecture", "machine_configuration/architecture", required=False
        ),
        block_device_mapping=_read_mappings(r, machine),
        kernel_id=r.text(machine, "kernel_id", "machine_configuration/kernel_id", required=False),
        ramdisk_id=r.text(
            machine, "ramdisk_id", "machine_configuration/ramdisk_id", required=False
        ),
        product_codes=r.texts(
            product_codes, "product_code", "machine_configuration/product_codes/product_code"
        ),
        image_type=r.text(image, "type", "image/type", required=False),
        kernel_name=r.text(image, "kernel_name", "image/kernel_name", required=False),
        ancestry=r.texts(ancestry, "ancestor_ami_id", "image/ancestry/ancestor_ami_id"),
        signature=None if signature is None else r.hex(signature, "signature"),
    )


def _read_version(root: etree._Element) -> str:
    r = _FieldReader()
    version = r.text(root, "version", "version", required=True)
    if r.problems or version is None:
        raise ManifestError("manifest is invalid: " + _join([m for _, m in r.problems]))
    if version not in _LAYOUTS:
        raise ManifestError(
            f"manifest version {_show(version)} is not supported "
            f"(supported: {', '.join(SUPPORTED_VERSIONS)})"
        )
    return version


def _join(problems: list[str]) -> str:
    shown = problems[:_MAX_LISTED_PROBLEMS]
    more = len(problems) - len(shown)
    return "; ".join(shown) + (f"; and {more} more problem(s)" if more > 0 else "")


def parse(data: bytes) -> ParsedManifest:
    """Read a manifest file, refusing anything hostile or invalid.

    Raises :class:`ManifestError` naming every problem found (joined with
    "; "), or the first hostile construct (DOCTYPE, entity, comment, CDATA,
    processing instruction) before anything is parsed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"parse() takes bytes, not {type(data).__name__}")
    raw = bytes(data)
    _refuse_hostile_bytes(raw)
    root = _parse_tree(raw)
    version = _read_version(root)
    reader = _FieldReader()
    manifest = _read_manifest(reader, root, version)
    reported = {label for label, _ in reader.problems}
    problems = [message for _, message in reader.problems]
    # Record-level rules (plain names, duplicates, layout, ...), minus fields
    # already reported as missing or malformed.
    problems += [
        message
        for label, message in _record_problems(manifest, need_signature=False)
        if not any(label == seen or label.startswith(seen + "/") for seen in reported)
    ]
    cuts = [_cut_section(raw, root, name) for name in ("machine_configuration", "image")]
    problems += [problem for _, problem in cuts if problem is not None]
    if problems:
        raise ManifestError("manifest is invalid: " + _join(problems))
    return ParsedManifest(manifest=manifest, signed_data=b"".join(cut for cut, _ in cuts), raw=raw)
