"""``python -m tests.support.volume_runner [--classic] ARGS``: bundle-vol in a child process
(as another user, or to be interrupted), whether or not the verb is registered yet."""

from __future__ import annotations

import sys

from amibundle.cli import _run_module, bundle_vol
from amibundle.cli._options import Style

if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--classic"]:
        sys.exit(_run_module(bundle_vol, Style.CLASSIC, "ec2-bundle-vol", args[1:]))
    sys.exit(_run_module(bundle_vol, Style.MODERN, "amibundle bundle-vol", args))
