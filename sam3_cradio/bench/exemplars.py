"""Exemplar boxes: what ``Sam3ImagePredictor.predict_boxes`` costs with 1, 10, 100 boxes, next to sam3's own
``Sam3Processor`` loop (``add_geometric_prompt`` per box, which runs the grounding decoder after every box).

``predict_boxes`` puts every box into one geometric prompt and decodes once, so its cost barely grows with the
number of boxes; the loop's grows with it. Both run on the same encoded image of one random-weight SAM3 model, in
one process, interleaved (:func:`~sam3_cradio.bench.measure.interleave`); the image encoder is not timed. The
confidence threshold is 1.0, so no mask is kept: the timings are the prompt encoding and the decoder, not the
mask upsampling a random number of detections would add (the loop would pay that after every box too).

    sam3-cradio bench --exemplars --tiny                    # seconds; writes bench_exemplars.json and .md
    sam3-cradio bench --exemplars --variants so400m --exemplar-counts 1 10 100 500
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import write_atomic
from ..reporting import format_number
from .config import BenchCommand, BenchConfig
from .measure import TimedCall, interleave, timing_environment
from .models import synthetic_image
from .rows import Measurement

__all__ = ['EXEMPLAR_COUNTS', 'BASELINE_MAX', 'METHODS', 'ExemplarRow', 'ExemplarResult', 'exemplar_boxes',
           'run_exemplars', 'format_exemplars', 'run_exemplars_cli']

_logger = logging.getLogger(__name__)

EXEMPLAR_COUNTS = (1, 10, 100)
BASELINE_MAX = 10  # sam3's loop decodes once per box: by default timed up to this many boxes (seconds in --tiny)
# 'one_prompt': predict_boxes, every box in one prompt, one decoder run; 'per_box': sam3's Sam3Processor loop
METHODS = ('one_prompt', 'per_box')


@dataclass(kw_only=True)
class ExemplarRow(Measurement):
    """One method at one number of boxes and one dtype.

    Attributes:
        boxes: exemplar boxes in the prompt.
        method: 'one_prompt' or 'per_box'.
        dtype: 'fp32' or 'bf16' (autocast).
        decoder_calls: grounding decoder runs per call, counted on an untimed call.
        ratio_to_one_box: this method's median over its own median with one box (the cost growth).
        ratio_to_one_prompt: per_box rows: their median over one_prompt's at the same boxes and dtype.
    """
    boxes: int
    method: str
    dtype: str
    decoder_calls: int
    ratio_to_one_box: float | None = None
    ratio_to_one_prompt: float | None = None


@dataclass(kw_only=True)
class ExemplarResult:
    meta: dict[str, Any]              # machine, versions, seconds
    config: dict[str, Any]            # backbone, counts, repeats, image size, ...
    rows: list[ExemplarRow] = field(default_factory=list)

    def row(self, method: str, boxes: int, dtype: str) -> ExemplarRow | None:
        return next((r for r in self.rows if (r.method, r.boxes, r.dtype) == (method, boxes, dtype)), None)

    def to_dict(self) -> dict[str, Any]:
        return {'meta': self.meta, 'config': self.config, 'rows': [asdict(r) for r in self.rows]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExemplarResult:
        return cls(meta=d['meta'], config=d['config'], rows=[ExemplarRow(**r) for r in d['rows']])


def exemplar_boxes(n: int, hw: tuple[int, int], seed: int = 0) -> list[list[float]]:
    """``n`` reproducible xyxy boxes inside an (H, W) image, 5-25 % of its sides, on whole pixels."""
    rng = np.random.default_rng(seed)
    h, w = hw
    bw, bh = rng.uniform(0.05, 0.25, n) * w, rng.uniform(0.05, 0.25, n) * h
    x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    return np.round(np.stack([x0, y0, x0 + bw, y0 + bh], axis=1)).tolist()


@contextmanager
def _count_decoder_calls(model: torch.nn.Module) -> Iterator[list[int]]:
    """Count ``model.forward_grounding`` calls inside the block (an instance attribute, removed afterwards)."""
    calls: list[int] = []
    original = model.forward_grounding

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    vars(model)['forward_grounding'] = counted
    try:
        yield calls
    finally:
        del vars(model)['forward_grounding']


def _sam3_loop(predictor: Any, boxes: Sequence[Sequence[float]]) -> Callable[[], Any]:
    """sam3's own way to prompt several boxes: ``Sam3Processor.add_geometric_prompt`` once per box."""
    h, w = predictor.original_size
    norm = [[(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h] for x0, y0, x1, y1 in boxes]

    def call() -> Any:
        state = predictor._require_image()
        processor = predictor.processor
        processor.reset_all_prompts(state)
        out = None
        for b in norm:
            out = processor.add_geometric_prompt(b, True, state)
        return out['scores']

    return call


def _check_counts(counts: Sequence[int], baseline_max: int) -> list[int]:
    """The distinct counts in order; raises unless they are positive and the baseline limit is >= 0."""
    out = sorted({int(n) for n in counts})
    if not out or out[0] < 1:
        raise ValueError(f'exemplar counts are positive numbers of boxes, got {list(counts)}')
    if baseline_max < 0:
        raise ValueError(f'--exemplar-baseline-max is a number of boxes >= 0, got {baseline_max}')
    return out


def run_exemplars(cfg: BenchConfig, counts: Sequence[int] = EXEMPLAR_COUNTS,
                  baseline_max: int = BASELINE_MAX) -> ExemplarResult:
    """Time ``predict_boxes`` at each of ``counts`` boxes and sam3's loop up to ``baseline_max`` boxes, per dtype
    of ``cfg``, on the first C-RADIO backbone of ``cfg`` (random weights) at its native size."""
    from .. import compat
    from ..build import build_sam3
    from ..predictor import Sam3ImagePredictor
    from ..registry import resolve

    cfg = cfg.resolved()
    counts = _check_counts(counts, baseline_max)
    device = torch.device(cfg.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError('device cuda was asked for but torch sees no CUDA device; use --device cpu')
    compat.apply_cpu_shims()
    t_start = time.perf_counter()
    backbone = cfg.cradio_backbones()[0]
    spec = resolve(backbone)
    torch.manual_seed(cfg.seed)
    _logger.info('building SAM3 on %s (random weights)', backbone.label)
    model = build_sam3(spec, mode='image', pretrained=False, interactive=False, device=device)
    predictor = Sam3ImagePredictor(model, confidence_threshold=1.0, autocast=False)
    image = synthetic_image(cfg.image_hw, cfg.seed)
    predictor.set_image(image)
    all_boxes = exemplar_boxes(max(counts), cfg.image_hw, cfg.seed)

    planned: list[tuple[dict[str, Any], TimedCall]] = []
    for dtype in cfg.dtypes:
        for n in counts:
            boxes = all_boxes[:n]
            fns = {'one_prompt': lambda b=boxes: predictor.predict_boxes(b).scores,
                   'per_box': _sam3_loop(predictor, boxes)}
            for method in METHODS:
                if method == 'per_box' and n > baseline_max:
                    continue
                with _count_decoder_calls(model) as decoded, torch.inference_mode():
                    fns[method]()
                key = {'boxes': n, 'method': method, 'dtype': dtype, 'decoder_calls': len(decoded)}
                planned.append((key, TimedCall(f'{method} {n} boxes', lambda: None, fns[method], dtype)))
    interleave([c for _, c in planned], device, cfg.repeats, cfg.warmup, cfg.rss_method)
    result = ExemplarResult(meta={}, config={
        'backbone': backbone.name, 'resolution': spec.resolution, 'counts': counts, 'baseline_max': baseline_max,
        'dtypes': list(cfg.dtypes), 'repeats': cfg.repeats, 'warmup': cfg.warmup, 'device': cfg.device,
        'image_hw': list(cfg.image_hw), 'confidence_threshold': 1.0, 'seed': cfg.seed},
        rows=[ExemplarRow(**key, **call.stats()) for key, call in planned])
    for r in result.rows:
        first = result.row(r.method, counts[0], r.dtype)
        if counts[0] == 1 and first is not None:
            r.ratio_to_one_box = r.median_s / first.median_s
        if r.method == 'per_box':
            one = result.row('one_prompt', r.boxes, r.dtype)
            r.ratio_to_one_prompt = r.median_s / one.median_s if one is not None else None
    result.meta = {**timing_environment(device), 'seconds': time.perf_counter() - t_start}
    return result


def format_exemplars(result: ExemplarResult) -> str:
    """Markdown: per number of boxes and dtype, both methods side by side with their growth over one box and the
    loop's time over one prompt's."""
    c = result.config
    lines = [f'Exemplar boxes on {c["backbone"]} ({c["resolution"]} px, random weights, image '
             f'{c["image_hw"][1]}x{c["image_hw"][0]}, encoder not timed), median of {c["repeats"]} rounds:', '',
             '| boxes | dtype | one prompt (s) | x 1 box | decoder runs | sam3 loop (s) | x 1 box | decoder runs | '
             'loop / one prompt |', '|' + '---|' * 9]
    for dtype in c['dtypes']:
        for n in c['counts']:
            one, loop = result.row('one_prompt', n, dtype), result.row('per_box', n, dtype)
            cells = [str(n), dtype]
            for r in (one, loop):
                cells += ([f'{r.median_s:.3g}', format_number(r.ratio_to_one_box, '.2f', 'x'), str(r.decoder_calls)]
                          if r is not None else ['-', '-', '-'])
            cells.append(format_number(loop.ratio_to_one_prompt if loop is not None else None, '.1f', 'x'))
            lines.append('| ' + ' | '.join(cells) + ' |')
    if any(n > c['baseline_max'] for n in c['counts']):
        lines += ['', f'The loop is timed up to {c["baseline_max"]} boxes (--exemplar-baseline-max).']
    return '\n'.join(lines)


def run_exemplars_cli(cmd: BenchCommand) -> str:
    """``sam3-cradio bench --exemplars``: run, write ``<json stem>_exemplars.json`` and ``.md`` beside ``--json``;
    returns the text to print."""
    cfg = cmd.config
    counts, baseline = _check_counts(cmd.exemplar_counts, cmd.exemplar_baseline_max), cmd.exemplar_baseline_max
    json_path = Path(cmd.json).with_name(f'{Path(cmd.json).stem}_exemplars.json')
    if cmd.dry_run:
        r = cfg.resolved()
        loop = [n for n in counts if n <= baseline]
        return (f'exemplar boxes on {r.backbones[0]}: predict_boxes with {counts} boxes, sam3\'s loop with {loop}, '
                f'dtypes {list(r.dtypes)}; would write {json_path}')
    result = run_exemplars(cfg, counts, baseline)
    write_atomic(json_path, json.dumps(result.to_dict(), indent=1))
    md = json_path.with_suffix('.md')
    table = format_exemplars(result)
    write_atomic(md, table + '\n')
    return f'{table}\n\nwrote {json_path}, {md}'
