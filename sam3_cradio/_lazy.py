"""Package attributes imported on first use (PEP 562), so that reading a command's options, or ``import
sam3_cradio``, loads no torch, timm or sam3."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` serving each ``name`` of ``table`` from its submodule."""
    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(f'.{table[name]}', package), name)
        raise AttributeError(f'module {package!r} has no attribute {name!r}')

    return __getattr__
