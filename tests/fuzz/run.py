"""Coverage-guided fuzzing of one target with atheris (libFuzzer for Python).

    python -m tests.fuzz.run TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is one of ``tests.fuzz.harnesses.TARGETS`` (manifest, tar, unbundle).
amibundle's modules are instrumented for coverage (the harness and the test
helpers are not). Everything after TARGET goes to libFuzzer, e.g.
``-max_total_time=600 -rss_limit_mb=512 -timeout=10 -max_len=16384
-artifact_prefix=DIR/ NEW_CORPUS SEED_CORPUS`` (new inputs go into the first
corpus folder). ``test_fuzz.py`` runs this for a few seconds a target in the
suite; ``make fuzz`` runs it longer and merges what it finds into
tests/fuzz/corpus/TARGET.
"""

from __future__ import annotations

import shlex
import sys


def main(argv: list[str]) -> None:
    import atheris

    if len(argv) < 2 or argv[1].startswith("-"):
        sys.exit(f"usage: {argv[0]} TARGET [libFuzzer options] [corpus ...]")
    target = argv[1]
    with atheris.instrument_imports(include=["amibundle"]):
        from tests.fuzz.harnesses import TARGETS
    if target not in TARGETS:
        sys.exit(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    # libFuzzer re-runs argv[0] through sh for -merge (and -fork, -jobs): make
    # it the whole command, since this file is a module, not an executable.
    command = shlex.join([sys.executable, "-m", "tests.fuzz.run", target])
    atheris.Setup([command, *argv[2:]], TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
