"""What every job, evaluation and benchmark writes beside its numbers: provenance (git SHA, device, versions),
strict JSON, markdown tables, and the :class:`Report` a run ends with."""
from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ['Report', 'environment', 'jsonable', 'markdown_table', 'format_number']


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(['git', *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(dist_name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist_name)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Git SHA (and whether the tree had local changes), device and library versions, for the metrics JSON."""
    import torch

    sha = _git('rev-parse', 'HEAD')
    status = _git('status', '--porcelain', '--untracked-files=no')
    if device.type == 'cuda':
        dev = {'type': 'cuda', 'name': torch.cuda.get_device_name(device), 'index': device.index}
    else:
        dev = {'type': 'cpu', 'name': platform.processor() or platform.machine(), 'threads': torch.get_num_threads()}
    versions = {'python': platform.python_version(), 'torch': torch.__version__}
    for name in ('torchvision', 'sam3', 'sam3-cradio', 'timm', 'numpy', 'pycocotools', 'opencv-python-headless'):
        versions[name] = _version(name)
    return {'git_sha': sha, 'git_dirty': bool(status) if status is not None else None, 'device': dev,
            'versions': versions, 'host': platform.node(), 'command': ' '.join(sys.argv)}

def jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, os.PathLike):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None  # strict JSON: NaN (an empty bucket) and inf become null
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, np.generic):
        return jsonable(x.item())
    return str(x)


@dataclass
class Report:
    """What a runner's ``finalize`` returns: JSON metrics, a markdown table, optional printed detail, and the
    headline numbers a side-by-side comparison shows."""

    metrics: dict[str, Any]
    table: str
    text: str = ''
    headline: dict[str, Any] = field(default_factory=dict)  # a few numbers for side-by-side tables


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = '{:.1f}') -> str:
    """A markdown table; floats through ``fmt`` (NaN and negative pycocotools placeholders as '-')."""
    def cell(v: Any) -> str:
        if v is None:
            return '-'
        if isinstance(v, float):
            return '-' if v != v else fmt.format(v)
        return str(v)

    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines)


def format_number(x: float | None, spec: str = '.2f', suffix: str = '') -> str:
    """A table cell: ``x`` in ``spec`` with ``suffix`` ('1.23x'), '-' for a missing value."""
    return '-' if x is None else f'{x:{spec}}{suffix}'
