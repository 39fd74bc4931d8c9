"""Loads the optional C accelerator of talos.record (``_native.c``).

``TALOS_PURE=1`` in the environment forces the pure-Python code (tests run
both); a checkout where the extension was not built gets it automatically.
"""

from __future__ import annotations

import os
from types import ModuleType


def load_native() -> ModuleType | None:
    """The ``_native`` module, or None when TALOS_PURE is set or it was not built."""
    if os.environ.get("TALOS_PURE", "") not in ("", "0"):
        return None
    try:
        from talos.record import _native
    except ImportError:
        return None
    return _native
