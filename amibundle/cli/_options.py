"""Option parsing shared by the modern ``amibundle <verb>`` and the classic ``ec2-*`` commands.

The classic Ruby tools parse with Ruby's OptionParser, and scripts depend on its
rules (``classic-cli.md`` §1.2): unique-prefix abbreviation of long options,
``--opt=value`` and glued short values (``-mfile``), an option's value is the
next word even when it starts with ``-``, repeats where the last one wins, and
stray words that are ignored. :class:`OptionParser` keeps argparse for actions,
conversions and help, but resolves every option itself first and hands argparse
only canonical ``--long=value`` tokens, so none of argparse's own guessing
(abbreviations, "expected one argument" for ``--part -5``) applies.

Validation runs in two phases, as in the classic tools. ``type=`` converters run
*while parsing*, always. Mandatory options, exclusive pairs and other checks run
*after parsing* in :func:`parse_args`, and are skipped when ``--help``,
``--version`` or ``--manual`` was given; in that case :class:`EarlyExit` carries
the text to print (``--version`` wins over ``--help``, which wins over
``--manual``). Nothing here prints except the stray-word warning, and nothing
exits: :meth:`OptionParser.error` raises :class:`~amibundle.errors.UsageError`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

from amibundle import __version__
from amibundle.cli._help import MANDATORY_ATTR, HelpFormatter, compact_usage
from amibundle.cli._values import existing_dir, folder_to_make, or_list
from amibundle.errors import UsageError

__all__ = [
    "CLASSIC_COMMON_LONGS",
    "EarlyExit",
    "OptionParser",
    "Style",
    "add_check",
    "add_common_options",
    "exclusive",
    "mandatory",
    "parse_args",
]


class Style(Enum):
    """Which command family a parser serves; decides strays and exit codes."""

    MODERN = "modern"
    CLASSIC = "classic"


class EarlyExit(Exception):
    """``--help``, ``--version`` or ``--manual`` was given: print ``text`` to stdout, exit 0."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(kind)
        self.kind = kind
        self.text = text


# Attributes we hang on argparse.Action objects. Marking the action itself (not
# a parser-side list) lets mandatory() work on a parser or any argument group.

_EARLY_ATTR = "_amibundle_early"
_COMMON_ATTR = "_amibundle_common"
# Namespace attribute through which the parser reports the options it saw.
_SEEN_ATTR = "_amibundle_seen"
_EARLY_PRECEDENCE = ("version", "help", "manual")
# The common options every classic tool has (classic-cli.md §1.3); part of each
# tool's classic set.
CLASSIC_COMMON_LONGS = ("--help", "--version", "--manual", "--batch", "--debug")
# The library's parameter names that the options spell differently.
PARAM_DESTS: dict[str, str] = {
    "private_key": "privatekey",
    "ec2_cert": "ec2cert",
    "kernel_id": "kernel",
    "ramdisk_id": "ramdisk",
    "product_codes": "productcodes",
    "size_checks": "no_size_checks",
    "bootloader": "no_bootloader",
    "use_filter": "no_filter",
    "level": "compress_level",
    "size_mib": "size",
    "image_type": "image_type",
    "first_part": "part",
    "skip_manifest": "skipmanifest",
}
# argparse reports missing positionals through error(); these are post-parse
# checks in the classic sense and must not hide --help.
_REQUIRED_MESSAGES = ("the following arguments are required", "one of the arguments")
_MISSING_ARGUMENT = "missing required argument"


@dataclass(frozen=True)
class _Mandatory:
    """A mandatory option, waived when any option named in ``unless`` was given."""

    unless: tuple[str, ...]


@dataclass(frozen=True)
class _Exclusive:
    """Options of which at most one (exactly one when ``required``) may be given."""

    flags: tuple[str, ...]
    required: bool


