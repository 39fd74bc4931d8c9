"""Loads Talos's optional C extensions: the record codec (``talos/record/_native.c``)
and the producer's send lane (``talos/client/_send_lane.c``).

``TALOS_PURE=1`` in the environment forces the pure-Python code (tests run
both); a checkout where an extension was not built gets it automatically.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType


def load_extension(name: str) -> ModuleType | None:
    """The extension module ``name``, or None when TALOS_PURE is set or it was not built."""
    if os.environ.get("TALOS_PURE", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def load_native() -> ModuleType | None:
    """The record codec's ``_native`` module, or None (see :func:`load_extension`)."""
    return load_extension("talos.record._native")
