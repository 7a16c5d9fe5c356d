"""Unit tests of amibundle.validate: the checks and normalisation of what a
user types (account ids, product codes, block-device mappings, names, sizes)."""

from __future__ import annotations

import platform

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amibundle.errors import ImageSizeError, UsageError
from amibundle.format.manifest import DeviceMapping
from amibundle.validate import (
    MAX_IMAGE_SIZE,
    check_image_size,
    check_plain_name,
    detect_architecture,
    normalize_account_id,
    parse_block_device_mapping,
    split_product_codes,
)
from tests.support.errors import cli_hint, cli_text

GIB = 1024**3


def one_line(err: pytest.ExceptionInfo[UsageError]) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# --- account ids -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123456789012", "123456789012"),
        ("1234-5678-9012", "123456789012"),
        ("000000000000", "000000000000"),  # leading zeros are kept: it is text
        ("-123456789012-", "123456789012"),
        ("1-2-3-4-5-6-7-8-9-0-1-2", "123456789012"),
    ],
)
def test_account_ids_are_12_digits_without_dashes(text: str, expected: str) -> None:
    assert normalize_account_id(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "12345678901",  # 11 digits
        "1234567890123",  # 13 digits (the classic accepted it)
        "x123456789012",  # letters around digits (the classic accepted it)
        "123456789012x",
        "a1234-5678-9012b",
        "AKIAIOSFODNN7EXAMPLE",  # an access key id
        "",
        "1234 5678 9012",
        "1234_5678_9012",
        "١٢٣٤٥٦٧٨٩٠١٢",  # Arabic-Indic digits are digits to str.isdigit, not to AWS
    ],
)
def test_other_account_texts_are_refused(text: str) -> None:
    with pytest.raises(UsageError) as err:
        normalize_account_id(text)
    message = one_line(err)
    assert "12-digit" in message
    assert "user=" in message  # a Python caller reads the parameter...
    assert cli_text(err).startswith("--user ")  # ...the command line its flag
    assert repr(text) in message


def test_an_access_key_id_gets_a_hint() -> None:
    with pytest.raises(UsageError) as err:
        normalize_account_id("AKIAIOSFODNN7EXAMPLE")
    assert err.value.hint is not None
    assert "access key" in err.value.hint


@settings(max_examples=100)
@given(digits=st.text(alphabet="0123456789", min_size=12, max_size=12), data=st.data())
def test_dashes_anywhere_are_dropped(digits: str, data: st.DataObject) -> None:
    dashed = "".join(c + "-" * data.draw(st.integers(0, 2)) for c in digits)
    assert normalize_account_id(dashed) == digits


# --- product codes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], ()),
        (["a"], ("a",)),
        (["a,b"], ("a", "b")),
        (["a,b", "c"], ("a", "b", "c")),
        ([" a , b "], ("a", "b")),
        (["b,a", "a"], ("b", "a")),  # order kept, repeats dropped
        (["ABCD1234,EFGH5678"], ("ABCD1234", "EFGH5678")),
    ],
)
def test_product_codes_are_split_on_commas(values: list[str], expected: tuple[str, ...]) -> None:
    assert split_product_codes(values) == expected


@pytest.mark.parametrize("values", [[""], ["a,"], [",a"], ["a,,b"], ["a", " "], ["a, ,b"]])
def test_empty_product_codes_are_refused(values: list[str]) -> None:
    with pytest.raises(UsageError) as err:
        split_product_codes(values)
    assert "product_codes=" in one_line(err)
    assert "--productcodes" in cli_text(err)


# --- block-device mappings ----------------------------------------------------------------


def bdm(*pairs: tuple[str, str]) -> tuple[DeviceMapping, ...]:
    return tuple(DeviceMapping(v, d) for v, d in pairs)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], ()),
        (["ami=sda1"], bdm(("ami", "sda1"))),
        (
            ["root=/dev/sda1,ami=sda1,ephemeral0=sdb"],
            bdm(("ami", "sda1"), ("ephemeral0", "sdb"), ("root", "/dev/sda1")),
        ),
        # repeatable; later pairs override earlier ones of the same virtual name
        (["ami=sda1,root=/dev/sda1", "ami=xvda1"], bdm(("ami", "xvda1"), ("root", "/dev/sda1"))),
        (["ami=sda1,ami=sda2"], bdm(("ami", "sda2"))),
        # spaces around names and '=' are trimmed
        ([" ami = sda1 , swap= sda3"], bdm(("ami", "sda1"), ("swap", "sda3"))),
        # a second '=' and what follows it is dropped, as the classic does
        (["ami=sda1=extra"], bdm(("ami", "sda1"))),
        (["ami=sda1=x=y,root=/dev/sda1"], bdm(("ami", "sda1"), ("root", "/dev/sda1"))),
    ],
)
def test_block_device_mappings(values: list[str], expected: tuple[DeviceMapping, ...]) -> None:
    assert parse_block_device_mapping(values) == expected


