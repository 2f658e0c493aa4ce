"""What a run writes: the markdown table (every number also as a ratio), the dry-run plan, the latency plot,
the JSON, and the notes on PE's padding."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..files import write_atomic
from ..registry import format_window
from ..reporting import format_number
from .result import BenchResult
from .rows import Measurement, Row

__all__ = ['format_table', 'format_plan', 'plot_latency', 'write_outputs', 'pe_padding_notes']


def _window_label(r: Row) -> str:
    return f'{r.window} (own)' if r.kind == 'pe' else format_window(r.window)


def pe_padding_notes(rows: Sequence[Row]) -> list[str]:
    """One note per size level where PE pads its grid for its windows (C-RADIO windows that divide it do not)."""
    notes, seen = [], set()
    for r in rows:
        if r.kind != 'pe' or not r.ok or r.size in seen or r.input is None:
            continue
        seen.add(r.size)
        g, pg = r.grid, r.windowed_grid
        if pg != g:
            notes.append(
                f'{r.label} at {r.input[0]} px pads its {g}x{g} grid to {pg}x{pg} in its {r.windowed_blocks} '
                f'windowed blocks ({pg * pg / (g * g) - 1:.0%} more tokens there); C-RADIO windows that divide {g} '
                f'add none, so the smaller input is relatively cheaper for C-RADIO.')
    return notes


def format_table(result: BenchResult) -> str:
    """Markdown: one line per row, every number also as a ratio to PE at the same grid and dtype; then the
    matmul peaks, the bf16 fixture check and the notes."""
    lines = ['| backbone | input | grid | window | dtype | encoder median (s) | p95 (s) | x PE | x global | '
             'x fp32 | peak mem (MiB) | x PE | params (M) | x PE | GFLOP | x PE | GFLOP/s | fp32 mm | bf16 mm | '
             'inference (s) | x PE | x global |',
             '|' + '---|' * 22]
    for r in result.rows:
        e = r.encoder
        if not r.ok or e is None or r.input is None:
            lines.append(f'| {r.label} | - | {r.grid} | {_window_label(r)} | {r.dtype} | skipped: {r.reason} |'
                         + ' |' * 16)
            continue
        pe, gl, inf = r.ratio_to_pe, r.ratio_to_global, r.inference
        grid = f'{r.grid}' + (f' ({r.windowed_grid} in windows)' if r.windowed_grid != r.grid else '')
        lines.append(
            f'| {r.label} | {r.input[0]}x{r.input[1]} | {grid} | {_window_label(r)} | {r.dtype} | '
            f'{e.median_s:.3g} | {e.p95_s:.3g} | {format_number(pe and pe.latency, ".2f", "x")} | '
            f'{format_number(gl and gl.latency, ".2f", "x")} | '
            f'{format_number(r.speedup_vs_fp32, ".2f", "x faster")} | '
            f'{e.peak_mem_bytes / 2 ** 20:.0f} | {format_number(pe and pe.peak_mem, ".2f", "x")} | '
            f'{(r.params or 0) / 1e6:.1f} | {format_number(pe and pe.params, ".2f", "x")} | '
            f'{(r.flops or 0) / 1e9:.3g} | {format_number(pe and pe.flops, ".2f", "x")} | {e.gflops_per_s:.3g} | '
            f'{format_number(e.fraction_of_mm.get("fp32"), ".0%")} | '
            f'{format_number(e.fraction_of_mm.get("bf16"), ".0%")} | '
            f'{format_number(inf and inf.median_s, ".3g")} | '
            f'{format_number(inf and inf.ratio_to_pe and inf.ratio_to_pe.latency, ".2f", "x")} | '
            f'{format_number(inf and inf.ratio_to_global, ".2f", "x")} |')
    out = ['\n'.join(lines)]
    ops = _ops_table(result.rows)
    if ops:
        out.append(ops)
    if result.matmul is not None:
        peaks = result.matmul.peak_gflops
        out.append('torch.mm peak (GFLOP/s): ' + ', '.join(f'{d} {v:.1f}' for d, v in peaks.items()))
    fx = result.bf16_fixture
    if fx is not None:
        b, s = fx.worst['backbone'], fx.worst['sam3']
        out.append(f'bf16 vs fp32 on the fixture ({len(fx.cases)} cases): backbone features max|d| '
                   f'{b.max_abs:.3g}, rel. error {b.rel_err:.3g}, 1 - cos <= {1 - b.cos:.2g}; sam3 adaptor rel. '
                   f'error {s.rel_err:.3g}, 1 - cos <= {1 - s.cos:.2g}; speed-up {fx.speedup_median:.2f}x '
                   f'(worst case of each)')
    elif result.bf16_fixture_skipped:
        out.append(f'bf16 fixture check skipped: {result.bf16_fixture_skipped}')
    out += result.notes
    return '\n\n'.join(out)


def _ops_table(rows: Sequence[Row]) -> str:
    """``--op-profile``: where each encoder row's time goes, linear layers / attention / the rest."""
    profiled = [r for r in rows if r.encoder is not None and r.encoder.ops and r.input is not None]
    if not profiled:
        return ''
    classes = ('linear', 'attention', 'other')
    lines = ['Where the encoder time goes (--op-profile: one profiled call; % mm: of the row\'s dtype\'s matmul '
             'peak):', '', '| backbone | input | window | dtype | ' + ' | '.join(
                 f'{c} share | {c} GFLOP/s | {c} % mm' for c in classes[:2]) + ' | other share |',
             '|' + '---|' * 11]
    for r in profiled:
        ops = r.encoder.ops
        cells = [f'{ops[c]["share"]:.0%} | {ops[c]["gflops_per_s"]:.3g} | '
                 f'{format_number(ops[c].get("fraction_of_mm"), ".0%")}' for c in classes[:2]]
        lines.append(f'| {r.label} | {r.input[0]}x{r.input[1]} | {_window_label(r)} | {r.dtype} | '
                     + ' | '.join(cells) + f' | {ops["other"]["share"]:.0%} |')
    return '\n'.join(lines)


