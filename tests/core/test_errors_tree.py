"""amibundle.errors: one tree of one-line errors that name the parameter they
are about, spelled for whoever reads them (``user=`` in Python, ``--user`` on
the command line), and errors that report several problems at once."""

from __future__ import annotations

import inspect
import signal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amibundle import errors
from amibundle.errors import (
    AmibundleError,
    IntegrityError,
    OutputExistsError,
    S3Error,
    ToolError,
    ToolNotFound,
    UsageError,
    python_spelling,
)
from tests.support.errors import cli_hint, cli_text


def flags(param: str, off: bool) -> str:
    """A command line's spelling: --no-name for a switch turned off."""
    return "--" + ("no-" if off else "") + param.replace("_", "-")


# --- python_spelling --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{param} 'x' is not valid", "user= 'x' is not valid"),
        ("use {switch} to replace it", "use user=True to replace it"),
        ("{off} lifts the limit", "user=False lifts the limit"),
        ("{param}, {param} and {off}", "user=, user= and user=False"),
        ("no placeholder", "no placeholder"),
        ("{params} {param_x} {Param}", "{params} {param_x} {Param}"),  # only the exact words
    ],
)
def test_python_spelling(template: str, expected: str) -> None:
    assert python_spelling(template, "user") == expected


def test_python_spelling_without_a_parameter_leaves_the_text() -> None:
    assert python_spelling("{param} stays", None) == "{param} stays"


# --- one error ---------------------------------------------------------------------------


def test_str_is_the_python_spelling_and_render_the_callers() -> None:
    err = UsageError("{param} 'x' is not a 12-digit account", hint="{off} would help", param="user")
    assert str(err) == "user= 'x' is not a 12-digit account"
    assert err.hint == "user=False would help"
    assert (err.param, err.template, err.hint_template) == (
        "user",
        "{param} 'x' is not a 12-digit account",
        "{off} would help",
    )
    assert err.render(flags) == "--user 'x' is not a 12-digit account"
    assert err.render_hint(flags) == "--no-user would help"
    assert err.problems == ()


def test_switch_and_off_are_spelled_by_the_off_flag() -> None:
    seen: list[tuple[str, bool]] = []

    def spell(param: str, off: bool) -> str:
        seen.append((param, off))
        return f"<{param}:{'off' if off else 'on'}>"

    err = AmibundleError("{switch} / {off} / {param}", param="size_checks")
    assert err.render(spell) == "<size_checks:on> / <size_checks:off> / <size_checks:on>"
    assert set(seen) == {("size_checks", False), ("size_checks", True)}


def test_an_error_without_parameter_renders_its_text() -> None:
    err = IntegrityError("part 3 is damaged", hint="download it again")
    assert err.render(flags) == str(err) == "part 3 is damaged"
    assert err.render_hint(flags) == err.hint == "download it again"
    assert UsageError("plain").render_hint(flags) is None


def test_a_hint_without_parameter_renders_as_written() -> None:
    err = UsageError("{param} is bad", hint="see the manual", param="bucket")
    assert err.render_hint(flags) == "see the manual"


@given(
    pieces=st.lists(
        st.one_of(
            st.sampled_from(["{param}", "{switch}", "{off}"]),
            st.text(st.characters(blacklist_characters="{}\n\r"), max_size=8),
        ),
        max_size=8,
    ),
    param=st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True),
)
def test_every_placeholder_is_spelled(pieces: list[str], param: str) -> None:
    template = "".join(pieces)
    err = UsageError(template, hint=template, param=param)
    for text in (str(err), err.hint or "", err.render(flags), err.render_hint(flags) or ""):
        assert "{param}" not in text and "{switch}" not in text and "{off}" not in text
    expected_python = "".join(
        {"{param}": f"{param}=", "{switch}": f"{param}=True", "{off}": f"{param}=False"}.get(p, p)
        for p in pieces
    )
    assert str(err) == expected_python
    expected_cli = "".join(
        {"{param}": flags(param, False), "{switch}": flags(param, False)}.get(p, p)
        if p != "{off}"
        else flags(param, True)
        for p in pieces
    )
    assert err.render(flags) == expected_cli


# --- combine ------------------------------------------------------------------------------


def test_combine_reports_every_error() -> None:
    first = UsageError("{param} '12' is not 12 digits", hint="{param} takes digits", param="user")
    second = UsageError("{param} item 'x' is not virtual=device", param="block_device_mapping")
    third = UsageError("the image is empty")
    fourth = UsageError("too big", hint="{off} lifts it", param="size_checks")
    combined = UsageError.combine([first, second, third, fourth])
    assert type(combined) is UsageError
    assert combined.problems == (first, second, third, fourth)
    assert str(combined) == (
        "user= '12' is not 12 digits; block_device_mapping= item 'x' is not virtual=device; "
        "the image is empty; too big"
    )
    assert combined.render(flags) == (
        "--user '12' is not 12 digits; --block-device-mapping item 'x' is not "
        "virtual=device; the image is empty; too big"
    )
    assert combined.hint == "user= takes digits; size_checks=False lifts it"
    assert combined.render_hint(flags) == "--user takes digits; --no-size-checks lifts it"


