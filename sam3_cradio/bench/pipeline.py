"""Whole folders, end to end: ``sam3-cradio bench --pipeline`` runs ``sam3-cradio segment``'s job
(:func:`~sam3_cradio.jobs.segment_to_files`) over a folder of photos with a text prompt, for SAM3's PE and each
C-RADIO model, at batch 1 and 4, per size and dtype, and reports images/s and the share of the time spent outside
the model.

What is timed is the job as users run it, from the model built to the last file written: JPEG decoding and
resizing in DataLoader workers, the trunk over a batch, SAM3's decoder per image, the results' RLE encoding, the
records and the output files (``coco``, ``json``, ``png`` by default). The job's own clock
(:class:`~sam3_cradio.jobs.segment.JobTiming`, ``summary.json`` ``metrics.timing``) splits it into the model (the
trunk and neck, the decoder: ``Sam3Result.timings``) and everything else. Model building is not timed.

``--pipeline-runtimes torch openvino`` adds rows where the C-RADIO trunk runs exported (``sam3-cradio export``,
a temporary ONNX file per model and size) in onnxruntime or OpenVINO, as ``segment --trunk-runtime`` runs it.

Weights are random (nothing is downloaded). The folder is ``--pipeline-folder`` or, by default, ``--pipeline-images``
JPEG photos of ``--pipeline-image-size`` made from the photos shipped with the package (crops, flips, colour
changes). The models of one size, dtype and batch run one after the other in one process, PE first, ``--pipeline-
rounds`` times in turn, so that machine noise falls on all of them alike.

    sam3-cradio bench --pipeline --tiny                                   # seconds
    sam3-cradio bench --pipeline --dtype fp32 bf16 --json docs/bench_cpu.json   # writes bench_cpu_pipeline.*
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import write_atomic
from ..registry import GLOBAL, Window, format_model, format_window, get_backbone, resolve
from ..reporting import format_number
from .config import BenchCommand, BenchConfig, cradio_models
from .measure import timing_environment

__all__ = ['PIPELINE_SIZES', 'PIPELINE_BATCHES', 'PIPELINE_FORMATS',
           'PipelineRow', 'PipelineResult', 'make_photo_folder', 'run_pipeline', 'format_pipeline', 'plot_pipeline',
           'run_pipeline_cli']

_logger = logging.getLogger(__name__)

_WHY = ('every row is compared with it; list C-RADIO models (NAME:WINDOW), and --no-pe to leave PE '
        'out')

# 768 px is a 48 x 48 grid: both windows divide it, and PE (672 px) needs no padding for its 24-token windows
PIPELINE_SIZES = (1152, 768)
PIPELINE_BATCHES = (1, 4)
PIPELINE_FORMATS = ('coco', 'json', 'png')


@dataclass(kw_only=True)
class PipelineRow:
    """One model at one size level, dtype and batch: the job over the whole folder.

    Attributes:
        size: the size level (C-RADIO side in px); ``input`` the side this model ran at (PE: the same grid at
            its patch size), ``grid`` the token grid.
        images: images segmented per round; ``images_per_s`` their number over the wall time (median over
            rounds), ``rounds_images_per_s`` every round's.
        seconds, model_seconds, encoder_seconds, decoder_seconds, writing_seconds: the round with the median
            throughput, from the job's clock.
        outside_model_share: the share of ``seconds`` not spent in the model (reading, conversion, records, files).
        detections_per_image: what the random weights found above the threshold (post-processing grows with it).
        runtime: where the trunk ran: 'torch', or an exported trunk in 'onnxruntime' / 'openvino' (PE: torch).
        ratio_to_pe: images/s over PE's at the same size, dtype and batch; ``speedup_vs_fp32`` over the same
            model and runtime's fp32 row (bf16 rows); ``speedup_vs_batch1`` over its batch-1 row.
    """
    backbone: str
    label: str
    window: Window
    size: int
    input: int
    grid: int
    dtype: str
    batch: int
    runtime: str = 'torch'
    images: int = 0
    status: str = 'ok'
    reason: str | None = None
    images_per_s: float | None = None
    rounds_images_per_s: list[float] = field(default_factory=list)
    seconds: float | None = None
    model_seconds: float | None = None
    encoder_seconds: float | None = None
    decoder_seconds: float | None = None
    writing_seconds: float | None = None
    outside_model_share: float | None = None
    detections_per_image: float | None = None
    ratio_to_pe: float | None = None
    speedup_vs_fp32: float | None = None
    speedup_vs_batch1: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == 'ok'

    @property
    def is_pe(self) -> bool:
        return not get_backbone(self.backbone).is_cradio


@dataclass(kw_only=True)
class PipelineResult:
    meta: dict[str, Any]
    config: dict[str, Any]
    rows: list[PipelineRow] = field(default_factory=list)

    def row(self, backbone: str, size: int, dtype: str, batch: int, runtime: str = 'torch') -> PipelineRow | None:
        key = (backbone, runtime, size, dtype, batch)
        return next((r for r in self.rows if _key(r) == key), None)

    def to_dict(self) -> dict[str, Any]:
        return {'meta': self.meta, 'config': self.config, 'rows': [asdict(r) for r in self.rows]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineResult:
        return cls(meta=d['meta'], config=d['config'], rows=[PipelineRow(**r) for r in d['rows']])


def make_photo_folder(folder: Path, n: int, hw: tuple[int, int] = (1200, 1600), seed: int = 0) -> list[Path]:
    """Write ``n`` distinct JPEG photos of ``hw`` (H, W) into ``folder``, made from the package's photos (a random
    crop of at least half of each side, a flip, a colour change), so that decoding and resizing cost what photos
    cost. Returns their paths."""
    from PIL import Image, ImageEnhance

    from ..assets import EXAMPLE_IMAGES_DIR, example_images

    sources = [Image.open(p).convert('RGB') for p in example_images()]
    if not sources:
        raise FileNotFoundError(f'no photos in {EXAMPLE_IMAGES_DIR}; reinstall sam3-cradio')
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        src = sources[i % len(sources)]
        w, h = src.size
        cw, ch = (int(s * rng.uniform(0.5, 1.0)) for s in (w, h))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((hw[1], hw[0]), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
        path = folder / f'photo_{i:03d}.jpg'
        img.save(path, quality=90)
        paths.append(path)
    return paths


def _key(r: PipelineRow) -> tuple[str, str, int, str, int]:
    return r.backbone, r.runtime, r.size, r.dtype, r.batch



def _run_job(folder: Path, out: Path, row: PipelineRow, cfg: BenchConfig, workers: int | None,
             threshold: float, formats: Sequence[str], trunk_model: Path | None) -> dict[str, Any]:
    """One round: the segment job over the folder into a fresh ``out``; returns its ``metrics``."""
    from ..jobs import segment_to_files
    from ..options import ModelOptions

    model = ModelOptions.make(
        row.backbone, None if row.is_pe else row.window, row.input, pretrained=False, device=cfg.device,
        dtype=row.dtype, trunk_runtime=None if row.runtime == 'torch' else row.runtime, trunk_model=trunk_model,
        seed=cfg.seed)
    summary = segment_to_files(
        folder, out, text=cfg.text, formats=formats, threshold=threshold, batch=row.batch, workers=workers,
        model=model, progress=False, echo=lambda s: None)
    if summary is None:  # a torchrun rank other than 0
        raise RuntimeError('run the pipeline benchmark in one process, not under torchrun')
    return summary['metrics']


def run_pipeline(cfg: BenchConfig, models: Sequence[str] | None = None, batches: Sequence[int] = PIPELINE_BATCHES,
                 *, runtimes: Sequence[str] = ('torch',), images: int = 16, folder: Path | None = None,
                 image_hw: tuple[int, int] = (1200, 1600), workers: int | None = None, threshold: float = 0.5,
                 rounds: int = 1, formats: Sequence[str] = PIPELINE_FORMATS,
                 on_progress: Callable[[PipelineResult], Any] | None = None) -> PipelineResult:
    """Time the segment job for PE (unless ``cfg.pe`` is False) and each of ``models`` ('NAME:WINDOW'; default:
    the registry's :func:`~sam3_cradio.registry.speed_models`) at each of ``cfg``'s sizes and dtypes and each
    batch size, over ``folder`` or ``images`` photos made by :func:`make_photo_folder`. C-RADIO trunks run in each
    of ``runtimes`` ('torch', or exported to 'onnxruntime' / 'openvino'). ``on_progress`` gets the result so far
    after every job (a long run can save what it has)."""
    from ..export.runtimes import runtime_unavailable
    from ..jobs.formats import check_formats
    from ..jobs.inputs import collect_images

    cfg = cfg.resolved()
    formats = check_formats(formats)
    batches = list(dict.fromkeys(int(b) for b in batches))
    if not batches or min(batches) < 1 or rounds < 1 or (folder is None and images < 1):
        raise ValueError(f'need batch sizes >= 1, rounds >= 1 and images >= 1, got {batches}, {rounds} and {images}')
    chosen = cradio_models(models, cfg.tiny, _WHY)
    runtimes = list(dict.fromkeys(runtimes))
    unavailable = {rt: runtime_unavailable(rt) for rt in runtimes}
    if unavailable.get('torch') is not None or not runtimes:
        raise ValueError(f'runtimes must be among torch, onnxruntime, openvino; got {runtimes}')
    pe = cfg.pe_backbone()
    patch = get_backbone(chosen[0][0]).patch_size
    planned: list[PipelineRow] = []
    for size in cfg.sizes:
        grid = size // patch
        for dtype in cfg.dtypes:
            for batch in batches:
                if pe is not None:
                    planned.append(PipelineRow(backbone=pe.name, label=pe.label, window=pe.fixed_window, size=size,
                                               input=grid * pe.patch_size, grid=grid, dtype=dtype, batch=batch))
                for name, window in chosen:
                    b = get_backbone(name)
                    for rt in runtimes:
                        row = PipelineRow(backbone=name, label=b.label, window=window or GLOBAL, size=size,
                                          input=grid * b.patch_size, grid=grid, dtype=dtype, batch=batch, runtime=rt)
                        try:  # the registry's check, before anything runs
                            resolve(name, window, row.input)
                        except ValueError as e:
                            row.status, row.reason = 'skipped', str(e)
                        if row.ok and unavailable[rt] is not None:
                            row.status, row.reason = 'skipped', unavailable[rt]
                        planned.append(row)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix='sam3_cradio_pipeline_') as tmp:
        if folder is None:
            source = f'{images} photos of {image_hw[1]}x{image_hw[0]} px made by make_photo_folder'
            folder = Path(tmp) / 'photos'
            make_photo_folder(folder, images, image_hw, cfg.seed)
        else:
            source = str(folder)
        n_images = len(collect_images(folder).paths)
        config = {'models': [format_model(n, w) for n, w in chosen],
                  'reference': pe.name if pe else None, 'sizes': list(cfg.sizes), 'dtypes': list(cfg.dtypes),
                  'runtimes': runtimes, 'batches': batches, 'rounds': rounds, 'images': n_images, 'folder': source,
                  'text': cfg.text, 'threshold': threshold, 'formats': list(formats), 'workers': workers,
                  'device': cfg.device, 'seed': cfg.seed, 'threads': torch.get_num_threads(), 'weights': 'random'}
        runs = 0
        exported: dict[tuple[str, int], Path] = {}  # (model, px) -> ONNX file, shared by the runtimes and dtypes
        measured: dict[tuple[str, str, int, str, int], list[dict[str, Any]]] = {}  # a row's rounds: job metrics
        for level in _groups(planned):
            for _ in range(rounds):
                for row in (r for r in level if r.ok):
                    _logger.info('pipeline: %s W=%s at %d px, %s, batch %d', row.label, format_window(row.window),
                                 row.input, row.dtype, row.batch)
                    runs += 1
                    onnx = None if row.runtime == 'torch' else _exported(row, cfg, Path(tmp), exported)
                    m = _run_job(folder, Path(tmp) / f'run_{runs}', row, cfg, workers, threshold, formats, onnx)
                    rounds_done = measured.setdefault(_key(row), [])
                    rounds_done.append(m)
                    _fill(row, rounds_done)
                    if on_progress is not None:
                        on_progress(_result(planned, config, cfg, t_start, load_start))
    return _result(planned, config, cfg, t_start, load_start)


def _fill(row: PipelineRow, rounds: list[dict[str, Any]]) -> None:
    """The row's numbers from its rounds' job metrics: images/s their median, the rest from the median round."""
    rates = [m['timing']['images_per_s'] for m in rounds]
    median = sorted(rounds, key=lambda m: m['timing']['images_per_s'])[(len(rounds) - 1) // 2]
    t = median['timing']
    row.rounds_images_per_s, row.images_per_s, row.images = rates, float(np.median(rates)), t['images']
    row.seconds, row.model_seconds = t['seconds'], t['model_seconds']
    row.encoder_seconds, row.decoder_seconds = t['encoder_seconds'], t['decoder_seconds']
    row.writing_seconds, row.outside_model_share = t['writing_seconds'], t['outside_model_share']
    row.detections_per_image = median['num_detections'] / max(median['num_segmented'], 1)


def _result(rows: list[PipelineRow], config: dict[str, Any], cfg: BenchConfig, t_start: float,
            load_start: tuple[float, ...]) -> PipelineResult:
    _add_ratios(rows)
    meta = {**timing_environment(torch.device(cfg.device)), 'seconds': time.perf_counter() - t_start,
            'loadavg_start': list(load_start), 'loadavg_end': list(os.getloadavg())}
    return PipelineResult(meta=meta, config=config, rows=rows)


def _exported(row: PipelineRow, cfg: BenchConfig, tmp: Path, cache: dict[tuple[str, int], Path]) -> Path:
    """The row's trunk exported to ONNX once (random weights of the same seed as the job builds), as
    ``sam3-cradio export`` writes it; a size's files are dropped when the next size needs its own."""
    from ..export.export import export_trunk

    key = (row.backbone, row.input)
    if key not in cache:
        for old in [k for k in cache if k[1] != row.input]:
            path = cache.pop(old)
            for f in path.parent.glob(f'{path.name}*'):  # the .onnx and its .onnx.data
                f.unlink()
        path = tmp / 'onnx' / f'{row.backbone}_{row.input}.onnx'
        path.parent.mkdir(exist_ok=True)
        _logger.info('exporting %s W=%s at %d px to ONNX', row.label, format_window(row.window), row.input)
        export_trunk(path, row.backbone, row.window, row.input, pretrained=False, seed=cfg.seed)
        cache[key] = path
    return cache[key]


def _groups(rows: list[PipelineRow]) -> list[list[PipelineRow]]:
    """Rows of one size, dtype and batch: the models compared side by side."""
    groups: dict[tuple[int, str, int], list[PipelineRow]] = {}
    for r in rows:
        groups.setdefault((r.size, r.dtype, r.batch), []).append(r)
    return list(groups.values())


def _add_ratios(rows: list[PipelineRow]) -> None:
    measured = {_key(r): r for r in rows if r.images_per_s}
    for r in measured.values():
        pe = next((p for p in measured.values() if p.is_pe and (p.size, p.dtype, p.batch) == (r.size, r.dtype,
                                                                                                r.batch)), None)
        fp32 = measured.get((r.backbone, r.runtime, r.size, 'fp32', r.batch))
        b1 = measured.get((r.backbone, r.runtime, r.size, r.dtype, 1))
        r.ratio_to_pe = r.images_per_s / pe.images_per_s if pe else None
        r.speedup_vs_fp32 = r.images_per_s / fp32.images_per_s if fp32 and r.dtype != 'fp32' else None
        r.speedup_vs_batch1 = r.images_per_s / b1.images_per_s if b1 and r.batch != 1 else None



def format_pipeline(result: PipelineResult) -> str:
    """Markdown: one line per model x size x dtype x batch, with images/s, the ratios and the time outside the
    model."""
    c, load = result.config, result.meta.get('loadavg_start')
    lines = [f'`sam3-cradio segment` over {c["images"]} images ({c["folder"]}), text "{c["text"]}", threshold '
             f'{c["threshold"]}, formats {", ".join(c["formats"])}; {c["threads"]} threads, random weights'
             + (f', 1-min load average {load[0]:.1f} at the start' if load else '') + ':', '',
             '| backbone | input | window | trunk | dtype | batch | images/s | x PE | x fp32 | x batch 1 | s/image | '
             'model share | outside model | writing (s) | detections/image |', '|' + '---|' * 15]
    for r in result.rows:
        head = f'| {r.label} | {r.input} | {format_window(r.window)}{" (own)" if r.is_pe else ""} | {r.runtime} | ' \
               f'{r.dtype} | {r.batch} |'
        if not r.ok or not r.images_per_s:
            lines.append(f'{head} {f"skipped: {r.reason}" if not r.ok else "not run yet"} |' + ' |' * 8)
            continue
        share = r.outside_model_share
        lines.append(f'{head} {r.images_per_s:.3g} | {format_number(r.ratio_to_pe, ".2f", "x")} | '
                     f'{format_number(r.speedup_vs_fp32, ".2f", "x")} | '
                     f'{format_number(r.speedup_vs_batch1, ".2f", "x")} | {1 / r.images_per_s:.3g} | '
                     f'{format_number(None if share is None else 1 - share, ".1%")} | '
                     f'{format_number(share, ".1%")} | {format_number(r.writing_seconds, ".2f")} | '
                     f'{format_number(r.detections_per_image, ".1f")} |')
    lines += ['', 'images/s: images over the wall time from the model built to the last file written (median over '
              f'{c["rounds"]} round(s)); outside model: the share of that time not in the trunk, neck or decoder '
              '(waiting for decoded images, results to RLE, records, output files).']
    return '\n'.join(lines)


def plot_pipeline(result: PipelineResult, path: Path) -> Path:
    """PNG: images/s per model, grouped by dtype and batch, one panel per size level; PE's bars hatched, the
    ratio to PE over each C-RADIO bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in result.rows if r.images_per_s]
    sizes = list(dict.fromkeys(r.size for r in result.rows))
    fig = Figure(figsize=(6 * len(sizes), 4), layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    colors = ['0.6', 'tab:blue', 'tab:orange', 'tab:green', 'tab:red']
    for ax, size in zip(axes, sizes):
        at = [r for r in rows if r.size == size]
        groups = list(dict.fromkeys((r.dtype, r.batch) for r in at))
        models = list(dict.fromkeys((r.backbone, r.runtime, r.label, format_window(r.window)) for r in at))
        width = 0.8 / max(len(models), 1)
        for k, (name, runtime, label, window) in enumerate(models):
            xs, ys, ratios = [], [], []
            for g, (dtype, batch) in enumerate(groups):
                r = next((x for x in at if (x.backbone, x.runtime, x.dtype, x.batch) == (name, runtime, dtype, batch)),
                         None)
                if r is not None:
                    xs.append(g + (k - (len(models) - 1) / 2) * width)
                    ys.append(r.images_per_s)
                    ratios.append(r.ratio_to_pe)
            pe = not get_backbone(name).is_cradio
            bars = ax.bar(xs, ys, width, color=colors[k % len(colors)], hatch='//' if pe else None,
                          label=f'{label} W{window}' + ('' if runtime == 'torch' else f' ({runtime})'))
            if not pe:
                ax.bar_label(bars, [f'{q:.2f}x' if q else '' for q in ratios], fontsize=7)
        grid = next((r.grid for r in result.rows if r.size == size), size)
        ax.set_xticks(range(len(groups)), [f'{d}\nbatch {b}' for d, b in groups])
        ax.set_title(f'{grid}x{grid} grid (C-RADIO {size} px)')
        ax.set_ylabel('images/s (higher is better)')
        ax.grid(axis='y', alpha=0.3)
        ax.legend(fontsize=7)
    dev = result.meta.get('device', {})
    fig.suptitle(f'sam3-cradio segment over {result.config["images"]} images, {dev.get("name", "")} '
                 f'({dev.get("type", "")}); labels: x PE', fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def run_pipeline_cli(cmd: BenchCommand) -> str:
    """``sam3-cradio bench --pipeline ...``: run, write ``<json stem>_pipeline.json``, ``.md`` and ``.png`` beside
    ``--json``; returns the text to print."""
    cfg = cmd.config
    if cfg.sizes is None and not cfg.tiny:
        cfg = replace(cfg, sizes=PIPELINE_SIZES)
    json_path = Path(cmd.json).with_name(f'{Path(cmd.json).stem}_pipeline.json')
    models = cradio_models(cmd.models, cmd.config.tiny, _WHY)
    if cmd.dry_run:
        r = cfg.resolved()
        names = [f'{n}:{format_window(w) if w is not None else GLOBAL}' for n, w in models]
        return (f'segment pipeline: {"PE and " if r.pe else ""}{names} at {list(r.sizes)} px, dtypes '
                f'{list(r.dtypes)}, batches {cmd.pipeline_batches}; would write {json_path}')
    folder = Path(cmd.pipeline_folder) if cmd.pipeline_folder else None
    md = json_path.with_suffix('.md')

    def save(result: PipelineResult) -> str:  # after every job too: a long run keeps what it measured
        write_atomic(json_path, json.dumps(result.to_dict(), indent=1))
        table = format_pipeline(result)
        write_atomic(md, table + '\n')
        return table

    result = run_pipeline(cfg, cmd.models, cmd.pipeline_batches, runtimes=cmd.pipeline_runtimes,
                          images=cmd.pipeline_images, folder=folder,
                          image_hw=tuple(cmd.pipeline_image_size), workers=cmd.pipeline_workers,
                          threshold=cmd.pipeline_threshold, rounds=cmd.pipeline_rounds, on_progress=save)
    table = save(result)
    png = plot_pipeline(result, json_path.with_suffix('.png'))
    return f'{table}\n\nwrote {json_path}, {md}, {png}'
