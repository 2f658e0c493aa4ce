"""``sam3-cradio bench``: speed and memory of C-RADIOv4 (global, ViTDet windows) against SAM3's PE: encoder rows
(default), trunk runtimes (``--runtimes``), whole folders (``--pipeline``) or exemplar boxes (``--exemplars``)."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..assets import CRADIO_TINY_DIR
from ..bench.config import OFF_GRID, RSS_METHODS, BenchCommand, BenchConfig
from ..options import DTYPES, TRUNK_RUNTIMES
from ..registry import speed_models
from .common import alias, refuse_unused, window_arg

__all__ = ['HELP', 'DESCRIPTION', 'add_arguments', 'run']

HELP = "speed and memory: C-RADIOv4 (global, ViTDet windows) vs SAM3's PE"
DESCRIPTION = 'Speed and memory benchmark (sam3_cradio/bench; docs/benchmark.md).'


def add_arguments(p: argparse.ArgumentParser) -> None:
    full, tiny = BenchConfig().resolved(), BenchConfig(tiny=True).resolved()

    def listed(values: Sequence[Any]) -> str:
        return ' '.join(map(str, values))

    p.add_argument('--backbone', nargs='+', default=None, metavar='NAME[:WINDOW]',
                   help=f'C-RADIO backbones: registry names or aliases (h, so400m, tiny, c-radio_v4-h, ...). Encoder '
                        f'rows: names (default: {listed(full.backbones)}; with --tiny: {listed(tiny.backbones)}), '
                        f'windows from --windows; --runtimes and --pipeline: NAME:WINDOW (default: '
                        f'{listed(speed_models())}; with --tiny: {listed(speed_models(tiny=True))}); --exemplars: '
                        'the first one')
    for old in ('--variants', '--runtime-models', '--pipeline-models'):
        alias(p, old, '--backbone', 'backbone', nargs='+')
    p.add_argument('--sizes', nargs='+', type=int, default=None, metavar='PX',
                   help=f'C-RADIO input sides in px, multiples of 16; PE runs at the same grid (size / 16 * 14) '
                        f'(default: {listed(full.sizes)}; with --tiny: {listed(tiny.sizes)})')
    p.add_argument('--windows', nargs='+', type=window_arg, default=None, metavar='global|N',
                   help=f"'global' and ViTDet windows in tokens; global is always added (default: the backbones' "
                        f'suggested windows at the largest size: {listed(full.windows)}; with --tiny: '
                        f'{listed(tiny.windows)})')
    p.add_argument('--no-pe', action='store_true', help="leave out SAM3's PE (no ratios to PE)")
    p.add_argument('--off-grid', choices=OFF_GRID, default='skip',
                   help='a window that does not divide the grid: skip it (default) or run it at the nearest size '
                        'it allows (no ratios for such rows)')
    p.add_argument('--dtype', nargs='+', choices=DTYPES, default=['fp32'],
                   help='fp32 and/or bf16 (autocast, CPU or CUDA); both: interleaved, with the bf16 speed-up. '
                        'bf16 also runs the fixture check (feature deviation from fp32)')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3, help='timed rounds')
    p.add_argument('--warmup', type=int, default=1, help='untimed rounds first')
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--compile', action='store_true', help='torch.compile the trunks (compile time stays in warm-up)')
    p.add_argument('--inference', action='store_true',
                   help='also time whole-image inference with a text prompt on full random-weight SAM3 models')
    p.add_argument('--text', default='cat', help='the text prompt for --inference')
    p.add_argument('--inference-threshold', type=float, default=1.0,
                   help='score threshold for --inference; 1.0 keeps no detection, so the random number of masks '
                        'random weights pass does not vary the time')
    p.add_argument('--mm-size', type=int, default=None,
                   help=f'torch.mm matrix side for the matmul peak (default {full.mm_size}; '
                        f'with --tiny: {tiny.mm_size})')
    p.add_argument('--rss-method', choices=RSS_METHODS, default='auto',
                   help='CPU peak memory: kernel VmHWM (Linux, exact) or a psutil sampler thread')
    p.add_argument('--fixture', type=Path, default=CRADIO_TINY_DIR,
                   help='C-RADIO tiny fixture folder for the bf16 deviation check (default: the one shipped with '
                        'the package)')
    p.add_argument('--op-profile', action='store_true',
                   help='profile one more call per encoder row (torch.profiler): time share and GFLOP/s of the '
                        'linear layers, attention and the rest, in a second table')
    p.add_argument('--no-tf32', action='store_true',
                   help='CUDA: true float32 matmuls (importing sam3 turns TF32 on for Ampere and newer)')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch decides)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--tiny', action='store_true', help='tiny models, sizes and windows: every row type in seconds')
    p.add_argument('--json', type=Path, default=Path('bench.json'),
                   help='output JSON; the table goes next to it (.md), the plot too (.png) unless --plot')
    p.add_argument('--plot', type=Path, default=None, help='output PNG (default: the JSON path with .png)')
    p.add_argument('--dry-run', action='store_true', help='list the rows that would be measured, build nothing')
    rt = p.add_argument_group('trunk runtimes (sam3_cradio/bench/runtimes.py; pip install "sam3-cradio[export]")')
    rt.add_argument('--runtimes', nargs='+', choices=TRUNK_RUNTIMES, default=None,
                    metavar='RUNTIME', help='instead of the encoder rows: the trunk exported to ONNX and timed in '
                    'these runtimes next to torch eager, interleaved, at --sizes and --dtype on the CPU; writes '
                    '<--json stem>_runtimes.json and .md')
    pl = p.add_argument_group('whole folders (sam3_cradio/bench/pipeline.py)')
    pl.add_argument('--pipeline', action='store_true',
                    help='instead of the encoder rows: time `sam3-cradio segment` over a folder with --text, end to '
                         'end (decoding, model, files), for PE and the --backbone models at --sizes (default 1152 768), '
                         '--dtype and --pipeline-batches; writes <--json stem>_pipeline.json, .md and .png')
    pl.add_argument('--pipeline-runtimes', nargs='+', choices=TRUNK_RUNTIMES,
                    default=['torch'], metavar='RUNTIME',
                    help='where the C-RADIO trunks run: torch (default) and/or exported to onnxruntime / openvino '
                         '(as segment --trunk-runtime; a temporary ONNX file per model and size)')
    pl.add_argument('--pipeline-batches', nargs='+', type=int, default=[1, 4], metavar='N',
                    help='images per trunk pass (default: 1 4)')
    pl.add_argument('--pipeline-images', type=int, default=16, metavar='N',
                    help='photos to make from the package\'s examples (default 16)')
    pl.add_argument('--pipeline-image-size', nargs=2, type=int, default=[1200, 1600], metavar=('H', 'W'),
                    help='their size (default 1200 1600)')
    pl.add_argument('--pipeline-folder', type=Path, default=None, metavar='DIR',
                    help='segment this folder of images instead of made photos')
    pl.add_argument('--pipeline-workers', type=int, default=None, metavar='N',
                    help='decoding processes (default: as segment, CPUs - 1, at most 4)')
    pl.add_argument('--pipeline-threshold', type=float, default=0.5, metavar='T',
                    help='detection score threshold (default 0.5, as segment; the detections/image column says '
                         'how many masks the random weights left to post-process)')
    pl.add_argument('--pipeline-rounds', type=int, default=1, metavar='N',
                    help='times each model runs over the folder, in turn with the others (default 1)')
    ex = p.add_argument_group('exemplar boxes (sam3_cradio/bench/exemplars.py)')
    ex.add_argument('--exemplars', action='store_true',
                    help='instead of the encoder rows: time predict_boxes with --exemplar-counts boxes (one prompt, '
                         'one decoder run) against sam3\'s add_geometric_prompt loop (a decoder run per box) on the '
                         'first --backbone; writes <--json stem>_exemplars.json and .md')
    ex.add_argument('--exemplar-counts', nargs='+', type=int, default=[1, 10, 100], metavar='N',
                    help='numbers of boxes (default: 1 10 100)')
    ex.add_argument('--exemplar-baseline-max', type=int, default=10, metavar='N',
                    help='time sam3\'s loop up to this many boxes (default 10; it decodes once per box)')



# The options each mode reads beyond the common ones (--json, --dry-run, --threads, --tiny, --seed, --device):
# any other option given with a mode is refused, not ignored.
_ENCODER = {'backbone', 'sizes', 'windows', 'no_pe', 'off_grid', 'dtype', 'batch', 'repeats', 'warmup', 'compile',
            'inference', 'text', 'inference_threshold', 'mm_size', 'rss_method', 'fixture', 'op_profile', 'no_tf32',
            'plot'}
_MODES = {
    'runtimes': {'runtimes', 'backbone', 'sizes', 'off_grid', 'dtype', 'batch', 'repeats', 'warmup', 'rss_method'},
    'pipeline': {'pipeline', 'backbone', 'sizes', 'no_pe', 'dtype', 'repeats', 'warmup', 'pipeline_runtimes',
                 'pipeline_batches', 'pipeline_images', 'pipeline_image_size', 'pipeline_folder', 'pipeline_workers',
                 'pipeline_threshold', 'pipeline_rounds'},
    'exemplars': {'exemplars', 'backbone', 'dtype', 'repeats', 'warmup', 'rss_method', 'exemplar_counts',
                  'exemplar_baseline_max'},
}
_COMMON = {'json', 'dry_run', 'threads', 'tiny', 'seed', 'device'}


def _mode(a: argparse.Namespace) -> str:
    chosen = [m for m in _MODES if getattr(a, m)]
    if len(chosen) > 1:
        raise ValueError(f'choose one mode: {" or ".join("--" + m for m in chosen)}')
    return chosen[0] if chosen else 'encoder'


def _config(a: argparse.Namespace, backbones: Sequence[str] | None) -> BenchConfig:
    return BenchConfig(
        backbones=backbones, sizes=a.sizes, windows=a.windows, pe=not a.no_pe, dtypes=tuple(a.dtype),
        batch=a.batch, repeats=a.repeats, warmup=a.warmup, device=a.device, compile=a.compile,
        inference=a.inference, text=a.text, inference_threshold=a.inference_threshold, mm_size=a.mm_size,
        off_grid=a.off_grid, rss_method=a.rss_method, fixture=a.fixture, seed=a.seed, tiny=a.tiny,
        tf32=False if a.no_tf32 else None, op_profile=a.op_profile)


def command(a: argparse.Namespace) -> BenchCommand:
    """The checked :class:`BenchCommand` of the parsed options: an option the chosen mode does not read is an
    error naming it."""
    mode = _mode(a)
    used = _ENCODER if mode == 'encoder' else _MODES[mode]
    refuse_unused(a, {x.dest for x in a._parser._actions} - used - _COMMON,
                  'the encoder rows' if mode == 'encoder' else f'--{mode}')
    models = a.backbone
    backbones = None
    if mode == 'encoder' and models:
        windowed = [m for m in models if ':' in m]
        if windowed:
            raise ValueError(f'--backbone {windowed[0]}: the encoder rows take names; give their windows with '
                             '--windows')
        backbones = models
    elif mode == 'exemplars' and models:
        backbones = [models[0].partition(':')[0]]
    return BenchCommand(
        _config(a, backbones), json=a.json, plot=a.plot, dry_run=a.dry_run, models=models if mode in (
            'runtimes', 'pipeline') else None, runtimes=a.runtimes, pipeline=a.pipeline,
        pipeline_runtimes=a.pipeline_runtimes, pipeline_batches=a.pipeline_batches, pipeline_images=a.pipeline_images,
        pipeline_image_size=tuple(a.pipeline_image_size), pipeline_folder=a.pipeline_folder,
        pipeline_workers=a.pipeline_workers, pipeline_threshold=a.pipeline_threshold,
        pipeline_rounds=a.pipeline_rounds, exemplars=a.exemplars, exemplar_counts=a.exemplar_counts,
        exemplar_baseline_max=a.exemplar_baseline_max)


def run(a: argparse.Namespace) -> int:
    import torch

    from ..bench.runner import run_cli

    cmd = command(a)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(run_cli(cmd))
    return 0
