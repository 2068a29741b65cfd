"""``softseg compare``: methods (label mode, loss) side by side on identical splits and seeds,
with paired statistics against a reference and, optionally, smaller training sets.

The composition is :mod:`~softseg.experiments.compare.composition`; its parts are the
methods (``methods``, ``variants``), the split plan (``splits``, ``fractions``), the paired
statistics (``statistics``) and the files (``tables``, ``outputs``). ``compare`` and
``CompareOptions`` are importable from here.
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, like the package root: this __init__ runs before any of its modules,
# so importing the composition here would import each module back into its own package.
_EXPORTS = {"compare": "softseg.experiments.compare.composition",
            "CompareOptions": "softseg.experiments.compare.composition"}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
