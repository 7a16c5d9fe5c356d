"""``python -m tests.support.volume_runner [--classic] ARGS``: bundle-vol in a
child process (as another user, or to be interrupted)."""

from __future__ import annotations

import sys

from amibundle.cli import classic_main, exit_now, main

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--classic"]:
        exit_now(classic_main("ec2-bundle-vol", args[1:]))
    exit_now(main(["bundle-vol", *args]))