def format_plan(rows: Sequence[Row]) -> str:
    """Markdown list of planned rows (``--dry-run``)."""
    lines = ['| backbone | input | grid | window | dtype | status |', '|---|---|---|---|---|---|']
    for r in rows:
        inp = f'{r.input[0]}x{r.input[1]}' if r.input is not None else '-'
        lines.append(f'| {r.label} | {inp} | {r.grid} | {_window_label(r)} | {r.dtype} | '
                     f'{r.status}{": " + r.reason if r.reason else ""} |')
    return '\n'.join(lines)


def plot_latency(result: BenchResult, path: Path) -> Path:
    """PNG: median latency (min-max bars) vs window size, one line per backbone and dtype, PE as a dashed line;
    one column per size level, a second row for whole-image inference when it was measured."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in result.rows if r.ok and not r.off_grid]
    table = result.table
    cfg = result.config
    sizes = list(dict.fromkeys(r.size for r in result.rows))
    windows = list(cfg.windows or ())
    kinds = ['encoder'] + (['inference'] if any(r.inference is not None for r in rows) else [])
    fig = Figure(figsize=(5.5 * len(sizes), 4 * len(kinds)), layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(kinds), len(sizes), squeeze=False)
    colors = ['tab:blue', 'tab:orange', 'tab:green', 'tab:red', 'tab:purple', 'tab:brown']

    def measured(r: Row | None, kind: str) -> Measurement | None:
        if r is None or r.off_grid:
            return None
        return r.encoder if kind == 'encoder' else r.inference

    for i, kind in enumerate(kinds):
        for j, size in enumerate(sizes):
            ax = axes[i][j]
            at = [r for r in rows if r.size == size and measured(r, kind) is not None]
            series = list(dict.fromkeys((r.backbone, r.label, r.dtype) for r in at if r.kind == 'cradio'))
            for k, (name, label, dtype) in enumerate(series):
                y, lo, hi = [], [], []
                for w in windows:
                    m = measured(table.get(name, w, size, dtype), kind)
                    y.append(m.median_s if m else np.nan)
                    lo.append(m.median_s - m.min_s if m else 0)
                    hi.append(m.max_s - m.median_s if m else 0)
                ax.errorbar(range(len(windows)), y, yerr=[lo, hi], marker='o', capsize=3,
                            color=colors[k % len(colors)], linestyle='-' if dtype == 'fp32' else ':',
                            label=f'{label} {dtype}')
            for r in at:
                m = measured(r, kind)
                if r.kind == 'pe' and m is not None and r.input is not None:
                    ax.axhline(m.median_s, color='black', linestyle='--' if r.dtype == 'fp32' else '-.',
                               label=f'{r.label} {r.input[0]} px W{r.window} {r.dtype}')
            grid = next((r.grid for r in result.rows if r.size == size), size)
            ax.set_title(f'{kind}: {grid}x{grid} grid (C-RADIO {size} px)')
            ax.set_xticks(range(len(windows)), [format_window(w) for w in windows])
            ax.set_xlabel('C-RADIO window (tokens)')
            ax.set_ylabel('median latency (s)')
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    dev = result.meta.get('device', {})
    fig.suptitle(f"C-RADIO vs SAM3 PE, {dev.get('name', '')} ({dev.get('type', '')}), batch {cfg.batch}",
                 fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_outputs(result: BenchResult, json_path: Path, plot_path: Path | None = None) -> dict[str, Path]:
    """Write ``json_path``, the markdown table (``.md`` beside it) and the PNG plot (default: ``.png`` beside it)."""
    json_path = Path(json_path)
    write_atomic(json_path, json.dumps(result.to_dict(), indent=1))
    md = json_path.with_suffix('.md')
    write_atomic(md, format_table(result) + '\n')
    png = plot_latency(result, Path(plot_path) if plot_path else json_path.with_suffix('.png'))
    return {'json': json_path, 'plot': png, 'markdown': md}
