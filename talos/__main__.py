"""``python -m talos``: the same as the ``talos`` command."""

import sys

from talos.cli import main

sys.exit(main())
