"""Names of a package loaded on first use (PEP 562), for the packages whose users often need
one light submodule: importing it must not pull in the heavy ones beside it.

A package lists each public name with the submodule that defines it and takes the two module
functions from here::

    __getattr__, __dir__ = lazy_names(__name__, {"BatchRunner": "runner", ...})

with the same names imported under ``TYPE_CHECKING`` for the type checker.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, sources: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package``: a name of ``sources`` (name ->
    submodule) is imported from its submodule when first looked up, then kept in the package."""

    def __getattr__(name: str) -> Any:
        module = sources.get(name)
        if module is None:
            # AttributeError, not ImportError: ``from package import submodule`` relies on it
            # to fall back to importing the submodule.
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *sources})

    return __getattr__, __dir__
