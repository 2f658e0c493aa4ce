"""What a benchmark run measures (:class:`BenchConfig`) and the command-line options that describe it."""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..assets import CRADIO_TINY_DIR
from ..build import DTYPES  # the dtypes --dtype takes everywhere
from ..registry import BACKBONES, GLOBAL, Backbone, Window, get_backbone, parse_model, parse_window, speed_models

__all__ = ['BenchConfig', 'DTYPES', 'add_arguments', 'config_from_args', 'cradio_models']

OFF_GRID = ('skip', 'nearest')
RSS_METHODS = ('auto', 'vmhwm', 'sampler')


def _registered(cradio: bool, tiny: bool) -> list[Backbone]:
    """The C-RADIO (or PE) backbones of a mode: released ones for full size, random-weight ones for ``tiny``."""
    return [b for b in BACKBONES.values() if b.is_cradio == cradio and b.pretrained != tiny]


@dataclass
class BenchConfig:
    """What to run. :meth:`resolved` fills the mode's defaults from the registry and checks every field.

    Attributes:
        backbones: C-RADIO backbones (registry names or aliases: 'h', 'so400m', 'tiny'); default: the released
            ones (``tiny``: the random-weight ones).
        sizes: C-RADIO input sides in px (multiples of the patch size); each is a size level, a token grid that
            PE runs at too (``grid * 14`` px). Default: the reference PE's native grid and half of it (72 and 36:
            C-RADIO 1152 and 576 px, PE 1008 and 504; ``tiny``: 12 and 6).
        windows: 'global' and ViTDet windows in tokens (global is always added); default: each backbone's
            ``window_choices`` at the largest size. Windows that do not divide a smaller level's grid are skipped
            there (``off_grid='skip'``) or run at the nearest size they allow (``'nearest'``).
        reference: the PE backbone every row is compared with; default ``pe`` (``tiny``: ``pe_tiny``).
        pe: time the reference (False: no ratios to PE).
        tf32: CUDA only. None keeps what importing sam3 sets (TF32 on for Ampere and newer, as SAM3 runs); False
            gives true float32 matmuls for the fp32 rows and the fp32 ``torch.mm`` peak alike.
        fixture: the C-RADIO tiny fixture folder for the bf16 deviation check (run when bf16 is among ``dtypes``).
        op_profile: profile one more call of each encoder row and split its time into linear layers, attention
            and the rest (``EncoderResult.ops``).
    """
    backbones: Sequence[str] | None = None
    sizes: Sequence[int] | None = None
    windows: Sequence[Window | str] | None = None
    reference: str | None = None
    pe: bool = True
    dtypes: Sequence[str] = ('fp32',)
    batch: int = 1
    repeats: int = 3
    warmup: int = 1
    device: str = 'cpu'
    compile: bool = False
    inference: bool = False
    text: str = 'cat'
    inference_threshold: float = 1.0
    image_hw: tuple[int, int] = (768, 1024)
    mm_size: int | None = None
    off_grid: str = 'skip'
    rss_method: str = 'auto'
    fixture: Path | None = CRADIO_TINY_DIR
    seed: int = 0
    tiny: bool = False
    tf32: bool | None = None
    op_profile: bool = False

    def resolved(self) -> BenchConfig:
        """A copy with the mode's defaults filled in, names and windows in canonical form, every field checked."""
        c = replace(self)
        ref = get_backbone(c.reference) if c.reference is not None else _registered(False, c.tiny)[0]
        if ref.is_cradio:
            raise ValueError(f'the reference must be a PE backbone ({[b.name for b in _registered(False, c.tiny)]}), '
                             f'got {c.reference!r}')
        c.reference = ref.name
        backbones = [get_backbone(b) for b in c.backbones] if c.backbones is not None else _registered(True, c.tiny)
        if not backbones:
            raise ValueError('no C-RADIO backbone to benchmark; name at least one (h, so400m, tiny)')
        pe_given = [b.name for b in backbones if not b.is_cradio]
        if pe_given:
            raise ValueError(f'{pe_given} is the reference every row is compared with, not a benchmarked backbone; '
                             f'list C-RADIO backbones only (--no-pe leaves PE out)')
        c.backbones = tuple(dict.fromkeys(b.name for b in backbones))
        patches = {b.patch_size for b in backbones}
        if len(patches) > 1:
            raise ValueError(f'the C-RADIO backbones have different patch sizes {sorted(patches)}, so sizes would '
                             f'not be one token grid; benchmark them in separate runs')
        patch = patches.pop()
        c.sizes = tuple(c.sizes or (ref.grid * patch, ref.grid // 2 * patch))
        for s in c.sizes:
            if isinstance(s, bool) or not isinstance(s, int) or s <= 0:
                raise ValueError(f'sizes must be positive numbers of pixels, got {s!r}')
            for b in backbones:
                b.grid_at(s)  # raises, naming the nearest size, unless a multiple of the patch size
        if c.windows is not None:
            windows = [parse_window(w) for w in c.windows]
            if None in windows:
                raise ValueError("windows are 'global' or positive numbers of tokens, got None")
        else:
            windows = [w for b in backbones for w in b.window_choices(max(c.sizes))]
        # global first: every ViTDet row is compared with it
        c.windows = (GLOBAL, *sorted({int(w) for w in windows if w != GLOBAL}))
        c.mm_size = c.mm_size or (256 if c.tiny else 2048)
        c.dtypes = tuple(dict.fromkeys(c.dtypes))
        bad = [d for d in c.dtypes if d not in DTYPES]
        if bad or not c.dtypes:
            raise ValueError(f'dtypes must be among {sorted(DTYPES)}, got {list(self.dtypes)}')
        if c.off_grid not in OFF_GRID:
            raise ValueError(f"off_grid must be 'skip' or 'nearest', got {c.off_grid!r}")
        if c.rss_method not in RSS_METHODS:
            raise ValueError(f"rss_method must be 'auto', 'vmhwm' or 'sampler', got {c.rss_method!r}")
        if c.repeats < 1 or c.warmup < 0 or c.batch < 1:
            raise ValueError(f'need repeats >= 1, warmup >= 0, batch >= 1; got {c.repeats}, {c.warmup}, {c.batch}')
        if not 0.0 <= c.inference_threshold <= 1.0:
            raise ValueError(f'inference_threshold must be in [0, 1], got {c.inference_threshold}')
        c.image_hw = (int(c.image_hw[0]), int(c.image_hw[1]))
        return c

    def cradio_backbones(self) -> list[Backbone]:
        """The benchmarked C-RADIO backbones, from the registry."""
        return [get_backbone(b) for b in self.resolved().backbones]

    def pe_backbone(self) -> Backbone | None:
        """The reference PE, or None when ``pe`` is False."""
        return get_backbone(self.resolved().reference) if self.pe else None

    def patch_size(self) -> int:
        """The C-RADIO patch size: a size level's grid is ``size // patch_size``."""
        return self.cradio_backbones()[0].patch_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d['fixture'] = str(self.fixture) if self.fixture is not None else None
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchConfig:
        return cls(**{**d, 'image_hw': tuple(d['image_hw']),
                      'fixture': Path(d['fixture']) if d.get('fixture') is not None else None})


def cradio_models(models: Sequence[str] | None, tiny: bool, why: str) -> list[tuple[str, Window | None]]:
    """(name, window) of ``models`` ('NAME:WINDOW'; default: the registry's ``speed_models``), C-RADIO only: a PE
    name is refused, ``why`` saying what the C-RADIO models are for."""
    out = []
    for m in models or speed_models(tiny):
        b, w = parse_model(m)
        if not b.is_cradio:
            raise ValueError(f"{b.name} is SAM3's own encoder; {why}")
        out.append((b.name, w))
    return out


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's options (``sam3-cradio bench``, ``eval/bench.py``)."""
    from ..cli import window_arg

    full, tiny = BenchConfig().resolved(), BenchConfig(tiny=True).resolved()

    def listed(values: Sequence[Any]) -> str:
        return ' '.join(map(str, values))

    p.add_argument('--variants', nargs='+', default=None, metavar='NAME',
                   help=f'C-RADIO backbones: registry names or aliases (h, so400m, tiny, c-radio_v4-h, ...) '
                        f'(default: {listed(full.backbones)}; with --tiny: {listed(tiny.backbones)})')
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
    p.add_argument('--dtype', nargs='+', choices=sorted(DTYPES), default=['fp32'],
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
    rt.add_argument('--runtimes', nargs='+', choices=('torch', 'onnxruntime', 'openvino'), default=None,
                    metavar='RUNTIME', help='instead of the encoder rows: the trunk exported to ONNX and timed in '
                    'these runtimes next to torch eager, interleaved, at --sizes and --dtype on the CPU; writes '
                    '<--json stem>_runtimes.json and .md')
    rt.add_argument('--runtime-models', nargs='+', default=None, metavar='NAME:WINDOW',
                    help=f'models for --runtimes (default: {listed(speed_models())}; with --tiny: '
                         f'{listed(speed_models(tiny=True))})')
    pl = p.add_argument_group('whole folders (sam3_cradio/bench/pipeline.py)')
    pl.add_argument('--pipeline', action='store_true',
                    help='instead of the encoder rows: time `sam3-cradio segment` over a folder with --text, end to '
                         'end (decoding, model, files), for PE and --pipeline-models at --sizes (default 1152 768), '
                         '--dtype and --pipeline-batches; writes <--json stem>_pipeline.json, .md and .png')
    pl.add_argument('--pipeline-models', nargs='+', default=None, metavar='NAME:WINDOW',
                    help=f'C-RADIO models (default: {listed(speed_models())}; with --tiny: '
                         f'{listed(speed_models(tiny=True))})')
    pl.add_argument('--pipeline-runtimes', nargs='+', choices=('torch', 'onnxruntime', 'openvino'),
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
                         'first --variants backbone; writes <--json stem>_exemplars.json and .md')
    ex.add_argument('--exemplar-counts', nargs='+', type=int, default=[1, 10, 100], metavar='N',
                    help='numbers of boxes (default: 1 10 100)')
    ex.add_argument('--exemplar-baseline-max', type=int, default=10, metavar='N',
                    help='time sam3\'s loop up to this many boxes (default 10; it decodes once per box)')
    return p


def config_from_args(a: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        backbones=a.variants, sizes=a.sizes, windows=a.windows, pe=not a.no_pe, dtypes=tuple(a.dtype),
        batch=a.batch, repeats=a.repeats, warmup=a.warmup, device=a.device, compile=a.compile,
        inference=a.inference, text=a.text, inference_threshold=a.inference_threshold, mm_size=a.mm_size,
        off_grid=a.off_grid, rss_method=a.rss_method, fixture=a.fixture, seed=a.seed, tiny=a.tiny,
        tf32=False if a.no_tf32 else None, op_profile=a.op_profile)
