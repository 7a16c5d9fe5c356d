"""``python -m amibundle``: the same as the ``amibundle`` command."""

from amibundle.cli import entry

entry()
