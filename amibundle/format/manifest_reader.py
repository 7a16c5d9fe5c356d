"""Reading a manifest that may be hostile, from any tool that makes bundles.

Hostile markup (DOCTYPE, entities, comments, CDATA, processing
instructions) is refused by a byte scan before parsing, and the parser can
neither load nor fetch nor expand anything. Every field problem is
collected and reported at once. The signed sections are cut from the file's
own bytes, never re-serialised.

Liberal where EC2 is, so that bundles of euca2ools, the Go tools and older
Ruby tools read as they register: elements in any order, any quoting and
white space between them, white space around the value of a field that is a
token (version, type, sizes, digests, hex keys and IVs, signature, part
indices and count), ``<bundler>`` fields empty or missing, no
``<ancestry>``/``<block_device_mapping>``, parts listed in any order (they
are read by their index), part names of any digit width. Strict where
safety is: indices exactly 0..n-1, count, plain part names, digests, hex,
algorithms, and the signed bytes cut unambiguously.
"""

from __future__ import annotations

import re

from lxml import etree

from amibundle.errors import ManifestError, plural, shorten
from amibundle.format.manifest import (
    CIPHER_ALGORITHM,
    DIGEST_ALGORITHM,
    MAX_MANIFEST_SIZE,
    SUPPORTED_VERSIONS,
    Bundler,
    DeviceMapping,
    Manifest,
    ParsedManifest,
    PartEntry,
)
from amibundle.format.manifest_checks import LAYOUTS, Problem, join_problems, record_problems
from amibundle.format.names import show

