"""The trunk in torch, onnxruntime and OpenVINO, side by side: ``sam3-cradio bench --runtimes torch onnxruntime
openvino``.

For each model (``NAME:WINDOW``; default SO400M with window 12 and H with window 8, random weights of the real
architectures) and each size, the torch trunk is built once, exported to ONNX (a temporary file, fixed size and
window, as ``sam3-cradio export`` writes it), and every runtime x dtype runs the same input in one process,
interleaved (:func:`~sam3_cradio.bench.measure.interleave`): torch eager (fp32; bf16 under autocast),
onnxruntime (fp32; it has no bf16 CPU kernels, so its bf16 row is skipped with that reason) and OpenVINO (fp32;
bf16 inference precision where the CPU has native bf16). Each row also records the largest absolute difference
of its output from torch fp32 and the runtime's settings (:class:`~sam3_cradio.export.runtimes.RuntimeOptions`).

    sam3-cradio bench --runtimes torch onnxruntime openvino --tiny            # seconds
    sam3-cradio bench --runtimes torch onnxruntime openvino --dtype fp32 bf16 --sizes 576 1152
"""
from __future__ import annotations

import gc
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..files import write_atomic
from ..registry import GLOBAL, ModelSpec, Window, format_model, format_window, get_backbone, resolve
from ..reporting import format_number
from .config import BenchCommand, BenchConfig, cradio_models
from .measure import TimedCall, interleave, malloc_trim, rss_bytes, timing_environment
from .rows import Measurement

__all__ = ['RuntimeRow', 'RuntimeExport', 'RuntimeResult', 'run_runtimes',
           'format_runtimes', 'run_runtimes_cli']

_logger = logging.getLogger(__name__)

_WHY = 'the runtime comparison exports C-RADIO trunks'



@dataclass(kw_only=True)
class RuntimeRow:
    """One runtime at one model, size and dtype.

    Attributes:
        size: the size level (``--sizes``); ``input`` the side it ran at, another one for a window that does not
            divide the level's grid under ``--off-grid nearest`` (``off_grid``).
        timing: latency and peak memory over the timed rounds (None when skipped).
        max_abs_vs_torch_fp32: largest |output - torch fp32 output| on the timed input.
        speedup_vs_torch_fp32: torch eager fp32's median over this row's (> 1: faster).
        speedup_vs_torch: torch eager's median at the same dtype over this row's.
        options: the runtime's settings (threads, precision, optimisation level, ...).
        resident_bytes: what this runtime keeps for this dtype (weights, compiled graph, buffers): the process RSS
            growth over building its model and its first call; for bf16 rows, what the bf16 path adds to the fp32
            one (approximate: freed memory is reused). The per-call peak above what is in use is
            ``timing.peak_mem_bytes``.
    """
    backbone: str
    label: str
    window: Window
    size: int
    input: int
    batch: int
    dtype: str
    runtime: str
    off_grid: bool = False
    status: str = 'ok'
    reason: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    timing: Measurement | None = None
    max_abs_vs_torch_fp32: float | None = None
    speedup_vs_torch_fp32: float | None = None
    speedup_vs_torch: float | None = None
    resident_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == 'ok'

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RuntimeRow:
        return cls(**{**d, 'timing': Measurement(**d['timing']) if d.get('timing') else None})


@dataclass(kw_only=True)
class RuntimeExport:
    """The ONNX file one level's rows ran from: how long the export took and its size."""
    backbone: str
    window: Window
    size: int
    seconds: float
    bytes: int
    opset: int


