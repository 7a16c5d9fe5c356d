"""Ruby-OptionParser rules of classic-cli.md §1.2-§1.3, as implemented by amibundle.cli._options.

Most cases are rows of one table: an argv (with ``{cert}``-style placeholders for
files made in ``tmp_path``) and either the parsed values expected or a piece of
the one-line error expected.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amibundle.cli._options import (
    EarlyExit,
    OptionParser,
    Style,
    add_check,
    add_common_options,
    exclusive,
    mandatory,
    parse_args,
)
from amibundle.cli._values import choice_prefix, comma_list, existing_dir, existing_file, integer
from amibundle.errors import UsageError

MANUAL = "ec2-test manual: bundles things."
VERSION = "ec2-test 1.5.3 20071010"


def build_parser(style: Style = Style.CLASSIC) -> OptionParser:
    """A parser shaped like the classic tools: names chosen to collide the way theirs do."""
    parser = OptionParser("ec2-test", style=style, manual=MANUAL, version=VERSION)
    add_common_options(parser, style)
    mandatory(parser, "-c", "--cert", metavar="PATH", type=existing_file, help="certificate")
    mandatory(parser, "-m", "--manifest", metavar="PATH", type=existing_file, help="manifest")
    parser.add_argument("-b", "--bucket", metavar="BUCKET", help="bucket")
    parser.add_argument(
        "-d",
        "--destination",
        metavar="DIR",
        type=existing_dir,
        default=".",
        help="where output goes",
    )
    parser.add_argument(
        "-P", "--partition", type=choice_prefix(["mbr", "gpt", "none"]), help="partition type"
    )
    parser.add_argument("--part", type=integer, help="resume from this part")
    parser.add_argument(
        "-B", "--block-device-mapping", action="append", dest="bdm", help="virtual=device pairs"
    )
    parser.add_argument("-e", "--exclude", type=comma_list, help="paths")
    parser.add_argument("--region", help="region")
    parser.add_argument("--retry", action="store_true", help="retry")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask")
    parser.add_argument("--fstab", type=existing_file, help="fstab to install")
    parser.add_argument("--generate-fstab", action="store_true", help="built-in fstab")
    exclusive(parser, "--fstab", "--generate-fstab")
    return parser


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    cert = tmp_path / "cert.pem"
    cert.write_text("cert")
    manifest = tmp_path / "image.manifest.xml"
    manifest.write_text("<manifest/>")
    (tmp_path / "out").mkdir()
    return {
        "cert": str(cert),
        "manifest": str(manifest),
        "dir": str(tmp_path / "out"),
        "missing": str(tmp_path / "missing.pem"),
    }


def expand(argv: list[str], files: dict[str, str]) -> list[str]:
    return [word.format(**files) for word in argv]


BASE = ["-c", "{cert}", "-m", "{manifest}"]

# argv, expected attributes (values may hold placeholders; Paths are compared as str)
PARSES: list[Any] = [
    pytest.param(BASE, {"bucket": None, "destination": ".", "batch": False}, id="minimal"),
    pytest.param([*BASE, "--buck", "b1"], {"bucket": "b1"}, id="unique-prefix"),
    pytest.param([*BASE, "--bucket=b1"], {"bucket": "b1"}, id="long-equals"),
    pytest.param([*BASE, "--buc=b1"], {"bucket": "b1"}, id="prefix-equals"),
    pytest.param(
        ["-c{cert}", "-m{manifest}"], {"cert": "{cert}", "manifest": "{manifest}"}, id="glued-short"
    ),
    pytest.param(
        ["--cert={cert}", "--manif={manifest}"],
        {"manifest": "{manifest}"},
        id="prefix-with-equals-value",
    ),
    pytest.param([*BASE, "-b", "one", "--bucket", "two"], {"bucket": "two"}, id="repeat-last-wins"),
    pytest.param(
        [*BASE, "-Ba=b", "--block", "c=d", "-B", "e=f"],
        {"bdm": ["a=b", "c=d", "e=f"]},
        id="append-accumulates",
    ),
    pytest.param([*BASE, "--part", "-5"], {"part": -5}, id="value-may-start-with-dash"),
    pytest.param(
        [*BASE, "-b", "--retry"],
        {"bucket": "--retry", "retry": False},
        id="next-word-is-value-whatever-it-looks-like",
    ),
    pytest.param([*BASE, "--part=0x1_0"], {"part": 16}, id="ruby-integer"),
    pytest.param([*BASE, "-P", "g"], {"partition": "gpt"}, id="choice-prefix"),
    pytest.param([*BASE, "-Pnone"], {"partition": "none"}, id="choice-glued"),
    pytest.param([*BASE, "-yq"], {"yes": True, "quiet": True}, id="clustered-flags"),
    pytest.param([*BASE, "-yb", "x"], {"yes": True, "bucket": "x"}, id="cluster-then-value"),
    pytest.param([*BASE, "-ybx"], {"yes": True, "bucket": "x"}, id="cluster-glued-value"),
    pytest.param(
        [*BASE, "--ret", "--deb", "--bat"],
        {"retry": True, "debug": True, "batch": True},
        id="prefixes-of-flags",
    ),
    pytest.param([*BASE, "-e", "/a,/b"], {"exclude": ["/a", "/b"]}, id="comma-list"),
    pytest.param([*BASE, "-d", "{dir}"], {"destination": "{dir}"}, id="existing-dir"),
    pytest.param([*BASE, "--fstab", "{cert}"], {"fstab": "{cert}"}, id="one-of-exclusive"),
    pytest.param(["-m", "{manifest}", *BASE[:2], "-b", "-"], {"bucket": "-"}, id="dash-as-value"),
]


@pytest.mark.parametrize(("argv", "expected"), PARSES)
def test_parses(argv: list[str], expected: dict[str, Any], files: dict[str, str]) -> None:
    namespace = parse_args(build_parser(), expand(argv, files))
    for name, value in expected.items():
        got = getattr(namespace, name)
        want = value.format(**files) if isinstance(value, str) else value
        assert (str(got) if isinstance(got, Path) else got) == want, name


# argv, regular expression the single-line message must match
REJECTS: list[Any] = [
    pytest.param(
        [*BASE, "--man", "x"],
        r"ambiguous option --man: could be --manifest or --manual",
        id="ambiguous-prefix",
    ),
    pytest.param(
        [*BASE, "--re", "x"],
        r"ambiguous option --re: could be --region or --retry",
        id="ambiguous-region-retry",
    ),
    pytest.param([*BASE, "--nope"], r"unknown option: --nope", id="unknown-long"),
    pytest.param([*BASE, "-x"], r"unknown option: -x", id="unknown-short"),
    pytest.param([*BASE, "-yx"], r"unknown option: -x", id="unknown-in-cluster"),
    pytest.param([*BASE, "--batch=yes"], r"--batch takes no value", id="flag-with-value"),
    pytest.param([*BASE, "--bucket"], r"--bucket needs a value", id="missing-value-long"),
    pytest.param([*BASE, "-b"], r"-b needs a value", id="missing-value-short"),
    pytest.param(["-m", "{manifest}"], r"^missing mandatory option --cert$", id="missing-cert"),
    pytest.param(["-c", "{cert}"], r"^missing mandatory option --manifest$", id="missing-manifest"),
    pytest.param([], r"^missing mandatory option --cert$", id="first-declared-reported-first"),
    pytest.param(
        ["-c", "{missing}", "-m", "{manifest}"],
        r"invalid value for --cert: '.*missing\.pem': no such file",
        id="missing-file",
    ),
    pytest.param(
        ["-c", "{dir}", "-m", "{manifest}"], r"--cert: .*not a regular file", id="dir-is-not-file"
    ),
    pytest.param([*BASE, "-d", "{cert}"], r"--destination: .*not a directory", id="file-not-dir"),
    pytest.param([*BASE, "--part", "abc"], r"--part: 'abc': not an integer", id="bad-integer"),
    pytest.param(
        [*BASE, "-P", "x"], r"--partition: 'x': expected one of mbr, gpt, none", id="bad-choice"
    ),
    pytest.param([*BASE, "-P", "G"], r"--partition: 'G'", id="choice-case-sensitive"),
    pytest.param([*BASE, "-e", "a,,b"], r"--exclude: 'a,,b': empty item", id="blank-list-item"),
    pytest.param(
        [*BASE, "--fstab", "{cert}", "--gen"],
        r"^--fstab cannot be combined with --generate-fstab$",
        id="exclusive-pair",
    ),
    pytest.param(
        [*BASE, "--generate-fstab", "--fstab={cert}"],
        r"^--fstab cannot be combined with --generate-fstab$",
        id="exclusive-any-order",
    ),
]


@pytest.mark.parametrize(("argv", "pattern"), REJECTS)
def test_rejects(argv: list[str], pattern: str, files: dict[str, str]) -> None:
    with pytest.raises(UsageError) as caught:
        parse_args(build_parser(), expand(argv, files))
    message = str(caught.value)
    assert "\n" not in message
    assert re.search(pattern, message), message


@pytest.mark.parametrize("style", list(Style), ids=lambda s: s.value)
def test_ambiguity_and_unknown_are_errors_in_both_styles(
    style: Style, files: dict[str, str]
) -> None:
    for argv in ([*BASE, "--man"], [*BASE, "--what"]):
        with pytest.raises(UsageError):
            parse_args(build_parser(style), expand(argv, files))


# -- stray words --------------------------------------------------------------------


def test_classic_ignores_stray_words_with_a_warning(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = expand(["foo", *BASE, "bar", "--", "-b", "baz"], files)
    namespace = parse_args(build_parser(Style.CLASSIC), argv)
    assert namespace.bucket is None  # after "--" nothing is an option
    err = capsys.readouterr().err.splitlines()
    assert [line.split("warning: ")[1] for line in err] == [
        "ignoring stray argument 'foo'",
        "ignoring stray argument 'bar'",
        "ignoring stray argument '-b'",
        "ignoring stray argument 'baz'",
    ]


def test_modern_refuses_stray_words(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(UsageError, match="unexpected argument 'foo'"):
        parse_args(build_parser(Style.MODERN), expand([*BASE, "foo"], files))
    assert capsys.readouterr().err == ""


def test_modern_positionals_are_arguments_not_strays(files: dict[str, str]) -> None:
    parser = OptionParser("amibundle inspect", style=Style.MODERN)
    add_common_options(parser)
    parser.add_argument("manifest", type=existing_file)
    parser.add_argument("--json", action="store_true")
    namespace = parse_args(parser, [files["manifest"], "--js"])
    assert (str(namespace.manifest), namespace.json) == (files["manifest"], True)
    with pytest.raises(UsageError, match="missing required argument: manifest"):
        parse_args(parser, ["--json"])
    # --help is a post-parse exemption for positionals too
    with pytest.raises(EarlyExit):
        parse_args(parser, ["--help"])


# -- --help / --version / --manual ------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        pytest.param(["--help"], "help", id="help"),
        pytest.param(["-h"], "help", id="h"),
        pytest.param(["--he"], "help", id="help-prefix"),
        pytest.param(["--version"], "version", id="version"),
        pytest.param(["--manual"], "manual", id="manual"),
        pytest.param(["--manual", "--help"], "help", id="help-beats-manual"),
        pytest.param(["--help", "--manual"], "help", id="help-beats-manual-any-order"),
        pytest.param(["--help", "--version"], "version", id="version-beats-help"),
        pytest.param(["--manual", "--version", "-h"], "version", id="version-beats-all"),
    ],
)
def test_early_exit_precedence_and_skips_mandatory(argv: list[str], kind: str) -> None:
    # no -c/-m given: the mandatory check must not run
    with pytest.raises(EarlyExit) as caught:
        parse_args(build_parser(), argv)
    assert caught.value.kind == kind
    text = caught.value.text
    if kind == "version":
        assert text == VERSION
    elif kind == "manual":
        assert text == MANUAL
    else:
        assert text.startswith("usage: ec2-test")


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["-c", "{missing}", "--help"], id="before"),
        pytest.param(["--help", "-c", "{missing}"], id="after"),
        pytest.param(["--version", "--part", "nan"], id="integer"),
        pytest.param(["--help", "--bogus"], id="unknown-option"),
    ],
)
def test_early_exit_still_runs_while_parsing_checks(argv: list[str], files: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        parse_args(build_parser(), expand(argv, files))


def test_early_exit_skips_exclusive_and_custom_checks(files: dict[str, str]) -> None:
    parser = build_parser()
    calls: list[argparse.Namespace] = []
    add_check(parser, calls.append)
    with pytest.raises(EarlyExit):
        parse_args(parser, expand(["--fstab", "{cert}", "--generate-fstab", "--help"], files))
    assert calls == []
    parse_args(parser, expand(BASE, files))
    assert len(calls) == 1


def test_help_shows_both_groups_with_common_options_first() -> None:
    text = build_parser().format_help()
    lines = text.splitlines()
    assert lines[0] == "usage: ec2-test -c PATH -m PATH [options]"
    assert lines.index("mandatory:") < lines.index("optional:")
    mandatory_part = text.split("mandatory:")[1].split("optional:")[0]
    optional_part = text.split("optional:")[1]
    assert "--cert PATH" in mandatory_part and "--manifest PATH" in mandatory_part
    assert "--cert" not in optional_part and "--bucket" in optional_part
    flags = re.findall(r"^  (?:-\w, )?(--[\w-]+)", optional_part, re.MULTILINE)
    assert flags[:6] == ["--help", "--version", "--manual", "--batch", "--debug", "--quiet"]
    assert "where output goes (default: .)" in text


def test_modern_common_options_keep_declaration_order() -> None:
    parser = OptionParser("amibundle x", style=Style.MODERN)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_common_options(parser)
    flags = re.findall(r"^  (?:-\w, )?(--[\w-]+)", parser.format_help(), re.MULTILINE)
    assert flags[0] == "--json" and "--help" in flags


# -- mandatory / exclusive declarations -------------------------------------------------


def clone_parser() -> OptionParser:
    parser = OptionParser("ec2-bundle-vol", style=Style.CLASSIC)
    add_common_options(parser)
    mandatory(parser, "-u", "--user", unless="clone_only", help="account")
    parser.add_argument("--clone-only", action="store_true", help="do not bundle")
    return parser


def test_mandatory_can_be_waived_by_another_option() -> None:
    assert parse_args(clone_parser(), ["--clone"]).user is None
    with pytest.raises(UsageError, match=r"^missing mandatory option --user$"):
        parse_args(clone_parser(), [])


def test_exclusive_required_needs_exactly_one(files: dict[str, str]) -> None:
    parser = OptionParser("ec2-delete-bundle", style=Style.CLASSIC)
    parser.add_argument("-m", "--manifest", type=existing_file)
    parser.add_argument("-p", "--prefix")
    exclusive(parser, "--manifest", "--prefix", required=True)
    assert parse_args(parser, ["-p", "img"]).prefix == "img"
    with pytest.raises(UsageError, match="one of --manifest or --prefix"):
        parse_args(parser, [])
    with pytest.raises(UsageError, match="--manifest cannot be combined with --prefix"):
        parse_args(parser, ["-m", files["manifest"], "-p", "img"])


@pytest.mark.parametrize(
    "declare",
    [
        pytest.param(lambda p: p.add_argument("-x"), id="short-only"),
        pytest.param(lambda p: p.add_argument("--xs", nargs="+"), id="nargs-plus"),
        pytest.param(lambda p: mandatory(p, "--xs", required=True), id="argparse-required"),
        pytest.param(lambda p: exclusive(p, "--nope", "--other"), id="exclusive-unknown"),
    ],
)
def test_bad_declarations_fail_loudly(declare: Callable[[OptionParser], object]) -> None:
    parser = OptionParser("t", style=Style.CLASSIC)
    with pytest.raises(TypeError):
        declare(parser)
        parse_args(parser, [])


def test_parser_error_raises_instead_of_exiting() -> None:
    with pytest.raises(UsageError, match=r"^boom$"):
        OptionParser("t").error("boom")


# -- converters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("g", "gpt"), ("gpt", "gpt"), ("m", "mbr"), ("n", "none"), ("no", "none")],
)
def test_choice_prefix_accepts_unique_prefixes(value: str, expected: str) -> None:
    assert choice_prefix(["mbr", "gpt", "none"])(value) == expected


def test_choice_prefix_exact_match_beats_longer_choice() -> None:
    convert = choice_prefix(["a", "ab"])
    assert convert("a") == "a"
    assert convert("ab") == "ab"
    with pytest.raises(argparse.ArgumentTypeError, match="'x': expected one of a, ab"):
        convert("x")


@pytest.mark.parametrize("value", ["", "g", "G", "gx", "gpts"])
def test_choice_prefix_rejects(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        choice_prefix(["gpt", "gzip", "mbr"])(value)
    assert ("ambiguous" in str(caught.value)) == (value == "g")


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ("0", 0),
        ("-5", -5),
        ("+7", 7),
        ("42", 42),
        ("1_000", 1000),
        ("0x10", 16),
        ("0X1f", 31),
        ("-0x1_0", -16),
        ("0b101", 5),
        ("0o17", 15),
        ("017", 15),
        ("0d19", 19),
        ("00", 0),
    ],
)
def test_integer_accepts_ruby_literals(literal: str, value: int) -> None:
    assert integer(literal) == value


@pytest.mark.parametrize(
    "literal",
    [
        "",
        "abc",
        "1e3",
        "1.0",
        "08",
        "09",
        "0x",
        "0b2",
        "0o8",
        "1__0",
        "_1",
        "1_",
        "- 5",
        " 5",
        "5 ",
        "--5",
        "0x-1",
        "0_7",
        "١٢",
    ],
)
def test_integer_rejects(literal: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not an integer"):
        integer(literal)


@settings(max_examples=200)
@given(
    number=st.integers(min_value=-(10**30), max_value=10**30),
    base=st.sampled_from([("0x", "x"), ("0b", "b"), ("0o", "o"), ("", "d")]),
    group=st.integers(min_value=1, max_value=4),
)
def test_integer_round_trips_formatted_numbers(
    number: int, base: tuple[str, str], group: int
) -> None:
    prefix, spec = base
    digits = format(abs(number), spec)
    # underscores every `group` digits from the right, as a user might write them
    chunks = [digits[max(i - group, 0) : i] for i in range(len(digits), 0, -group)][::-1]
    literal = ("-" if number < 0 else "") + prefix + "_".join(chunks)
    assert integer(literal) == number
    if not (prefix == "" and digits.startswith("0") and len(digits) > 1):
        assert integer(literal) == int(literal, 0)  # Python agrees where the rules coincide


@pytest.mark.parametrize(
    ("value", "expected"),
    [("a", ["a"]), ("a,b", ["a", "b"]), ("/x y,/z", ["/x y", "/z"])],
)
def test_comma_list(value: str, expected: list[str]) -> None:
    assert comma_list(value) == expected


@pytest.mark.parametrize("value", ["", ",", "a,", ",a", "a,,b", "a, ,b"])
def test_comma_list_rejects_blank_items(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        comma_list(value)


def test_path_converters(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    link = tmp_path / "link"
    link.symlink_to(target)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")
    assert existing_file(str(link)) == link  # symlinks are followed
    assert existing_dir(str(tmp_path)) == tmp_path
    for bad in (str(dangling), "", str(tmp_path)):
        with pytest.raises(argparse.ArgumentTypeError):
            existing_file(bad)
    for bad in (str(target), "", str(tmp_path / "gone")):
        with pytest.raises(argparse.ArgumentTypeError):
            existing_dir(bad)
