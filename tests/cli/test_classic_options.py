"""Every classic option of every classic command, against the spec's own tables
(classic-cli.md §1.3 and §2.2-§9.2, read by tests.support.classic_spec).

Ruby's OptionParser took any unique prefix of a long option; scripts written for the
classic tools use them (``--k`` for ``--kernel``, ``--part`` for ``--partition``). Our
added options must not make any of them ambiguous or change what they mean.
"""

from __future__ import annotations

import argparse
import re

import pytest

from amibundle.cli import CLASSIC_TOOLS, classic_main, command_module
from amibundle.cli._options import OptionParser, Style, parse_args
from tests.support.classic_spec import CLASSIC_SPEC, TOOL_SECTIONS, classic_options

pytestmark = pytest.mark.skipif(
    not CLASSIC_SPEC.is_file(), reason=f"../shared is absent: no {CLASSIC_SPEC}"
)
TOOLS = sorted(TOOL_SECTIONS)


def parser_of(tool: str) -> OptionParser:
    parser: OptionParser = command_module(CLASSIC_TOOLS[tool]).build_parser(Style.CLASSIC, tool)
    return parser


def classic_prefixes(longs: tuple[str, ...]) -> list[tuple[str, str]]:
    """(prefix, the long option it names) for every abbreviation the classic tool took:
    the option itself and every shorter prefix (from ``--x``) that names only it."""
    found = []
    for long in longs:
        for end in range(3, len(long) + 1):
            prefix = long[:end]
            if prefix == long or [flag for flag in longs if flag.startswith(prefix)] == [long]:
                found.append((prefix, long))
    return found


def test_every_classic_tool_is_here() -> None:
    assert set(TOOL_SECTIONS) <= set(CLASSIC_TOOLS)


@pytest.mark.parametrize("tool", TOOLS)
def test_every_classic_option_and_letter_is_declared(tool: str) -> None:
    spec = classic_options(tool)
    parser = parser_of(tool)
    declared = {flag for flag in parser._option_string_actions if flag.startswith("--")}
    assert set(spec.longs) <= declared, set(spec.longs) - declared
    # The module's own list (what it protects) is exactly the spec's.
    assert set(command_module(CLASSIC_TOOLS[tool]).CLASSIC_LONGS) == set(spec.longs)
    for short, long in spec.shorts.items():
        assert parser._option_string_actions[short] is parser._option_string_actions[long], short
    help_text = parser.format_help()
    for long in spec.longs:
        assert re.search(rf"{long}\b", help_text), long


@pytest.mark.parametrize("tool", TOOLS)
def test_every_classic_abbreviation_names_its_option(tool: str) -> None:
    longs = classic_options(tool).longs
    parser = parser_of(tool)
    cases = classic_prefixes(longs)
    assert len(cases) > len(longs)
    wrong = []
    for prefix, long in cases:
        try:
            action, flag = parser._resolve_long(prefix)
        except Exception as error:  # ambiguous or unknown: reported below
            wrong.append(f"{prefix}: {error}")
            continue
        if action is not parser._option_string_actions[long] or flag != long:
            wrong.append(f"{prefix} -> {flag}, not {long}")
    assert wrong == []


@pytest.mark.parametrize(
    ("tool", "argv", "dest", "value"),
    [
        ("ec2-bundle-image", ["--k", "aki-1"], "kernel", "aki-1"),
        ("ec2-bundle-image", ["--c", "{file}"], "cert", "{file}"),
        ("ec2-bundle-image", ["--ima={file}"], "image", "{file}"),
        ("ec2-bundle-image", ["--r", "ari-1"], "ramdisk", "ari-1"),
        ("ec2-bundle-image", ["--ker", "aki-2"], "kernel", "aki-2"),
        ("ec2-bundle-vol", ["--part", "g"], "partition", "gpt"),
        ("ec2-bundle-vol", ["--fs", "{file}"], "fstab", "{file}"),
        ("ec2-bundle-vol", ["--ce", "{file}"], "cert", "{file}"),
        ("ec2-bundle-vol", ["--r", "ari-3"], "ramdisk", "ari-3"),
        ("ec2-bundle-vol", ["--k", "aki-3"], "kernel", "aki-3"),
    ],
)
def test_the_abbreviations_our_options_had_broken(
    tool: str, argv: list[str], dest: str, value: str, tmp_path: object
) -> None:
    from pathlib import Path

    file = Path(str(tmp_path)) / "f.pem"
    file.write_text("x")
    parser = parser_of(tool)
    namespace, _ = parser.parse_known_args([word.format(file=file) for word in argv])
    got = getattr(namespace, dest)
    assert str(got) == value.format(file=file)


def test_modern_verbs_keep_argparse_ambiguity() -> None:
    parser = command_module("bundle_image").build_parser(Style.MODERN, "amibundle bundle-image")
    with pytest.raises(Exception, match="ambiguous option --k"):
        parse_args(parser, ["--k", "aki-1"])


def test_ec2_ami_tools_version_ignores_everything(capsys: pytest.CaptureFixture[str]) -> None:
    import amibundle.cli as cli

    with pytest.raises(SystemExit) as done:
        import sys

        old = sys.argv
        sys.argv = ["ec2-ami-tools-version", "--help", "--bogus"]
        try:
            cli.ec2_ami_tools_version()
        finally:
            sys.argv = old
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("1.5.3 20071010")


@pytest.mark.parametrize("tool", TOOLS)
def test_help_runs_for_every_classic_tool(tool: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert classic_main(tool, ["--help"]) == 0
    assert capsys.readouterr().out.startswith(f"usage: {tool}")
    assert isinstance(parser_of(tool), argparse.ArgumentParser)