@dataclass(kw_only=True)
class RuntimeResult:
    meta: dict[str, Any]
    config: dict[str, Any]
    rows: list[RuntimeRow] = field(default_factory=list)
    exports: list[RuntimeExport] = field(default_factory=list)

    def row(self, backbone: str, window: Window, size: int, dtype: str, runtime: str) -> RuntimeRow | None:
        key = (backbone, window, size, dtype, runtime)
        return next((r for r in self.rows if (r.backbone, r.window, r.size, r.dtype, r.runtime) == key), None)

    def to_dict(self) -> dict[str, Any]:
        return {'meta': self.meta, 'config': self.config, 'rows': [asdict(r) for r in self.rows],
                'exports': [asdict(e) for e in self.exports]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RuntimeResult:
        return cls(meta=d['meta'], config=d['config'], rows=[RuntimeRow.from_dict(r) for r in d['rows']],
                   exports=[RuntimeExport(**e) for e in d.get('exports', [])])


def _runtimes(runtimes: Sequence[str]) -> list[str]:
    from ..export.runtimes import RUNTIMES

    bad = [r for r in runtimes if r not in RUNTIMES]
    if bad:
        raise ValueError(f'unknown runtimes {bad}; choose among {list(RUNTIMES)}')
    # torch eager fp32 is what every row is compared with: always measured, first
    return ['torch', *dict.fromkeys(r for r in runtimes if r != 'torch')]



def _resident() -> int:

    gc.collect()
    malloc_trim()
    return rss_bytes()


def _measure_level(spec: ModelSpec, size: int, cfg: BenchConfig, runtimes: list[str], workdir: Path,
                   result: RuntimeResult) -> None:
    """Build, export and time one model at one size: every runtime x dtype, interleaved."""
    from ..build import build_trunk
    from ..export.export import export_trunk_module
    from ..export.runtimes import ExportedModel, RuntimeOptions, runtime_unavailable

    b = spec.backbone
    level = {'backbone': b.name, 'label': b.label, 'window': spec.window, 'size': size, 'input': spec.resolution,
             'batch': cfg.batch, 'off_grid': spec.resolution != size}
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.rand(cfg.batch, 3, spec.resolution, spec.resolution, generator=gen) * 2 - 1
    resident: dict[tuple[str, str], int] = {}  # (runtime, dtype) -> RSS kept by its model and first call

    def first_call(key: tuple[str, str], make: Callable[[], Any]) -> Any:
        before = _resident()
        # no_grad, not inference_mode: a model built here must stay usable outside it (the export traces it)
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=key[1] == 'bf16'):
            made = make()
        resident[key] = max(_resident() - before, 0)
        return made

    def build_torch() -> torch.nn.Module:
        torch.manual_seed(cfg.seed)
        _logger.info('building %s (random weights)', spec.title())
        t = build_trunk(spec)
        t(x)
        return t

    def open_exported(rt: str) -> ExportedModel:
        m = ExportedModel(path, rt, precision='fp32', info=exp.info)
        m.run(x, precision='fp32')
        return m

    trunk = first_call(('torch', 'fp32'), build_torch)
    exported: dict[str, ExportedModel] = {}
    unavailable = {rt: runtime_unavailable(rt) for rt in runtimes if rt != 'torch'}
    if any(reason is None for reason in unavailable.values()):
        path = workdir / f'{b.name}_{spec.resolution}_{format_window(spec.window)}.onnx'
        exp = export_trunk_module(trunk, spec, path, seed=cfg.seed)
        result.exports.append(RuntimeExport(backbone=b.name, window=spec.window, size=spec.resolution,
                                            seconds=exp.seconds, bytes=exp.size_bytes, opset=exp.info.opset))
        for rt, reason in unavailable.items():
            if reason is None:
                exported[rt] = first_call((rt, 'fp32'), lambda rt=rt: open_exported(rt))

    planned: list[tuple[RuntimeRow, TimedCall | None]] = []
    for dtype in cfg.dtypes:
        for rt in runtimes:
            row = RuntimeRow(**level, dtype=dtype, runtime=rt)
            call: Callable[[], Any] | None = None
            if rt == 'torch':
                row.options = {**RuntimeOptions('torch', torch.get_num_threads()).to_dict(),
                               'version': torch.__version__, 'mode': 'eager',
                               'precision': 'bf16 autocast' if dtype == 'bf16' else 'fp32'}
                call = lambda t=trunk: t(x)[-1]  # noqa: E731
            elif rt not in exported:
                row.status, row.reason = 'skipped', unavailable[rt]
            else:
                model = exported[rt]
                row.options = model.options.to_dict() | {'precision': dtype}
                if dtype == 'bf16' and model.bf16_unavailable:
                    row.status, row.reason = 'skipped', model.bf16_unavailable
                else:
                    call = lambda m=model, p=dtype: m.run(x, precision=p)['features']  # noqa: E731
            if call is not None and (rt, dtype) not in resident:  # e.g. OpenVINO compiles its bf16 model here
                first_call((rt, dtype), call)
            row.resident_bytes = resident.get((rt, dtype))
            planned.append((row, TimedCall(f'{rt} {spec.title(short=True)}', lambda: None, call, dtype)
                            if call is not None else None))
    calls = [c for _, c in planned if c is not None]
    interleave(calls, torch.device('cpu'), cfg.repeats, cfg.warmup, cfg.rss_method)

    with torch.inference_mode():
        reference = trunk(x)[-1]
        for row, c in planned:
            if c is None:
                continue
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=row.dtype == 'bf16'):
                out = c.call()
            row.max_abs_vs_torch_fp32 = float((out.float() - reference).abs().max())
            row.timing = Measurement(**c.stats())
    torch_median = {r.dtype: r.timing.median_s for r, _ in planned if r.runtime == 'torch' and r.timing is not None}
    for row, _ in planned:
        if row.timing is not None:
            fp32, same = torch_median.get('fp32'), torch_median.get(row.dtype)
            row.speedup_vs_torch_fp32 = fp32 / row.timing.median_s if fp32 else None
            row.speedup_vs_torch = same / row.timing.median_s if same else None
        result.rows.append(row)


