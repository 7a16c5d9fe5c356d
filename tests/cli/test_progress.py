"""Progress for CI logs: the lines style of amibundle.cli._progress, --progress, -q.

A fake clock drives the 10-second rule; the quarter marks come from the byte
counts. The commands' own output under --progress/-q is checked end to end in
tests/end_to_end/test_image_sources.py and tests/s3/test_progress_log.py.
"""

from __future__ import annotations

import argparse
import io
import re

import pytest

from amibundle.cli._options import OptionParser, parse_args
from amibundle.cli._progress import (
    LINE_INTERVAL,
    QUARTER_AFTER,
    CommandProgress,
    ProgressStyle,
    add_progress_option,
    progress_for,
)
from amibundle.progress import Stage

MiB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines_progress(clock: Clock) -> tuple[CommandProgress, io.StringIO]:
    stream = io.StringIO()
    return CommandProgress(style=ProgressStyle.AUTO, stream=stream, clock=clock), stream


def test_quarters_and_ten_seconds_make_lines_with_bytes_rate_and_eta() -> None:
    clock = Clock()
    progress, log = lines_progress(clock)
    assert progress.style is ProgressStyle.LINES  # not a terminal
    progress.start(Stage.UPLOAD, 100 * MiB)
    for _ in range(100):  # 1 MiB a second
        clock.now += 1
        progress.advance(Stage.UPLOAD, MiB)
    progress.finish(Stage.UPLOAD)
    lines = log.getvalue().splitlines()
    percents = [int(m.group(1)) for line in lines if (m := re.search(r"\((\d+)%\)", line))]
    # each quarter once, and a line whenever 10 s passed since the last one
    assert percents == [10, 20, 25, 35, 45, 50, 60, 70, 75, 85, 95], lines
    assert lines[0] == "upload: 10.0 MiB of 100.0 MiB (10%), 1.0 MB/s, ETA 1 min 30 s"
    assert lines[2] == "upload: 25.0 MiB of 100.0 MiB (25%), 1.0 MB/s, ETA 1 min 15 s"
    assert lines[-1] == "upload: done, 100.0 MiB in 1 min 40 s (1.0 MB/s)"


def test_a_short_stage_shows_its_quarters_and_a_long_one_a_line_every_ten_seconds() -> None:
    clock = Clock()
    progress, log = lines_progress(clock)
    progress.start(Stage.READ, 4 * MiB)
    for _ in range(4):
        clock.now += 1
        progress.advance(Stage.READ, MiB)
    progress.finish(Stage.READ)
    lines = log.getvalue().splitlines()
    assert [line.split(" (")[1][:3] for line in lines[:-1]] == ["25%", "50%", "75%"]
    assert lines[-1] == "read: done, 4.0 MiB in 4 s (1.0 MB/s)"
    log.truncate(0)
    log.seek(0)
    progress.start(Stage.SCAN, None)  # size unknown: no percent, no ETA
    for _ in range(30):
        clock.now += 1
        progress.advance(Stage.SCAN, MiB)
    progress.finish(Stage.SCAN)
    lines = log.getvalue().splitlines()
    assert lines[:3] == [
        "scan: 10.0 MiB, 1.0 MB/s",
        "scan: 20.0 MiB, 1.0 MB/s",
        "scan: 30.0 MiB, 1.0 MB/s",
    ]
    assert lines[3].startswith("scan: done, 30.0 MiB in 30 s")


def test_nothing_at_all_for_stages_that_end_quickly() -> None:
    clock = Clock()
    progress, log = lines_progress(clock)
    progress.start(Stage.VERIFY, None)
    clock.now += LINE_INTERVAL - 0.1
    progress.advance(Stage.VERIFY, 5)
    progress.finish(Stage.VERIFY)
    progress.start(Stage.READ, 4 * MiB)  # every quarter, all within the first second
    for _ in range(4):
        clock.now += (QUARTER_AFTER - 0.01) / 4
        progress.advance(Stage.READ, MiB)
    progress.finish(Stage.READ)
    assert log.getvalue() == ""


def test_a_failed_stage_does_not_say_done() -> None:
    clock = Clock()
    progress, log = lines_progress(clock)
    progress.start(Stage.DOWNLOAD, 8)
    clock.now += 2
    progress.advance(Stage.DOWNLOAD, 4)
    progress.finish(Stage.DOWNLOAD, RuntimeError("boom"))
    assert log.getvalue().splitlines() == ["download: 4 B of 8 B (50%), 0.0 MB/s, ETA 2 s"]


def parsed(*argv: str) -> argparse.Namespace:
    parser = OptionParser("amibundle test")
    parser.add_argument("--json", action="store_true")
    add_progress_option(parser)
    parser.add_argument("-q", "--quiet", action="store_true")
    return parse_args(parser, list(argv))


@pytest.mark.parametrize(
    ("argv", "terminal", "style"),
    [
        ((), True, ProgressStyle.BAR),
        ((), False, ProgressStyle.LINES),
        (("-q",), True, ProgressStyle.NONE),
        (("--json",), False, ProgressStyle.NONE),
        (("--progress", "lines"), True, ProgressStyle.LINES),
        (("--progress", "bar"), False, ProgressStyle.BAR),
        (("--progress", "none"), True, ProgressStyle.NONE),
        (("-q", "--progress", "lines"), False, ProgressStyle.LINES),  # asked for: wins over -q
        (("--progress=auto", "-q"), False, ProgressStyle.NONE),
    ],
)
def test_the_style_the_options_ask_for(
    argv: tuple[str, ...], terminal: bool, style: ProgressStyle
) -> None:
    stream = FakeTerminal() if terminal else io.StringIO()
    assert progress_for(parsed(*argv), stream=stream).style is style


def test_a_forced_bar_draws_even_into_a_log() -> None:
    log = io.StringIO()
    progress = progress_for(parsed("--progress", "bar"), stream=log)
    progress.start(Stage.READ, 10)
    progress.advance(Stage.READ, 10)
    progress.finish(Stage.READ)
    assert "100%" in log.getvalue() and "read" in log.getvalue()


def test_an_unknown_style_is_a_usage_error() -> None:
    with pytest.raises(Exception, match="--progress"):
        parsed("--progress", "fancy")
