"""The run: build the models level by level, time them interleaved, fill the rows; and the command's entry."""
from __future__ import annotations

import copy
import gc
import logging
import time
from pathlib import Path
from typing import Any

import torch

from ..build import DTYPES
from ..registry import Window, format_window, window_tokens
from .config import BenchCommand, BenchConfig
from .fixture import bf16_fixture_check
from .measure import TimedCall, count_flops, interleave, matmul_throughput, op_profile, timing_environment
from .models import compiled, cradio_trunk, num_params, pe_built_layout, pe_trunk, sam3_model, synthetic_image
from .plan import plan_rows
from .report import format_plan, format_table, pe_padding_notes, write_outputs
from .result import BenchResult, MatmulReport
from .rows import EncoderResult, InferenceResult, Row, add_ratios

_logger = logging.getLogger(__name__)

__all__ = ['run_benchmark', 'run_cli']


def _name(what: str, r: Row) -> str:
    px = r.input[0] if r.input is not None else '-'
    return f'{what} {r.backbone} {px} px W={format_window(r.window)}'


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def _encoder_phase(cfg: BenchConfig, device: torch.device, rows: list[Row]) -> None:
    """Per size level: build PE at the level's grid (C-RADIO trunks are built once: their input size is free),
    count FLOPs (fake tensors), then time every row of the level interleaved."""
    pe = cfg.pe_backbone()
    cradio: dict[str, torch.nn.Module] = {}
    for b in cfg.cradio_backbones():
        torch.manual_seed(cfg.seed)
        _logger.info('building %s (random weights)', b.label)
        cradio[b.name] = cradio_trunk(b, device)
    patch = cfg.patch_size()
    for size in cfg.sizes:
        level_rows = [r for r in rows if r.size == size and r.ok]
        modules = dict(cradio)
        if pe is not None:
            torch.manual_seed(cfg.seed)
            _logger.info('building %s at %d px (random weights)', pe.label, size // patch * pe.patch_size)
            modules[pe.name] = pe_trunk(pe, size // patch, device)
        # bf16 rows run what `--dtype bf16` gives users: a copy with bf16 weights (cast once), under bf16 autocast
        by_dtype = {'fp32': modules}
        if 'bf16' in cfg.dtypes:
            by_dtype['bf16'] = {name: copy.deepcopy(m).to(torch.bfloat16) for name, m in modules.items()}
        fns = {(dt, name): compiled(m, cfg.compile) for dt, ms in by_dtype.items() for name, m in ms.items()}
        inputs: dict[tuple[int, int], torch.Tensor] = {}
        flops: dict[tuple[str, Window, tuple[int, int]], tuple[int, dict[str, int]]] = {}
        calls: list[tuple[Row, TimedCall]] = []
        for r in level_rows:
            m, hw = by_dtype[r.dtype][r.backbone], r.input
            if hw is None:
                raise RuntimeError(f'{_name("encoder", r)}: a measured row has no input size')
            if hw not in inputs:  # SAM3's normalisation: [-1, 1]
                gen = torch.Generator(device='cpu').manual_seed(cfg.seed)
                inputs[hw] = (torch.rand(cfg.batch, 3, *hw, generator=gen) * 2 - 1).to(device)
            x = inputs[hw]
            if r.kind == 'pe':  # what was built, against what was planned from the registry and config
                built = pe_built_layout(m)
                if built.window != r.window:
                    raise RuntimeError(f'{r.backbone} was built with window {built.window}, the registry says '
                                       f'{r.window}')
                r.windowed_blocks, r.global_blocks = built.windowed_blocks, built.global_blocks
            else:
                m.encoder.set_window_size(window_tokens(r.window))
                r.global_blocks = len(m.encoder.global_blocks)
                r.windowed_blocks = m.encoder.arch.depth - r.global_blocks
            r.params = num_params(m)
            key = (r.backbone, r.window, hw)
            if key not in flops:  # FLOPs do not depend on the dtype
                flops[key] = count_flops(m, x)
            r.flops, r.flops_by_op = flops[key]

            def prepare(m: torch.nn.Module = m, r: Row = r) -> None:
                if r.kind == 'cradio':
                    m.encoder.set_window_size(window_tokens(r.window))

            call = TimedCall(_name('encoder', r), prepare, lambda f=fns[r.dtype, r.backbone], x=x: f(x), r.dtype)
            calls.append((r, call))
        interleave([c for _, c in calls], device, cfg.repeats, cfg.warmup, cfg.rss_method)
        for r, c in calls:
            stats = c.stats()
            r.encoder = EncoderResult(**stats, gflops_per_s=(r.flops or 0) / stats['median_s'] / 1e9)
            if cfg.op_profile:  # one more call, after the timed ones: the profiler's overhead stays out of them
                c.prepare()
                r.encoder.ops = op_profile(c.call, device, r.dtype, r.flops_by_op or {})
        del fns, modules, by_dtype, inputs, calls
        _free(device)
    del cradio
    _free(device)


def _inference_phase(cfg: BenchConfig, device: torch.device, rows: list[Row]) -> None:
    """Per size level: build full SAM3 image models at the level's grid and time ``set_image`` +
    ``predict_text`` on one synthetic image, interleaved."""
    from ..predictor import Sam3ImagePredictor

    image = synthetic_image(cfg.image_hw, cfg.seed)
    pe = cfg.pe_backbone()
    backbones = ([pe] if pe is not None else []) + cfg.cradio_backbones()
    patch = cfg.patch_size()
    for size in cfg.sizes:
        grid = size // patch
        predictors = {}
        for b in backbones:
            for dt in cfg.dtypes:  # the same seed: the same weights, bf16 trunk weights for the bf16 rows
                torch.manual_seed(cfg.seed)
                _logger.info('building SAM3 on %s at %d px, %s (random weights)', b.label, grid * b.patch_size, dt)
                model = sam3_model(b, grid, device, dtype=dt)
                if cfg.compile:
                    model.backbone.vision_backbone.trunk.compile()
                # the timing enters the row's autocast itself
                predictors[dt, b.name] = Sam3ImagePredictor(model, confidence_threshold=cfg.inference_threshold,
                                                            autocast=False)
        calls: list[tuple[Row, TimedCall]] = []
        for r in (r for r in rows if r.size == size and r.ok):
            if r.off_grid:
                r.inference_skipped = 'the SAM3 model runs at the grid size, which this window does not divide'
                continue
            pred = predictors[r.dtype, r.backbone]
            trunk = pred.model.backbone.vision_backbone.trunk

            def prepare(trunk: torch.nn.Module = trunk, r: Row = r) -> None:
                if r.kind == 'cradio':
                    trunk.encoder.set_window_size(window_tokens(r.window))

            def call(pred: Sam3ImagePredictor = pred) -> Any:
                pred.set_image(image)
                return pred.predict_text(cfg.text)

            calls.append((r, TimedCall(_name('inference', r), prepare, call, r.dtype)))
        interleave([c for _, c in calls], device, cfg.repeats, cfg.warmup, cfg.rss_method)
        for r, c in calls:
            r.inference = InferenceResult(
                **c.stats(), params=num_params(predictors[r.dtype, r.backbone].model), text=cfg.text,
                image_hw=cfg.image_hw, confidence_threshold=cfg.inference_threshold)
        del predictors, calls
        _free(device)


def run_benchmark(cfg: BenchConfig) -> BenchResult:
    """Run everything ``cfg`` asks for.

    Rows come in the order of :func:`~sam3_cradio.bench.plan.plan_rows` (size level, dtype, PE, then each C-RADIO
    backbone's windows), one per backbone x window x size x dtype, skipped rows included.
    """
    from .. import compat

    cfg = cfg.resolved()
    device = torch.device(cfg.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError('device cuda was asked for but torch sees no CUDA device; use --device cpu')
    compat.apply_cpu_shims()  # imports sam3, whose model_builder turns TF32 on for Ampere+ GPUs: before the matmuls
    if device.type == 'cuda' and cfg.tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    t_start = time.perf_counter()
    mm_size = int(cfg.mm_size or 0)
    _logger.info('matmul peak: torch.mm %dx%d on %s', mm_size, mm_size, device)
    before = {d: matmul_throughput(device, dt, mm_size) for d, dt in DTYPES.items()}
    rows = plan_rows(cfg)
    _encoder_phase(cfg, device, rows)
    if cfg.inference:
        _inference_phase(cfg, device, rows)
    matmul = MatmulReport(before=before, after={d: matmul_throughput(device, dt, mm_size) for d, dt in DTYPES.items()})
    peaks = matmul.peak_gflops
    for r in rows:  # fractions of the best matmul seen in the run (before or after)
        if r.encoder is not None:
            r.encoder.fraction_of_mm = {d: r.encoder.gflops_per_s / peak for d, peak in peaks.items()}
            for op in (r.encoder.ops or {}).values():
                op['fraction_of_mm'] = op['gflops_per_s'] / peaks[r.dtype]
    add_ratios(rows)
    result = BenchResult(meta={}, config=cfg, matmul=matmul, rows=rows, notes=pe_padding_notes(rows))
    if 'bf16' in cfg.dtypes:
        if cfg.fixture is not None and Path(cfg.fixture).is_dir():
            result.bf16_fixture = bf16_fixture_check(Path(cfg.fixture), device, repeats=max(cfg.repeats, 3))
        else:
            result.bf16_fixture_skipped = (f'fixture folder {cfg.fixture} not found (pass --fixture with a '
                                           f'cradio_tiny fixture folder)')
    result.meta = {**timing_environment(device), 'seconds': time.perf_counter() - t_start}
    return result


def run_cli(cmd: BenchCommand) -> str:
    """Run what ``cmd`` describes (``dry_run``: only plan it), write the files; returns the text to print: the
    table, the notes and the paths written."""
    if cmd.exemplars:
        from .exemplars import run_exemplars_cli

        return run_exemplars_cli(cmd)
    if cmd.pipeline:
        from .pipeline import run_pipeline_cli

        return run_pipeline_cli(cmd)
    if cmd.runtimes:
        from .runtimes import run_runtimes_cli

        return run_runtimes_cli(cmd)
    cfg = cmd.config
    if cmd.dry_run:
        rows = plan_rows(cfg)
        return f'{format_plan(rows)}\n\n{sum(r.ok for r in rows)} rows to measure'
    result = run_benchmark(cfg)
    paths = write_outputs(result, cmd.json, cmd.plot)
    return f"{format_table(result)}\n\nwrote {paths['json']}, {paths['markdown']}, {paths['plot']}"