def run_runtimes(cfg: BenchConfig, runtimes: Sequence[str], models: Sequence[str] | None = None) -> RuntimeResult:
    """Time the trunk in each of ``runtimes`` (torch always included: the reference) for each of ``models``
    ('NAME:WINDOW', default: the registry's :func:`~sam3_cradio.registry.speed_models`) at each size and
    dtype of ``cfg``, on the CPU. A size the window does not divide gives skipped rows naming the reason."""
    from .. import compat

    cfg = cfg.resolved()
    if torch.device(cfg.device).type != 'cpu':
        raise ValueError('the runtime comparison runs on the CPU (onnxruntime and OpenVINO CPU); use --device cpu')
    rts = _runtimes(runtimes)
    chosen = cradio_models(models, cfg.tiny, _WHY)
    compat.apply_cpu_shims()
    t_start = time.perf_counter()
    load_start = os.getloadavg()  # other processes on the machine: interleaving spreads, not removes, their noise
    result = RuntimeResult(meta={}, config={
        'runtimes': rts, 'models': [format_model(n, w) for n, w in chosen],
        'sizes': list(cfg.sizes), 'off_grid': cfg.off_grid, 'dtypes': list(cfg.dtypes), 'batch': cfg.batch,
        'repeats': cfg.repeats, 'warmup': cfg.warmup, 'seed': cfg.seed, 'threads': torch.get_num_threads(),
        'weights': 'random'})
    with tempfile.TemporaryDirectory(prefix='sam3_cradio_runtimes_') as tmp:
        for name, window in chosen:
            for size in cfg.sizes:
                try:
                    spec = resolve(name, window, size)
                except ValueError as e:
                    b = get_backbone(name)
                    if cfg.off_grid == 'nearest' and window is not None:  # as the encoder rows: the nearest size
                        spec = resolve(name, window, b.nearest_resolution(size, window))
                    else:
                        for dtype in cfg.dtypes:
                            for rt in rts:
                                result.rows.append(RuntimeRow(
                                    backbone=b.name, label=b.label, window=window or GLOBAL, size=size, input=size,
                                    batch=cfg.batch, dtype=dtype, runtime=rt, status='skipped',
                                    reason=f'{e} (--off-grid nearest runs it there)'))
                        continue
                _measure_level(spec, size, cfg, rts, Path(tmp), result)
                gc.collect()  # the level's models and sessions, before the next level builds its own
                for f in Path(tmp).iterdir():  # a level's file is not needed once it is timed
                    f.unlink()
    result.meta = {**timing_environment(torch.device('cpu')), 'seconds': time.perf_counter() - t_start,
                   'loadavg_start': list(load_start), 'loadavg_end': list(os.getloadavg())}
    return result



