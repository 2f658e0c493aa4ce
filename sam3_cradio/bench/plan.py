"""The rows a run will fill, in order, before anything is built."""
from __future__ import annotations

from ..registry import resolve
from .config import BenchConfig
from .models import pe_layout
from .rows import Row

__all__ = ['plan_rows']


def plan_rows(cfg: BenchConfig) -> list[Row]:
    """Every row the benchmark will fill, in order: per size level and dtype, PE (its own window;
    ``windowed_grid`` is the grid padded to a multiple of it), then each C-RADIO backbone x window.

    A window that does not divide the level's grid (the registry's rule) gives ``status='skipped'`` with a
    ``reason`` under ``off_grid='skip'``; under ``'nearest'`` its input moves to the nearest size it allows
    (``off_grid=True``, another grid).
    """
    cfg = cfg.resolved()
    pe = cfg.pe_backbone()
    layout = pe_layout(pe) if pe is not None else None
    cradio = cfg.cradio_backbones()
    patch = cradio[0].patch_size
    rows = []
    for size in cfg.sizes:
        g = size // patch
        for dtype in cfg.dtypes:
            level = {'size': size, 'grid': g, 'dtype': dtype, 'batch': cfg.batch}
            if pe is not None and layout is not None:
                px = g * pe.patch_size
                rows.append(Row(**level, backbone=pe.name, label=pe.label, kind='pe', window=layout.window,
                                input=(px, px), windowed_grid=layout.padded_grid(g),
                                windowed_blocks=layout.windowed_blocks, global_blocks=layout.global_blocks))
            for b in cradio:
                for w in cfg.windows:
                    px = g * b.patch_size
                    row = Row(**level, backbone=b.name, label=b.label, kind='cradio', window=w, input=(px, px),
                              windowed_grid=g)
                    try:
                        resolve(b, w, px)
                    except ValueError:
                        reason = f'window {w} does not divide the {g}x{g} grid'
                        if cfg.off_grid == 'skip':
                            row.status, row.reason, row.input = 'skipped', reason, None
                        else:
                            side = b.nearest_resolution(px, w)
                            row.input, row.grid = (side, side), side // b.patch_size
                            row.windowed_grid, row.off_grid = row.grid, True
                            row.reason = f'{reason}; run at the nearest size it allows, {side} px'
                    rows.append(row)
    return rows
