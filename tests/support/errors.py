"""Reading errors as each kind of caller sees them."""

from __future__ import annotations

import pytest

from amibundle.cli import command_module
from amibundle.cli._options import Style
from amibundle.errors import AmibundleError

__all__ = ["cli_hint", "cli_text", "one_line"]


def cli_text(
    error: AmibundleError | pytest.ExceptionInfo[AmibundleError],
    command: str = "bundle_image",
    style: Style = Style.MODERN,
) -> str:
    """The message as the command line prints it: parameters spelled as the
    flags of ``command`` (a module name in ``amibundle.cli``)."""
    err = error.value if isinstance(error, pytest.ExceptionInfo) else error
    parser = command_module(command).build_parser(style, "test")
    return err.render(parser.flag_for)


def cli_hint(
    error: AmibundleError | pytest.ExceptionInfo[AmibundleError],
    command: str = "bundle_image",
    style: Style = Style.MODERN,
) -> str | None:
    err = error.value if isinstance(error, pytest.ExceptionInfo) else error
    parser = command_module(command).build_parser(style, "test")
    return err.render_hint(parser.flag_for)


def one_line(error: BaseException | pytest.ExceptionInfo[BaseException]) -> str:
    """``str()`` of an error, checked to be one line."""
    err = error.value if isinstance(error, pytest.ExceptionInfo) else error
    text = str(err)
    assert "\n" not in text
    return text
