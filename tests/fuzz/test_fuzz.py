"""Fuzzing in the suite: the saved corpus replayed, and a short coverage-
guided run of every target.

* Every file in tests/fuzz/corpus/<target>/ (seeds, inputs the fuzzers
  found, and ``regression-*`` reproductions of fixed bugs) is replayed through its
  harness (tests/fuzz/harnesses.py), which checks the properties: only
  AmibundleError escapes, messages are one short line, nothing is written
  beyond the declared size, bombs stop early. Each input must also finish
  within :data:`INPUT_SECONDS`.
* ``test_bounded_fuzz_run`` runs the three atheris fuzzers side by side for
  ``AMIBUNDLE_FUZZ_SECONDS`` (default 14) seconds each, new inputs going to a
  temporary folder; ``make fuzz`` runs them longer and merges what they find
  into the corpus.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fuzz.harnesses import TARGETS, strict_mode
from tests.support.common import REPO
from tests.support.hostile import clean_parent

CORPUS = Path(__file__).resolve().parent / "corpus"
INPUT_SECONDS = 5.0  # per replayed input, generous for a loaded machine
FUZZ_SECONDS = int(os.environ.get("AMIBUNDLE_FUZZ_SECONDS", "14"))
# The fuzzer's own bounds on one input (libFuzzer options).
LIMITS = ["-rss_limit_mb=512", "-timeout=10", "-max_len=16384"]

# regression-* files reproduce product bugs the fuzzer found (messages too
# long to be one short line); they are fixed and replayed like the rest.


def corpus_cases() -> list[object]:
    cases: list[object] = []
    for target in TARGETS:
        for path in sorted((CORPUS / target).iterdir()):
            key = f"{target}/{path.name}"
            cases.append(pytest.param(target, path, id=key))
    return cases


@pytest.mark.parametrize(("target", "path"), corpus_cases())
def test_corpus_input_keeps_the_properties(target: str, path: Path) -> None:
    started = time.monotonic()
    with strict_mode():  # no known bug is tolerated in the saved corpus
        TARGETS[target](path.read_bytes())
    seconds = time.monotonic() - started
    assert seconds <= INPUT_SECONDS, f"{path.name} took {seconds:.1f} s"


# --------------------------------------------------------------------------- a short run


@dataclass(frozen=True)
class FuzzRun:
    target: str
    status: int
    log: str
    artifacts: list[Path]

    @property
    def execs_per_second(self) -> int:
        found = re.search(r"stat::average_exec_per_sec:\s+(\d+)", self.log)
        return int(found.group(1)) if found else 0

    @property
    def runs(self) -> int:
        found = re.search(r"stat::number_of_executed_units:\s+(\d+)", self.log)
        return int(found.group(1)) if found else 0

    def failure(self) -> str:
        tail = "\n".join(self.log.splitlines()[-40:])
        inputs = "".join(
            f"\n{path.name} (base64): {base64.b64encode(path.read_bytes()[:4096]).decode()}"
            for path in self.artifacts
        )
        return f"{self.target} fuzzer exited {self.status}:\n{tail}{inputs}"


@pytest.mark.skipif(FUZZ_SECONDS <= 0, reason="AMIBUNDLE_FUZZ_SECONDS=0")
@pytest.mark.timeout(FUZZ_SECONDS + 120)
def test_bounded_fuzz_run(tmp_path: Path) -> None:
    """Each target fuzzed for FUZZ_SECONDS, all three at once; any crash,
    timeout or memory blow-up fails with the input that caused it."""
    pytest.importorskip("atheris")
    started = []
    for target in TARGETS:
        found = tmp_path / target
        found.mkdir()
        argv = [
            sys.executable, "-m", "tests.fuzz.run", target,
            f"-max_total_time={FUZZ_SECONDS}", *LIMITS, "-print_final_stats=1",
            f"-artifact_prefix={tmp_path}/{target}-", str(found), str(CORPUS / target),
        ]  # fmt: skip
        log = (tmp_path / f"{target}.log").open("w")
        # Through a small parent, or libFuzzer's RSS limit counts this process's.
        process = subprocess.Popen(
            clean_parent(argv), cwd=REPO, stdout=log, stderr=log, start_new_session=True
        )
        started.append((target, log, process))
    runs = []
    for target, log, process in started:
        try:
            status = process.wait(timeout=FUZZ_SECONDS + 90)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.close()
        text = (tmp_path / f"{target}.log").read_text(errors="replace")
        runs.append(FuzzRun(target, status, text, sorted(tmp_path.glob(f"{target}-*"))))
    for run in runs:
        assert run.status == 0 and not run.artifacts, run.failure()
        assert run.runs > 0, run.failure()
    print(", ".join(f"{r.target}: {r.runs} runs, {r.execs_per_second} exec/s" for r in runs))