class OptionParser(argparse.ArgumentParser):
    """argparse with the Ruby-OptionParser behaviour classic scripts rely on.

    Use :func:`parse_args` (not the ``parse_args`` method) so that the post-parse
    checks and ``--help``/``--version``/``--manual`` are handled. Every option
    must have a ``--long`` name (errors name options by it); short names are
    ``-X``. Options take no value, exactly one value, or (``nargs="?"``) an
    optional one given only as ``--opt=value`` or glued ``-Xvalue``.
    """

    def __init__(
        self,
        prog: str | None = None,
        *,
        style: Style = Style.MODERN,
        description: str | None = None,
        epilog: str | None = None,
        manual: str | None = None,
        version: str | None = None,
        usage: str | None = None,
    ) -> None:
        super().__init__(
            prog=prog,
            usage=usage,
            description=description,
            epilog=epilog,
            formatter_class=HelpFormatter,
            add_help=False,  # --help is a common option with deferred handling
            allow_abbrev=False,  # we resolve prefixes ourselves, Ruby-style
            exit_on_error=False,
        )
        self.style = style
        self.manual_text = manual
        self.version_text = version
        # Help shows "mandatory" before "optional"; argparse's own "options"
        # group becomes "optional", so plain add_argument() lands there.
        self._optionals.title = "optional"
        self._positionals.title = "arguments"
        self.mandatory_group = self.add_argument_group("mandatory")
        self._action_groups.remove(self.mandatory_group)
        self._action_groups.insert(self._action_groups.index(self._optionals), self.mandatory_group)
        self._exclusives: list[_Exclusive] = []
        # The classic tool's own long options, resolved first (see keep_classic_abbreviations).
        self._classic_longs: tuple[str, ...] = ()
        self._checks: list[Callable[[argparse.Namespace], None]] = []
        # Library parameter -> option destination, where their names differ
        # (``private_key`` -> ``privatekey``): errors name the parameter.
        self.param_dests: dict[str, str] = dict(PARAM_DESTS)
        # Destinations of output folders the command creates when missing.
        self.folders_to_make: list[str] = []

    def output_folder_type(self, dest: str) -> Callable[[str], Path]:
        """The ``type=`` of an output folder option: an existing directory for
        the classic tools (as they required), one that is created when missing
        for amibundle's own commands."""
        if self.style is Style.CLASSIC:
            return existing_dir
        self.folders_to_make.append(dest)
        return folder_to_make

    # -- errors ---------------------------------------------------------------

    def error(self, message: str) -> NoReturn:
        """Raise instead of exiting; the command's runner prints and maps it."""
        if message.startswith(_REQUIRED_MESSAGES[0]):
            message = _MISSING_ARGUMENT + message[len(_REQUIRED_MESSAGES[0]) :]
        raise UsageError(message)

    def flag_for(self, param: str, off: bool = False) -> str:
        """How this command spells the library parameter ``param`` (``off``:
        turned off): the long flag of the option whose destination is
        ``param`` (or is named for it in ``param_dests``), preferring a
        ``--no-`` flag for ``off``; else ``--param-name``."""
        dest = self.param_dests.get(param, param)
        flags = [
            _long_flag(action)
            for action in self._actions
            if action.option_strings and action.dest == dest
        ]
        if off:
            flags.sort(key=lambda flag: not flag.startswith("--no-"))
        return flags[0] if flags else "--" + param.replace("_", "-")

    # -- parsing --------------------------------------------------------------

    def parse_known_args(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse Ruby-style; stray words are warned about (classic) or refused (modern).

        Always returns an empty list of leftovers: strays are dealt with here.
        """
        self._check_declarations()
        argv = list(sys.argv[1:] if args is None else args)
        tokens, seen, strays = self._normalize(argv)
        early_seen = any(getattr(action, _EARLY_ATTR, None) for action in seen)
        try:
            result, extras = super().parse_known_args(tokens, namespace)
        except (argparse.ArgumentError, UsageError) as err:
            # Newer Pythons raise ArgumentError where older ones call error():
            # treat both alike.
            message = _argument_error_text(err) if isinstance(err, argparse.ArgumentError) else ""
            if early_seen and _is_missing_required(message or str(err)):
                raise _early_exit(self, seen) from None
            if isinstance(err, UsageError):
                raise
            self.error(message)
        self._handle_strays([*strays, *extras])
        setattr(result, _SEEN_ATTR, tuple(seen))
        return result, []

    def _normalize(self, argv: list[str]) -> tuple[list[str], list[argparse.Action], list[str]]:
        """Resolve every option Ruby-style into canonical tokens for argparse.

        Returns the tokens, the actions seen (in order) and the stray words.
        """
        tokens: list[str] = []
        seen: list[argparse.Action] = []
        strays: list[str] = []
        takes_words = bool(self._positionals._group_actions)
        index = 0
        while index < len(argv):
            word = argv[index]
            index += 1
            if word == "--":
                rest = argv[index:]
                if takes_words:
                    tokens += ["--", *rest]
                else:
                    strays += rest
                break
            if word.startswith("--"):
                index = self._take_long(word, argv, index, tokens, seen)
            elif word.startswith("-") and word != "-":
                index = self._take_short(word, argv, index, tokens, seen)
            elif takes_words:
                tokens.append(word)
            else:
                strays.append(word)
        return tokens, seen, strays

    def _take_long(
        self,
        word: str,
        argv: list[str],
        index: int,
        tokens: list[str],
        seen: list[argparse.Action],
    ) -> int:
        name, has_value, value = word.partition("=")
        action, flag = self._resolve_long(name)
        seen.append(action)
        if action.nargs == 0:
            if has_value:
                self.error(f"option {flag} takes no value (got {word!r})")
            tokens.append(flag)
        elif has_value:
            tokens.append(f"{flag}={value}")
        elif action.nargs == argparse.OPTIONAL:
            tokens.append(flag)
        else:
            # Ruby takes the next word whatever it looks like: `--part -5` works.
            if index >= len(argv):
                self.error(f"option {flag} needs a value")
            tokens.append(f"{flag}={argv[index]}")
            index += 1
        return index

    def _take_short(
        self,
        word: str,
        argv: list[str],
        index: int,
        tokens: list[str],
        seen: list[argparse.Action],
    ) -> int:
        cluster = word[1:]
        while cluster:
            letter, cluster = cluster[0], cluster[1:]
            action = self._option_string_actions.get(f"-{letter}")
            if action is None:
                self.error(f"unknown option: -{letter}")
            seen.append(action)
            flag = _long_flag(action)
            if action.nargs == 0:
                tokens.append(flag)  # `-yq` is `-y -q`: keep going
                continue
            if cluster:
                tokens.append(f"{flag}={cluster}")  # glued value: `-mfile`
            elif action.nargs == argparse.OPTIONAL:
                tokens.append(flag)
            elif index < len(argv):
                tokens.append(f"{flag}={argv[index]}")
                index += 1
            else:
                self.error(f"option -{letter} needs a value")
            break
        return index

    def keep_classic_abbreviations(self, longs: Iterable[str]) -> None:
        """Resolve abbreviations among the classic tool's long options first.

        Ruby took any unique prefix of a long option, and scripts use them
        (``--k`` for ``--kernel``). Options we added may share such a prefix
        (``--kernel-name``); in the classic style a prefix that named exactly
        one of ``longs`` keeps naming it. Only prefixes that name none (or
        several) of them are looked up among all the options.
        """
        unknown = [flag for flag in longs if flag not in self._option_string_actions]
        if unknown:
            raise TypeError(f"{self.prog}: classic options without a declaration: {unknown}")
        self._classic_longs = tuple(longs)

    def _resolve_long(self, name: str) -> tuple[argparse.Action, str]:
        """Find the action for ``--name`` or a unique prefix of a long option
        (classic style: of a classic option first)."""
        exact = self._option_string_actions.get(name)
        if exact is not None:
            return exact, name
        if self.style is Style.CLASSIC:
            classic = [flag for flag in self._classic_longs if flag.startswith(name)]
            if len(classic) == 1:
                return self._option_string_actions[classic[0]], classic[0]
        candidates: dict[int, tuple[argparse.Action, str]] = {}
        for flag, action in self._option_string_actions.items():
            if flag.startswith("--") and flag.startswith(name):
                candidates.setdefault(id(action), (action, flag))
        if len(candidates) == 1:
            return next(iter(candidates.values()))
        if not candidates:
            self.error(f"unknown option: {name}")
        names = sorted(flag for _action, flag in candidates.values())
        self.error(f"ambiguous option {name}: could be {or_list(names)}")

    def _handle_strays(self, words: list[str]) -> None:
        if not words:
            return
        if self.style is Style.MODERN:
            self.error(f"unexpected argument {words[0]!r}")
        # Classic scripts may carry leftover words; the Ruby tools ignored them.
        for word in words:
            sys.stderr.write(f"{self.prog}: warning: ignoring stray argument {word!r}\n")

    def _check_declarations(self) -> None:
        """Catch option declarations the Ruby-style parsing cannot serve (a bug, not input)."""
        for action in self._actions:
            if not action.option_strings:
                continue
            for flag in action.option_strings:
                if not (flag.startswith("--") or len(flag) == 2):
                    raise TypeError(f"option {flag}: use -X or --long names only")
            if not any(flag.startswith("--") for flag in action.option_strings):
                raise TypeError(f"option {action.option_strings[0]} needs a --long name")
            if action.nargs not in (None, 0, argparse.OPTIONAL):
                raise TypeError(f"option {_long_flag(action)}: nargs={action.nargs!r} unsupported")

    # -- post-parse checks ------------------------------------------------------

    def add_exclusive(self, flags: Sequence[str], *, required: bool) -> None:
        self._exclusives.append(_Exclusive(tuple(flags), required))

    def add_check(self, check: Callable[[argparse.Namespace], None]) -> None:
        self._checks.append(check)

    def run_post_parse_checks(
        self, namespace: argparse.Namespace, seen: Iterable[argparse.Action]
    ) -> None:
        """Mandatory options (in declaration order), exclusive sets, then custom checks."""
        seen_ids = {id(action) for action in seen}
        for action in self._actions:
            requirement = getattr(action, MANDATORY_ATTR, None)
            if not isinstance(requirement, _Mandatory):
                continue
            if any(getattr(namespace, dest, None) for dest in requirement.unless):
                continue
            if getattr(namespace, action.dest, None) in (None, []):
                self.error(f"missing mandatory option {_long_flag(action)}")
        for rule in self._exclusives:
            given = [
                flag for flag in rule.flags if id(self._option_string_actions[flag]) in seen_ids
            ]
            if len(given) > 1:
                self.error(f"{given[0]} cannot be combined with {given[1]}")
            if rule.required and not given:
                self.error(f"missing mandatory option: give one of {or_list(list(rule.flags))}")
        for check in self._checks:
            check(namespace)

    # -- help -------------------------------------------------------------------

    def format_usage(self) -> str:
        return self._with_default_usage(super().format_usage)

    def format_help(self) -> str:
        return self._with_default_usage(super().format_help)

    def _with_default_usage(self, render: Callable[[], str]) -> str:
        if self.usage is not None:
            return render()
        self.usage = compact_usage(self._actions, self._positionals._group_actions)
        try:
            return render()
        finally:
            self.usage = None


# -- declaring options ----------------------------------------------------------


def mandatory(
    container: OptionParser | argparse._ArgumentGroup,
    *flags: str,
    unless: str | Sequence[str] = (),
    **kwargs: Any,
) -> argparse.Action:
    """Add an option that must be given; checked after parsing, skipped for ``--help``.

    ``container`` is a parser (the option goes to its "mandatory" help group) or
    any argument group. ``unless`` names destinations (e.g. ``"clone_only"``)
    that, when set, waive the requirement. Do not pass ``required=True``.
    """
    if kwargs.get("required"):
        raise TypeError("mandatory() options are checked after parsing; drop required=True")
    target = container.mandatory_group if isinstance(container, OptionParser) else container
    action = target.add_argument(*flags, **kwargs)
    waivers = (unless,) if isinstance(unless, str) else tuple(unless)
    setattr(action, MANDATORY_ATTR, _Mandatory(waivers))
    return action


def exclusive(parser: OptionParser, *flags: str, required: bool = False) -> None:
    """Declare options that may not be combined (checked after parsing).

    The message is "--fstab cannot be combined with --generate-fstab"; with
    ``required=True``, giving none is also an error.
    """
    for flag in flags:
        if flag not in parser._option_string_actions:
            raise TypeError(f"exclusive(): {flag} is not an option of {parser.prog}")
    parser.add_exclusive(flags, required=required)


def add_check(parser: OptionParser, check: Callable[[argparse.Namespace], None]) -> None:
    """Register a post-parse check; it raises UsageError (skipped for ``--help``)."""
    parser.add_check(check)


def add_common_options(parser: OptionParser, style: Style | None = None) -> None:
    """Add ``--help/-h``, ``--version``, ``--manual``, ``--batch``, ``--debug``, ``--quiet/-q``.

    In the classic style they are moved to the front of the optional group, as
    the Ruby tools list them. Their defaults are filled in by :func:`parse_args`.
    """
    style = parser.style if style is None else style
    group = parser._optionals
    common = [
        _flag(group, "-h", "--help", early="help", help="show this help and exit"),
        _flag(group, "--version", early="version", help="show the version and exit"),
        _flag(group, "--manual", early="manual", help="show the manual and exit"),
        _flag(group, "--batch", help="never prompt; take the default answer to every question"),
        _flag(group, "--debug", help="show commands run and tracebacks of internal errors"),
        _flag(group, "-q", "--quiet", help="print only errors and the final result"),
    ]
    if style is Style.CLASSIC:
        others = [a for a in group._group_actions if all(a is not c for c in common)]
        group._group_actions[:] = [*common, *others]


def _flag(
    group: argparse._ArgumentGroup, *flags: str, help: str, early: str | None = None
) -> argparse.Action:
    action = group.add_argument(*flags, action="store_true", default=argparse.SUPPRESS, help=help)
    setattr(action, _COMMON_ATTR, True)
    if early is not None:
        setattr(action, _EARLY_ATTR, early)
    return action


# -- the entry point --------------------------------------------------------------


def parse_args(parser: OptionParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` in two phases; raise UsageError or EarlyExit, never exit.

    While-parsing checks (``type=`` converters, unknown/ambiguous options) always
    run. Then, unless ``--version``/``--help``/``--manual`` was given (which raises
    :class:`EarlyExit`), the post-parse checks run. The common flags
    ``batch``, ``debug`` and ``quiet`` are always present in the result.
    """
    namespace, _ = parser.parse_known_args(argv)
    seen: tuple[argparse.Action, ...] = vars(namespace).pop(_SEEN_ATTR, ())
    if any(getattr(action, _EARLY_ATTR, None) for action in seen):
        raise _early_exit(parser, seen)
    parser.run_post_parse_checks(namespace, seen)
    for name in ("help", "version", "manual"):
        vars(namespace).pop(name, None)
    for name in ("batch", "debug", "quiet"):
        if not hasattr(namespace, name):
            setattr(namespace, name, False)
    return namespace


def _early_exit(parser: OptionParser, seen: Sequence[argparse.Action]) -> EarlyExit:
    """The winning early exit: version, then help, then manual."""
    for kind in _EARLY_PRECEDENCE:
        if any(getattr(action, _EARLY_ATTR, None) == kind for action in seen):
            return EarlyExit(kind, _early_text(parser, kind))
    raise AssertionError("no early-exit option was seen")


def _early_text(parser: OptionParser, kind: str) -> str:
    if kind == "version":
        return parser.version_text or f"{parser.prog} {__version__}"
    if kind == "manual":
        return parser.manual_text or parser.format_help()
    return parser.format_help()


# -- small helpers ------------------------------------------------------------------


def _long_flag(action: argparse.Action) -> str:
    """The name errors use for an option: its first ``--long`` spelling."""
    return next((f for f in action.option_strings if f.startswith("--")), action.option_strings[0])


def _argument_error_text(err: argparse.ArgumentError) -> str:
    """One line for a value argparse refused, naming the option by its long flag."""
    name = err.argument_name or ""
    flags = name.split("/")
    long_flag = next((f for f in flags if f.startswith("--")), None)
    if long_flag is not None:
        return f"invalid value for {long_flag}: {err.message}"
    return f"{name}: {err.message}" if name else err.message


def _is_missing_required(message: str) -> bool:
    return message.startswith((_MISSING_ARGUMENT, *_REQUIRED_MESSAGES))
