"""``python -m amibundle``: the same as the ``amibundle`` command."""

import sys

from amibundle.cli import main

sys.exit(main())
