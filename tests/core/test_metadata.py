"""amibundle.metadata.BundleMetadata: what a manifest says about the image,
checked once from raw values (every problem reported at once), and filled
from the instance metadata by ``inherit`` without overriding the caller."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amibundle.errors import AmibundleError, UsageError
from amibundle.format.manifest import DeviceMapping
from amibundle.metadata import BundleMetadata
from amibundle.validate import detect_architecture
from tests.support.errors import cli_text, one_line

USER = "123456789012"


# --- valid values, normalised -------------------------------------------------------------


def test_defaults() -> None:
    metadata = BundleMetadata.create(user=USER, arch="x86_64")
    assert metadata == BundleMetadata(account=USER, architecture="x86_64")
    assert (metadata.image_type, metadata.kernel_name, metadata.kernel_id) == (
        "machine",
        None,
        None,
    )
    assert (metadata.product_codes, metadata.block_device_mapping, metadata.ancestry) == (
        (),
        (),
        (),
    )


def test_everything_normalised() -> None:
    metadata = BundleMetadata.create(
        user="1234-5678-9012",
        arch="i386",
        kernel_id="aki-12345678",
        ramdisk_id="ari-87654321",
        product_codes=["b1,a2", " c3 ", "a2"],
        block_device_mapping=["root=/dev/sda1,ami=sda1", "ephemeral0=sdb", "ami=xvda"],
        ancestry=["ami-11111111", "ami-22222222"],
    )
    assert metadata.account == "123456789012"
    assert metadata.architecture == "i386"
    assert (metadata.kernel_id, metadata.ramdisk_id) == ("aki-12345678", "ari-87654321")
    assert metadata.product_codes == ("b1", "a2", "c3")  # split, stripped, first seen first
    assert metadata.block_device_mapping == (  # parsed, later wins, sorted by name
        DeviceMapping("ami", "xvda"),
        DeviceMapping("ephemeral0", "sdb"),
        DeviceMapping("root", "/dev/sda1"),
    )
    assert metadata.ancestry == ("ami-11111111", "ami-22222222")
    assert isinstance(metadata.ancestry, tuple)


def test_a_mapping_is_taken_as_block_device_mapping() -> None:
    metadata = BundleMetadata.create(
        user=USER, arch="x86_64", block_device_mapping={"root": "/dev/sda1", "ami": "sda1"}
    )
    assert metadata.block_device_mapping == (
        DeviceMapping("ami", "sda1"),
        DeviceMapping("root", "/dev/sda1"),
    )


def test_one_string_of_product_codes() -> None:
    metadata = BundleMetadata.create(user=USER, arch="x86_64", product_codes="p1,p2")
    assert metadata.product_codes == ("p1", "p2")


def test_arch_none_is_this_machines() -> None:
    assert BundleMetadata.create(user=USER).architecture == detect_architecture()
    assert BundleMetadata.create(user=USER, arch=None).architecture in ("i386", "x86_64", "unknown")


def test_empty_optional_texts_are_none() -> None:
    metadata = BundleMetadata.create(user=USER, arch="x86_64", kernel_id="", ramdisk_id="")
    assert (metadata.kernel_id, metadata.ramdisk_id) == (None, None)


def test_the_record_is_frozen() -> None:
    metadata = BundleMetadata.create(user=USER, arch="x86_64")
    with pytest.raises(dataclasses.FrozenInstanceError):
        metadata.account = "000000000000"  # type: ignore[misc]


# --- image types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_type", "kernel_name", "problem"),
    [
        ("machine", None, None),
        ("ramdisk", None, None),
        ("kernel", "vmlinuz-6.1", None),
        ("kernel", None, "kernel_name= is needed"),
        ("kernel", "", "kernel_name= is needed"),
        ("machine", "vmlinuz", "kernel_name= is only for a kernel image"),
        ("ramdisk", "vmlinuz", "kernel_name= is only for a kernel image"),
        ("Machine", None, "image_type= must be one of machine, kernel, ramdisk, not 'Machine'"),
        ("", None, "image_type= must be one of machine, kernel, ramdisk, not ''"),
    ],
)
def test_image_type_and_kernel_name(
    image_type: str, kernel_name: str | None, problem: str | None
) -> None:
    def create() -> BundleMetadata:
        return BundleMetadata.create(
            user=USER, arch="x86_64", image_type=image_type, kernel_name=kernel_name
        )

    if problem is None:
        metadata = create()
        assert (metadata.image_type, metadata.kernel_name) == (image_type, kernel_name or None)
        return
    with pytest.raises(UsageError) as caught:
        create()
    text = one_line(caught)
    if problem == "kernel_name= is needed":
        assert text == "a kernel image needs kernel_name="
        assert cli_text(caught) == "a kernel image needs --kernel-name"
    else:
        assert text == problem
    assert caught.value.param in ("image_type", "kernel_name")


# --- every problem at once -------------------------------------------------------------------

BAD: dict[str, tuple[object, str]] = {
    # field: (bad value, what the problem's Python spelling starts with)
    "user": ("12", "user= '12' is not a 12-digit AWS account number"),
    "product_codes": (["a,,b"], "product_codes= 'a,,b' has an empty product code"),
    "block_device_mapping": (["root"], "block_device_mapping= item 'root' is not of the form"),
    "image_type": ("floppy", "image_type= must be one of"),
    "kernel_id": (5, "kernel_id= must be a string, not int"),
    "ramdisk_id": (["ari-1"], "ramdisk_id= must be a string, not list"),
    "ancestry": ("ami-1", "ancestry= must be a sequence of AMI ids"),
}


def test_several_problems_are_all_reported_in_one_error() -> None:
    arguments = {name: value for name, (value, _) in BAD.items()}
    with pytest.raises(UsageError) as caught:
        BundleMetadata.create(arch="x86_64", **arguments)  # type: ignore[arg-type]
    err = caught.value
    assert [problem.param for problem in err.problems] == list(BAD)
    for problem, (_, start) in zip(err.problems, BAD.values(), strict=True):
        assert isinstance(problem, UsageError)
        assert str(problem).startswith(start), str(problem)
    text = one_line(caught)
    assert text == "; ".join(str(problem) for problem in err.problems)
    shown = cli_text(caught)
    for flag in ("--user", "--productcodes", "--block-device-mapping", "--image-type",
                 "--kernel ", "--ramdisk "):  # fmt: skip
        assert flag in shown, shown
    assert "user=" not in shown and "kernel_id=" not in shown


def test_an_access_key_as_account_keeps_its_hint_among_other_problems() -> None:
    with pytest.raises(UsageError) as caught:
        BundleMetadata.create(user="AKIAIOSFODNN7EXAMPLE", product_codes=[","], arch="x86_64")
    assert len(caught.value.problems) == 2
    assert caught.value.hint == "an access key id (AKIA...) is not an account number"


@settings(max_examples=60)
@given(bad=st.sets(st.sampled_from(sorted(BAD))))
def test_any_set_of_problems_is_reported_whole(bad: set[str]) -> None:
    good: dict[str, object] = {
        "user": USER,
        "product_codes": ["p1"],
        "block_device_mapping": ["root=/dev/sda1"],
        "image_type": "machine",
        "kernel_id": "aki-1",
        "ramdisk_id": None,
        "ancestry": ["ami-0"],
    }
    arguments = {name: BAD[name][0] if name in bad else value for name, value in good.items()}
    if not bad:
        BundleMetadata.create(arch="x86_64", **arguments)  # type: ignore[arg-type]
        return
    with pytest.raises(UsageError) as caught:
        BundleMetadata.create(arch="x86_64", **arguments)  # type: ignore[arg-type]
    problems = caught.value.problems or (caught.value,)
    assert sorted(p.param or "" for p in problems) == sorted(bad)
    one_line(caught)


# --- wrong types: a UsageError naming the parameter, never a TypeError -------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("product_codes", 5, id="product_codes=5"),
        pytest.param("product_codes", [5], id="product_codes=[5]"),
        pytest.param("block_device_mapping", 5, id="block_device_mapping=5"),
        pytest.param("block_device_mapping", [5], id="block_device_mapping=[5]"),
        pytest.param("arch", 64, id="arch=64"),
        pytest.param("user", 123456789012, id="user=int"),
        pytest.param("user", None, id="user=None"),
        pytest.param("image_type", None, id="image_type=None"),
        pytest.param("kernel_id", 5, id="kernel_id=5"),
        pytest.param("ancestry", None, id="ancestry=None"),
    ],
)
def test_a_wrong_type_is_a_usage_error_naming_the_parameter(field: str, value: object) -> None:
    arguments: dict[str, object] = {"user": USER, "arch": "x86_64", field: value}
    with pytest.raises(AmibundleError) as caught:
        BundleMetadata.create(**arguments)  # type: ignore[arg-type]
    assert isinstance(caught.value, UsageError)
    assert f"{field}=" in one_line(caught)


# --- inherit ------------------------------------------------------------------------------------

FROM_INSTANCE = {
    "kernel_id": "aki-inherited",
    "ramdisk_id": "ari-inherited",
    "product_codes": ["pc-inherited,pc-two"],
    "block_device_mapping": {"root": "/dev/xvda1", "ami": "xvda1"},
    "ancestry": ["ami-parent", "ami-self"],
}


def test_inherit_fills_every_empty_field_and_names_them() -> None:
    metadata = BundleMetadata.create(user=USER, arch="x86_64")
    filled, taken = metadata.inherit(**FROM_INSTANCE)  # type: ignore[arg-type]
    assert taken == ("kernel", "ramdisk", "product codes", "block device mapping", "ancestry")
    assert (filled.kernel_id, filled.ramdisk_id) == ("aki-inherited", "ari-inherited")
    assert filled.product_codes == ("pc-inherited", "pc-two")
    assert filled.block_device_mapping == (
        DeviceMapping("ami", "xvda1"),
        DeviceMapping("root", "/dev/xvda1"),
    )
    assert filled.ancestry == ("ami-parent", "ami-self")
    assert (filled.account, filled.architecture) == (USER, "x86_64")
    assert metadata.kernel_id is None  # the original is unchanged (frozen)


def test_inherit_keeps_what_the_caller_gave() -> None:
    metadata = BundleMetadata.create(
        user=USER,
        arch="x86_64",
        kernel_id="aki-mine",
        ramdisk_id="ari-mine",
        product_codes=["pc-mine"],
        block_device_mapping=["ami=sda1"],
    )
    filled, taken = metadata.inherit(
        **{k: v for k, v in FROM_INSTANCE.items() if k != "ancestry"}  # type: ignore[arg-type]
    )
    assert taken == ()
    assert filled == metadata


def test_inherit_takes_only_what_the_instance_has() -> None:
    metadata = BundleMetadata.create(user=USER, arch="x86_64", kernel_id="aki-mine")
    filled, taken = metadata.inherit(kernel_id="aki-other", ramdisk_id="ari-1")
    assert taken == ("ramdisk",)
    assert (filled.kernel_id, filled.ramdisk_id) == ("aki-mine", "ari-1")
    nothing, none_taken = metadata.inherit()
    assert (nothing, none_taken) == (metadata, ())
    empty, empty_taken = metadata.inherit(
        kernel_id=None, ramdisk_id="", product_codes=(), block_device_mapping={}, ancestry=()
    )
    assert (empty, empty_taken) == (metadata, ())


def test_inherit_keeps_the_callers_ancestry() -> None:
    metadata = BundleMetadata.create(user=USER, arch="x86_64", ancestry=["ami-mine"])
    filled, taken = metadata.inherit(ancestry=["ami-parent"])
    assert filled.ancestry == ("ami-mine",)
    assert "ancestry" not in taken