__all__ = ["parse", "parse_manifest"]

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
        raise ManifestError(f"manifest is not well-formed XML: {shorten(first_line)}") from None
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
        raise ManifestError(f"not a bundle manifest: the root element is <{shorten(root.tag)}>")
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
        self.problems: list[Problem] = []

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

    def token_leaf(
        self, parent: etree._Element | None, tag: str, label: str, *, required: bool
    ) -> tuple[etree._Element | None, str | None]:
        """A field whose value has no white space of its own (a version, size,
        digest, hex key or type): white space around it is not part of it."""
        element, value = self.leaf(parent, tag, label, required=required)
        token = _strip(value)
        if token is None and value is not None and required:
            self.report(label, f"{label} is empty")
        return element, token

    def token(
        self, parent: etree._Element | None, tag: str, label: str, *, required: bool
    ) -> str | None:
        return self.token_leaf(parent, tag, label, required=required)[1]

    def required(self, parent: etree._Element | None, tag: str, label: str) -> str:
        # "" stands in for a missing value; the problem is already reported.
        return self.text(parent, tag, label, required=True) or ""

    def integer(self, parent: etree._Element | None, tag: str, label: str) -> int:
        value = self.token(parent, tag, label, required=True)
        return 0 if value is None else self.parse_integer(value, label)

    def parse_integer(self, value: str, label: str) -> int:
        # 20 digits hold any 64-bit size; Python's int() would also take signs,
        # spaces, underscores and non-ASCII digits, none of which belong here.
        if not re.fullmatch(r"[0-9]{1,20}", value):
            self.report(label, f"{label} {show(value)} is not a non-negative integer")
            return 0
        return int(value)

    def hex(self, value: str | None, label: str) -> str:
        if value is None:
            return ""
        if not re.fullmatch(r"[0-9a-fA-F]+", value) or len(value) % 2:
            self.report(label, f"{label} {show(value)} is not hex")
        return value.lower()

    def algorithm(self, element: etree._Element | None, label: str, expected: str) -> None:
        found = None if element is None else element.get("algorithm")
        if found is not None and found.upper() != expected:
            self.report(
                label, f"{label} uses algorithm {show(found)}; only {expected} is supported"
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
    """Who made the bundle. Only informative, and other tools leave fields
    empty or out (the Go library writes empty ones by default): those read
    as ""."""
    element = r.one(root, "bundler", "bundler", required=False)
    if element is None:
        return None
    return Bundler(
        *(
            r.text(element, field, f"bundler/{field}", required=False) or ""
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
    """The parts in index order: the document may list them in any order, as
    long as the indices are exactly 0..n-1, each once."""
    container = r.one(image, "parts", "image/parts", required=True)
    if container is None:
        return ()
    elements = container.findall("part")
    count = _strip(container.get("count"))
    if count is None:
        r.report("image/parts/count", "image/parts has no count attribute")
    else:
        declared = r.parse_integer(count, "image/parts count")
        if declared != len(elements) and not any(
            label == "image/parts count" for label, _ in r.problems
        ):
            r.report(
                "image/parts/count",
                f"image/parts says count='{count}' but lists {plural(len(elements), 'part')}",
            )
    by_index: dict[int, PartEntry] = {}
    for position, element in enumerate(elements):
        where = f"image/parts/part[{position}]"
        index = _part_index(r, element, where, len(elements), by_index)
        filename = r.text(element, "filename", f"{where}/filename", required=True)
        digest_element, digest = r.token_leaf(element, "digest", f"{where}/digest", required=True)
        r.algorithm(digest_element, f"{where}/digest", DIGEST_ALGORITHM)
        if index is not None:
            by_index[index] = PartEntry(index, filename or "", (digest or "").lower())
    if len(by_index) != len(elements):
        return ()  # the index problems are reported; the parts cannot be ordered
    return tuple(by_index[i] for i in range(len(elements)))


def _part_index(
    r: _FieldReader,
    element: etree._Element,
    where: str,
    count: int,
    seen: dict[int, PartEntry],
) -> int | None:
    """The part's index attribute, if it is one of 0..count-1 not seen before."""
    raw = element.get("index")
    text = _strip(raw)
    if text is None:
        r.report(f"{where}/index", f"{where} has no index attribute")
        return None
    index = int(text) if re.fullmatch(r"[0-9]{1,9}", text) else None
    if index is None or index >= count or index in seen:
        r.report(
            f"{where}/index",
            f"{where} has index {show(raw)}; part indices must be exactly 0..n-1, each once",
        )
        return None
    return index


def _strip(value: str | None) -> str | None:
    """``value`` without XML white space around it; None when nothing is left."""
    if value is None:
        return None
    return value.strip(" \t\r\n") or None


def _read_secret(r: _FieldReader, image: etree._Element | None, field: str) -> str:
    """An RSA-wrapped key or IV, hex; the key elements carry the cipher name."""
    element, value = r.token_leaf(image, field, f"image/{field}", required=True)
    if field.endswith("_key"):
        r.algorithm(element, f"image/{field}", CIPHER_ALGORITHM)
    return r.hex(value, f"image/{field}")


def _read_manifest(r: _FieldReader, root: etree._Element, version: str) -> Manifest:
    machine = r.one(root, "machine_configuration", "machine_configuration", required=False)
    image = r.one(root, "image", "image", required=True)
    signature = r.token(root, "signature", "signature", required=False)
    digest_element, digest = r.token_leaf(image, "digest", "image/digest", required=True)
    r.algorithm(digest_element, "image/digest", DIGEST_ALGORITHM)
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
        image_type=r.token(image, "type", "image/type", required=False),
        kernel_name=r.text(image, "kernel_name", "image/kernel_name", required=False),
        ancestry=r.texts(ancestry, "ancestor_ami_id", "image/ancestry/ancestor_ami_id"),
        signature=None if signature is None else r.hex(signature, "signature"),
    )


def _read_version(root: etree._Element) -> str:
    r = _FieldReader()
    version = r.token(root, "version", "version", required=True)
    if r.problems or version is None:
        raise ManifestError("manifest is invalid: " + join_problems([m for _, m in r.problems]))
    if version not in LAYOUTS:
        raise ManifestError(
            f"manifest version {show(version)} is not supported "
            f"(supported: {', '.join(SUPPORTED_VERSIONS)})"
        )
    return version


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
        for label, message in record_problems(manifest, need_signature=False)
        if not any(label == seen or label.startswith(seen + "/") for seen in reported)
    ]
    cuts = [_cut_section(raw, root, name) for name in ("machine_configuration", "image")]
    problems += [problem for _, problem in cuts if problem is not None]
    if problems:
        raise ManifestError("manifest is invalid: " + join_problems(problems))
    return ParsedManifest(manifest=manifest, signed_data=b"".join(cut for cut, _ in cuts), raw=raw)


def parse_manifest(data: bytes, source: str) -> ParsedManifest:
    """:func:`parse`, with errors naming ``source`` (a file or an S3 URL)."""
    try:
        return parse(data)
    except ManifestError as err:
        raise ManifestError(f"{source}: {err}", hint=err.hint) from None