def format_runtimes(result: RuntimeResult) -> str:
    """Markdown: one line per model x size x dtype x runtime, with its speed-up over torch eager fp32 and its
    difference from torch fp32's output; then the exports."""
    c = result.config
    load = result.meta.get('loadavg_start')
    lines = [f'Trunk runtimes on the CPU ({c["threads"]} threads, batch {c["batch"]}, random weights), median of '
             f'{c["repeats"]} interleaved rounds' + (f' (1-min load average {load[0]:.1f} at the start)' if load else '')
             + ':', '',
             '| backbone | input | window | dtype | runtime | median (s) | p95 (s) | x torch fp32 | x torch same dtype | '
             'max abs vs torch fp32 | resident (MiB) | call peak (MiB) |', '|' + '---|' * 12]
    for r in result.rows:
        px = f'{r.input} (level {r.size})' if r.off_grid else f'{r.input}'
        head = f'| {r.label} | {px} | {format_window(r.window)} | {r.dtype} | {r.runtime} |'
        t = r.timing
        if not r.ok or t is None:
            lines.append(f'{head} skipped: {r.reason} |' + ' |' * 6)
            continue
        lines.append(f'{head} {t.median_s:.3g} | {t.p95_s:.3g} | '
                     f'{format_number(r.speedup_vs_torch_fp32, ".2f", "x")} | '
                     f'{format_number(r.speedup_vs_torch, ".2f", "x")} | '
                     f'{format_number(r.max_abs_vs_torch_fp32, ".2g")} | '
                     f'{format_number(r.resident_bytes and r.resident_bytes / 2 ** 20, ".0f")} | '
                     f'{t.peak_mem_bytes / 2 ** 20:.0f} |')
    lines += ['', 'resident: RSS growth over building the runtime\'s model and its first call (bf16 rows: what the bf16 '
              'path adds); call peak: the peak of one call above what was in use before it.']
    if result.exports:
        lines += ['', 'Exports (torch.onnx.export(dynamo=True), fixed size and window, dynamic batch): ' + '; '.join(
            f'{e.backbone} {e.size} px W={format_window(e.window)}: {e.seconds:.0f}s, {e.bytes / 2 ** 20:.0f} MiB, '
            f'opset {e.opset}' for e in result.exports)]
    settings = {r.runtime: {k: v for k, v in r.options.items() if k != 'precision'} for r in result.rows if r.options}
    if settings:
        lines += ['', 'Settings: ' + '; '.join(f'{rt}: {json.dumps(s, default=str)}' for rt, s in settings.items())]
    return '\n'.join(lines)


def run_runtimes_cli(cmd: BenchCommand) -> str:
    """``sam3-cradio bench --runtimes ...``: run, write ``<json stem>_runtimes.json`` and ``.md`` beside ``--json``;
    returns the text to print."""
    cfg = cmd.config
    json_path = Path(cmd.json).with_name(f'{Path(cmd.json).stem}_runtimes.json')
    rts, models = _runtimes(cmd.runtimes), cradio_models(cmd.models, cmd.config.tiny, _WHY)
    if cmd.dry_run:
        r = cfg.resolved()
        names = [f'{n}:{format_window(w) if w is not None else GLOBAL}' for n, w in models]
        return (f'trunk runtimes {rts} on {names} at {list(r.sizes)} px, dtypes {list(r.dtypes)}; would write '
                f'{json_path}')
    result = run_runtimes(cfg, rts, cmd.models)
    write_atomic(json_path, json.dumps(result.to_dict(), indent=1))
    md = json_path.with_suffix('.md')
    table = format_runtimes(result)
    write_atomic(md, table + '\n')
    return f'{table}\n\nwrote {json_path}, {md}'