def test_combine_of_one_is_that_error() -> None:
    only = UsageError("{param} bad", param="prefix")
    assert UsageError.combine([only]) is only


def test_combine_without_hints_has_none() -> None:
    combined = UsageError.combine([UsageError("a"), UsageError("b")])
    assert (combined.hint, combined.render_hint(flags)) == (None, None)


def test_combine_with_the_cli_spelling_of_a_real_command() -> None:
    combined = UsageError.combine(
        [
            UsageError("{param} 'x' bad", param="user"),
            UsageError("{param} 'y' bad", param="product_codes"),
            UsageError("{param} 'z' bad", param="kernel_id"),
        ]
    )
    assert cli_text(combined) == "--user 'x' bad; --productcodes 'y' bad; --kernel 'z' bad"
    assert cli_hint(combined) is None


# --- the tree --------------------------------------------------------------------------------


def error_classes() -> list[type[AmibundleError]]:
    """The classes errors.__all__ exports (its other names are helpers:
    functions and the Spelling type)."""
    classes = [getattr(errors, name) for name in errors.__all__]
    return [value for value in classes if inspect.isclass(value)]


def test_every_exported_class_is_an_amibundle_error_and_the_rest_are_helpers() -> None:
    for name in errors.__all__:
        value = getattr(errors, name)
        if inspect.isclass(value):
            assert issubclass(value, AmibundleError), name
        else:  # a helper: never something one could raise or catch
            assert callable(value) and not isinstance(value, type), name
    assert len(error_classes()) >= 20  # the tree in the module's docstring


@pytest.mark.parametrize("kind", error_classes(), ids=lambda c: c.__name__)
def test_every_error_is_an_amibundle_error_with_a_one_line_str(kind: type[AmibundleError]) -> None:
    assert issubclass(kind, AmibundleError) and issubclass(kind, Exception)
    if kind is OutputExistsError:
        err: AmibundleError = OutputExistsError(Path("/out/disk.img"))
    elif kind is ToolNotFound:
        err = ToolNotFound("mke2fs", "e2fsprogs")
    elif kind is ToolError:
        err = ToolError(["mkfs.ext4", "-F", "x"], 1, "line one\nline two\n")
    else:
        err = kind("something is wrong")
    text = str(err)
    assert text and "\n" not in text and "\r" not in text
    assert "\n" not in err.render(flags)


def test_s3_errors_are_s3_errors() -> None:
    for name in ("LocationMismatchError", "AclsDisabledError", "S3CredentialsError",
                 "NoSuchBucketError"):  # fmt: skip
        assert issubclass(getattr(errors, name), S3Error)


def test_output_exists_names_the_path_and_force() -> None:
    err = OutputExistsError("/out/disk.img.manifest.xml", what="manifest")
    assert (
        str(err)
        == "manifest /out/disk.img.manifest.xml already exists; use force=True to replace it"
    )
    assert err.path == Path("/out/disk.img.manifest.xml")
    assert err.param == "force"
    assert err.render(flags) == (
        "manifest /out/disk.img.manifest.xml already exists; use --force to replace it"
    )
    plain = OutputExistsError(Path("/out/x"))
    assert str(plain) == "/out/x already exists; use force=True to replace it"


def test_tool_not_found_says_what_to_install() -> None:
    err = ToolNotFound("debugfs", "e2fsprogs")
    assert str(err) == "debugfs not found; install e2fsprogs"
    assert err.hint == "e.g. apt-get install e2fsprogs"
    assert (err.tool, err.package) == ("debugfs", "e2fsprogs")


@pytest.mark.parametrize(
    ("returncode", "stderr", "expected"),
    [
        (1, "", "mkfs.ext4 failed (exit 1)"),
        (2, "warning\n\n  the real problem  \n\n", "mkfs.ext4 failed (exit 2): the real problem"),
        (-signal.SIGKILL, "", "mkfs.ext4 failed (killed by SIGKILL)"),
        (-200, "x", "mkfs.ext4 failed (killed by signal 200): x"),
    ],
)
def test_tool_error_is_one_line(returncode: int, stderr: str, expected: str) -> None:
    err = ToolError(["/sbin/mkfs.ext4", "-q", "img"], returncode, stderr)
    assert str(err) == expected
    assert err.argv == ("/sbin/mkfs.ext4", "-q", "img")
    assert (err.returncode, err.stderr_tail) == (returncode, stderr)


def test_tool_error_of_no_argv() -> None:
    assert str(ToolError([], 3, "")) == "? failed (exit 3)"


def test_shorten_keeps_messages_short() -> None:
    from amibundle.errors import shorten

    assert shorten("short") == "short"
    assert shorten("x" * 200) == "x" * 200
    long = "y" * 1_000_000  # a name an attacker chose
    assert shorten(long) == "y" * 200 + "... (1000000 characters)"
    assert shorten("abcdef", limit=3) == "abc... (6 characters)"
