"""``python -m talos``: the same as the ``talos`` command."""

from talos.cli import entry

entry()