def test_block_device_mappings_from_a_mapping() -> None:
    got = parse_block_device_mapping({"swap": "sda3", "ami": " sda1 "})
    assert got == bdm(("ami", "sda1"), ("swap", "sda3"))


@pytest.mark.parametrize(
    "values",
    [
        [""],  # an empty value
        ["   "],
        ["ami"],  # no '='
        ["ami="],  # blank device
        ["ami= "],
        ["=sda1"],  # blank virtual name
        [" =sda1"],
        ["ami=sda1,"],  # an empty item
        ["ami=sda1,,root=sda2"],
        ["ami==sda1"],  # the device is what lies before the second '=': blank
        ["ami=sda1", ""],
    ],
)
def test_blank_block_device_mappings_are_refused(values: list[str]) -> None:
    with pytest.raises(UsageError) as err:
        parse_block_device_mapping(values)
    assert "block_device_mapping=" in one_line(err)
    assert "--block-device-mapping" in cli_text(err)


@settings(max_examples=100)
@given(
    pairs=st.lists(
        st.tuples(
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8),
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/", min_size=1, max_size=12),
        ),
        max_size=8,
    ),
    group=st.integers(1, 4),
)
def test_block_device_mappings_last_wins_and_sorted(
    pairs: list[tuple[str, str]], group: int
) -> None:
    # The same pairs, spread over several -B values of `group` pairs each.
    items = [f"{v}={d}" for v, d in pairs]
    values = [",".join(items[i : i + group]) for i in range(0, len(items), group)]
    expected = dict(pairs)  # a dict keeps the last value of each key
    got = parse_block_device_mapping(values)
    assert got == tuple(DeviceMapping(v, expected[v]) for v in sorted(expected))


# --- names and sizes ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["image.img", "my-image_2", ".hidden", "ünïcode", "a b"])
def test_plain_names_are_accepted(name: str) -> None:
    assert check_plain_name(name, "prefix") == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "/abs", "../up", "a\\b", "tab\there", "nl\n", "nul\0"]
)
def test_names_that_are_not_plain_are_refused(name: str) -> None:
    with pytest.raises(UsageError) as err:
        check_plain_name(name, "prefix")
    assert one_line(err).startswith("prefix=")
    assert cli_text(err).startswith("--prefix")


def test_max_image_size_is_ten_gib() -> None:
    assert MAX_IMAGE_SIZE == 10 * GIB == 10_737_418_240


@pytest.mark.parametrize("size", [1, 4096, 10 * GIB])
def test_image_sizes_up_to_exactly_ten_gib_are_accepted(size: int) -> None:
    check_image_size(size, size_checks=True)


def test_an_empty_image_is_refused() -> None:
    # Not a UsageError: the command line was right, the data is not (classic exit 254).
    with pytest.raises(ImageSizeError) as err:
        check_image_size(0, size_checks=True)
    assert "empty" in one_line(err)


@pytest.mark.parametrize("size", [10 * GIB + 1, 11 * GIB, 1 << 50])
def test_images_over_ten_gib_are_refused(size: int) -> None:
    with pytest.raises(ImageSizeError) as err:
        check_image_size(size, size_checks=True)
    assert str(size) in one_line(err)
    assert "10 GiB" in str(err.value)
    assert err.value.hint is not None and "size_checks=False" in err.value.hint
    assert "--no-size-checks" in str(cli_hint(err))


@pytest.mark.parametrize("size", [0, 10 * GIB, 10 * GIB + 1, 1 << 50])
def test_size_checks_can_be_turned_off(size: int) -> None:
    check_image_size(size, size_checks=False)


# --- architecture ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "arch"),
    [
        ("i386", "i386"),
        ("i486", "i386"),
        ("i586", "i386"),
        ("i686", "i386"),
        ("x86_64", "x86_64"),
        ("amd64", "x86_64"),
        ("AMD64", "x86_64"),
        ("aarch64", "unknown"),
        ("i786", "unknown"),
        ("", "unknown"),
    ],
)
def test_detect_architecture(machine: str, arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert detect_architecture() == arch
