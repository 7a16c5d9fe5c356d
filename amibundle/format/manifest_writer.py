"""Writing a manifest byte for byte as the classic tools do.

See :mod:`amibundle.format.manifest` for the decisions taken from the
classic Ruby tools (element order, escaping, empty elements).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from amibundle.format.manifest import CIPHER_ALGORITHM, DIGEST_ALGORITHM, Manifest, PartEntry
from amibundle.format.manifest_checks import join_problems, record_problems

__all__ = ["render", "signed_sections"]

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
        f"<digest algorithm='{DIGEST_ALGORITHM}'>{part.digest}</digest></part>"
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
        f"<digest algorithm='{DIGEST_ALGORITHM}'>{manifest.digest}</digest>",
        f"<size>{manifest.size}</size>",
        f"<bundled_size>{manifest.bundled_size}</bundled_size>",
        f"<ec2_encrypted_key algorithm='{CIPHER_ALGORITHM}'>{manifest.ec2_encrypted_key}"
        "</ec2_encrypted_key>",
        f"<user_encrypted_key algorithm='{CIPHER_ALGORITHM}'>{manifest.user_encrypted_key}"
        "</user_encrypted_key>",
        f"<ec2_encrypted_iv>{manifest.ec2_encrypted_iv}</ec2_encrypted_iv>",
        f"<user_encrypted_iv>{manifest.user_encrypted_iv}</user_encrypted_iv>",
        _parts_xml(manifest.parts),
    ]
    return f"<image>{''.join(pieces)}</image>"


def _require_writable(manifest: Manifest, *, need_signature: bool) -> None:
    if not isinstance(manifest, Manifest):
        raise TypeError(f"expected a Manifest, not {type(manifest).__name__}")
    problems = record_problems(manifest, need_signature=need_signature)
    if problems:
        raise ValueError("cannot write manifest: " + join_problems([text for _, text in problems]))


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
