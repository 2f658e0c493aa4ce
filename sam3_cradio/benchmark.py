"""Speed and memory benchmark: C-RADIOv4 trunks (global and ViTDet windows) against SAM3's Perception Encoder.

Random weights from the real architecture numbers (no download). Everything runs in one process and every timing
is interleaved: within a size level, each round calls each configuration once (A, B, C, A, B, C, ...), after
``warmup`` untimed rounds, so machine noise falls on all of them alike. On CUDA the device is synchronised before
and after every timed call.

Size levels are token grids: SAM3's PE-L+ (patch 14) runs at ``14 * grid`` px, C-RADIOv4 (patch 16) at
``16 * grid`` px, so both give the same ``grid x grid`` map to SAM3's neck (72: PE 1008 px vs C-RADIO 1152 px;
36: 504 vs 576). ``sizes`` name the C-RADIO side. PE keeps its own 24-token windows (global blocks 7, 15, 23, 31)
and pads the grid up to a multiple of 24 in its windowed blocks (36 -> 48 at 504 px: 78% more tokens), which C-RADIO
windows that divide the grid never do. A window that does not divide the grid is skipped (a ``skipped`` row with
the reason) or, with ``off_grid='nearest'``, run at the nearest size it allows (another grid: no ratios).

Per row (backbone x window x size x dtype):

- ``encoder``: latency of the trunk as SAM3 calls it (SAM3-normalised (B, 3, H, W) in, the (B, 1024, g, g) map
  its neck reads out; C-RADIO: backbone + ``sam3`` adaptor): median, p95, min, max, IQR over ``repeats``; peak
  memory of the call (CUDA: ``max_memory_allocated`` minus the allocation before it; CPU: peak RSS minus the RSS
  before it, from the kernel's ``VmHWM`` after resetting it, else from a psutil sampler thread); FLOPs of one
  forward (``torch.utils.flop_counter``, on fake tensors, with :func:`attention_flops` for the CPU attention
  kernel that torch has no formula for), achieved GFLOP/s and its fraction of this machine's fp32 and bf16
  ``torch.mm`` throughput measured in the same run;
- ``params`` of the trunk; ``ratio_to_pe`` (latency, memory, params, FLOPs) against PE at the same grid and dtype;
  ``ratio_to_global`` (C-RADIO) against the same model with global attention; ``speedup_vs_fp32`` (bf16 rows);
- ``inference`` (``inference=True``): whole-image latency with a text prompt (``Sam3ImagePredictor.set_image``
  + ``predict_text`` on a full random-weight SAM3), its peak memory, the model's parameters and the ratio to PE.

bf16 runs under autocast (CPU and CUDA). When bf16 is asked for, the NVIDIA test fixture
(``tests/data/cradio_tiny``: ``model.pth.tar`` via :func:`~sam3_cradio.cradio.load_cradio`, inputs from
``reference.safetensors``) is run in float32 and bf16 to report the feature deviation and the speed-up.

    result = run_benchmark(BenchConfig(tiny=True, dtypes=('fp32', 'bf16'), inference=True))
    paths = write_outputs(result, Path('runs/bench/bench.json'))
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .cradio import parse_window_size

_logger = logging.getLogger(__name__)

__all__ = ['BenchConfig', 'Backbone', 'BACKBONES', 'TINY_PE', 'FULL_PE', 'FULL_WINDOWS', 'TINY_WINDOWS',
           'DEFAULT_FIXTURE', 'attention_flops', 'attention_flop_mapping', 'count_flops', 'PeakMemory',
           'matmul_throughput', 'bf16_fixture_check', 'plan_rows', 'run_benchmark', 'write_outputs', 'plot_latency',
           'format_table', 'format_plan', 'add_arguments', 'config_from_args', 'run_cli', 'resolve_backbone']

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}
FULL_WINDOWS: Tuple[Optional[int], ...] = (None, 6, 8, 12, 18, 24)
TINY_WINDOWS: Tuple[Optional[int], ...] = (None, 2, 3, 4, 6)
FULL_SIZES = (1152, 576)   # C-RADIO px; grids 72 and 36 (PE: 1008 and 504 px)
TINY_SIZES = (192, 96)     # grids 12 and 6 (PE tiny: 168 and 84 px; its 4-token windows pad 6 -> 8, as 36 -> 48)
DEFAULT_FIXTURE = Path(__file__).resolve().parents[1] / 'tests' / 'data' / 'cradio_tiny'


@dataclass(frozen=True)
class Backbone:
    """One benchmarked trunk.

    Attributes:
        name: ``build_sam3`` backbone name ('pe', 'cradio_v4_h', ...).
        label: name in tables and plots.
        kind: 'pe' (SAM3's ViT, one fixed window) or 'cradio' (windows switched at run time).
        patch_size: pixels per token.
        variant: C-RADIO variant for :func:`~sam3_cradio.cradio.create_cradio`.
        overrides: hydra overrides on top of the backbone's config (the tiny PE's numbers).
    """
    name: str
    label: str
    kind: str
    patch_size: int
    variant: Optional[str] = None
    overrides: Tuple[str, ...] = ()


FULL_PE = Backbone('pe', 'PE-L+', 'pe', 14)
# PE's layout at C-RADIO-tiny numbers: 192 wide, 8 blocks, 3 heads, global every 2nd block, 4-token windows
# (3 windows per side at grid 12, like 24 at 72), abs pos tiled from a 4 x 4 pretrain grid, SAM3's tiny dims.
TINY_PE = Backbone('pe', 'PE tiny', 'pe', 14, overrides=(
    'dims=tiny', 'trunk.embed_dim=192', 'trunk.depth=8', 'trunk.num_heads=3', 'trunk.global_att_blocks=[1,3,5,7]',
    'backbone.window_size=4', 'trunk.pretrain_img_size=56'))
BACKBONES: Dict[str, Backbone] = {
    'cradio_v4_h': Backbone('cradio_v4_h', 'C-RADIOv4-H', 'cradio', 16, 'c-radio_v4-h'),
    'cradio_v4_so400m': Backbone('cradio_v4_so400m', 'C-RADIOv4-SO400M', 'cradio', 16, 'c-radio_v4-so400m'),
    'cradio_tiny': Backbone('cradio_tiny', 'C-RADIO tiny', 'cradio', 16, 'cradio_test'),
}


def resolve_backbone(name: str) -> Backbone:
    """'h', 'so400m', 'tiny', a backbone name ('cradio_v4_h') or a release name ('c-radio_v4-h') -> Backbone."""
    from .cradio import resolve_release_name

    key = name.strip()
    short = {'h': 'cradio_v4_h', 'so400m': 'cradio_v4_so400m', 'tiny': 'cradio_tiny', 'cradio_test': 'cradio_tiny'}
    if key.lower() in short:
        return BACKBONES[short[key.lower()]]
    if key in BACKBONES:
        return BACKBONES[key]
    release = resolve_release_name(key)
    for b in BACKBONES.values():
        if release is not None and b.variant == release:
            return b
    raise ValueError(f'unknown C-RADIO backbone {name!r}; use h, so400m, tiny or one of {sorted(BACKBONES)} '
                     f'(PE is always the reference; --no-pe drops it)')


@dataclass
class BenchConfig:
    """What to run. ``sizes`` are C-RADIO input sides in px (multiples of 16); PE runs at the same grid.

    ``tf32`` (CUDA): None keeps what importing sam3 sets (TF32 on for Ampere and newer, as SAM3 runs), False
    gives true float32 matmuls for the fp32 rows and the fp32 ``torch.mm`` peak alike.

    Defaults are the full-size comparison (H and SO400M at 1152 and 576 px vs PE-L+ at 1008 and 504 px, global
    and windows 6, 8, 12, 18, 24); ``tiny=True`` swaps in the tiny models, sizes and windows (tests, smoke runs)
    wherever the field is left at None.
    """
    backbones: Optional[Sequence[str]] = None
    sizes: Optional[Sequence[int]] = None
    windows: Optional[Sequence[Optional[int]]] = None
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
    image_hw: Tuple[int, int] = (768, 1024)
    mm_size: Optional[int] = None
    off_grid: str = 'skip'
    rss_method: str = 'auto'
    fixture: Optional[Path] = DEFAULT_FIXTURE
    seed: int = 0
    tiny: bool = False
    tf32: Optional[bool] = None

    def resolved(self) -> 'BenchConfig':
        """A copy with the mode's defaults filled in and every field checked."""
        c = replace(self)
        if c.backbones is None:
            c.backbones = ('cradio_tiny',) if c.tiny else ('cradio_v4_h', 'cradio_v4_so400m')
        c.backbones = tuple(resolve_backbone(b).name for b in c.backbones)
        c.sizes = tuple(c.sizes or (TINY_SIZES if c.tiny else FULL_SIZES))
        windows = list(c.windows if c.windows is not None else (TINY_WINDOWS if c.tiny else FULL_WINDOWS))
        if None in windows:
            windows.remove(None)
        c.windows = (None, *sorted(set(windows)))  # global first: every ViTDet row is compared with it
        c.mm_size = c.mm_size or (256 if c.tiny else 2048)
        c.dtypes = tuple(dict.fromkeys(c.dtypes))
        bad = [d for d in c.dtypes if d not in DTYPES]
        if bad or not c.dtypes:
            raise ValueError(f'dtypes must be among {sorted(DTYPES)}, got {list(self.dtypes)}')
        for s in c.sizes:
            if s <= 0 or s % 16:
                raise ValueError(f'size {s} px is not a positive multiple of the C-RADIO patch size 16; '
                                 f'nearest: {max(16, round(s / 16) * 16)}')
        for w in c.windows[1:]:
            if isinstance(w, bool) or not isinstance(w, int) or w < 1:
                raise ValueError(f'windows are positive ints or None (global), got {w!r}')
        if c.off_grid not in ('skip', 'nearest'):
            raise ValueError(f"off_grid must be 'skip' or 'nearest', got {c.off_grid!r}")
        if c.rss_method not in ('auto', 'vmhwm', 'sampler'):
            raise ValueError(f"rss_method must be 'auto', 'vmhwm' or 'sampler', got {c.rss_method!r}")
        if c.repeats < 1 or c.warmup < 0 or c.batch < 1:
            raise ValueError(f'need repeats >= 1, warmup >= 0, batch >= 1; got {c.repeats}, {c.warmup}, {c.batch}')
        if not 0.0 <= c.inference_threshold <= 1.0:
            raise ValueError(f'inference_threshold must be in [0, 1], got {c.inference_threshold}')
        return c


# --------------------------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------------------------

def attention_flops(query_shape: Sequence[int], key_shape: Sequence[int], value_shape: Sequence[int]) -> int:
    """FLOPs of softmax attention on (B, H, Lq, D) queries, (B, Hkv, Lk, D) keys and (B, Hkv, Lk, Dv) values.

    The two matmuls, as torch counts matmuls (2 per multiply-add): ``2*B*H*Lq*Lk*D`` for ``q @ k^T`` plus
    ``2*B*H*Lq*Lk*Dv`` for ``softmax(.) @ v``, i.e. ``4*B*H*Lq*Lk*D`` when Dv == D; the softmax is not counted
    (torch counts no elementwise op). Key/value heads are broadcast to the query heads (GQA).

    Example:
        >>> attention_flops((2, 3, 10, 8), (2, 3, 12, 8), (2, 3, 12, 8))
        23040
    """
    b, h, lq, d = (int(s) for s in query_shape[-4:])
    lk, dv = int(key_shape[-2]), int(value_shape[-1])
    return 2 * b * h * lq * lk * d + 2 * b * h * lq * lk * dv


def _attention_flop_formula(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return attention_flops(query_shape, key_shape, value_shape)


def attention_flop_mapping() -> Dict[Any, Callable[..., int]]:
    """``custom_mapping`` for :class:`torch.utils.flop_counter.FlopCounterMode`: the attention kernels torch has no
    formula for (torch 2.14 counts the CUDA flash / efficient / cudnn kernels but not
    ``aten._scaled_dot_product_flash_attention_for_cpu``, which every CPU ``F.scaled_dot_product_attention`` call
    without a mask dispatches to, so CPU attention would count as 0)."""
    from torch.utils.flop_counter import flop_registry

    mapping = {}
    for name in ('_scaled_dot_product_flash_attention_for_cpu', '_scaled_dot_product_fused_attention_overrideable'):
        op = getattr(torch.ops.aten, name, None)
        if op is not None and op not in flop_registry:
            mapping[op] = _attention_flop_formula
    return mapping


def count_flops(fn: Callable[..., Any], *args: Any, fake: bool = True) -> Tuple[int, Dict[str, int]]:
    """FLOPs of ``fn(*args)`` under ``FlopCounterMode`` (with :func:`attention_flop_mapping`), and per aten op.

    With ``fake`` the tensor arguments are replaced by fake tensors of the same shapes, so nothing is computed
    (a full-size forward costs no time); if the function cannot run on fake tensors it is run for real.
    """
    from torch.utils.flop_counter import FlopCounterMode

    def run(call_args: Sequence[Any]) -> Tuple[int, Dict[str, int]]:
        with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=attention_flop_mapping()) as fc:
            fn(*call_args)
        by_op = {str(k): int(v) for k, v in fc.get_flop_counts().get('Global', {}).items()}
        return int(fc.get_total_flops()), by_op

    if fake:
        from torch._subclasses.fake_tensor import FakeTensorMode

        try:
            with FakeTensorMode(allow_non_fake_inputs=True) as mode:
                fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
                return run(fake_args)
        except Exception as e:  # noqa: BLE001 - any op without a fake kernel: count on real tensors instead
            _logger.info('FLOPs on fake tensors failed (%s: %s); counting on a real forward', type(e).__name__, e)
    return run(args)


# --------------------------------------------------------------------------------------------------------------
# Memory and timing
# --------------------------------------------------------------------------------------------------------------

def _rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _read_hwm() -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return _read_hwm() is not None
    except OSError:
        return False


_LIBC: Any = None


def _malloc_trim() -> None:
    """Give freed heap pages back to the OS (glibc), so the RSS before a call is not inflated by earlier calls."""
    global _LIBC
    if _LIBC is None:
        path = ctypes.util.find_library('c')
        try:
            _LIBC = ctypes.CDLL(path) if path else False
        except OSError:
            _LIBC = False
    if _LIBC and hasattr(_LIBC, 'malloc_trim'):
        _LIBC.malloc_trim(0)


class PeakMemory:
    """Peak memory of a block of code, above what was in use just before it.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` minus ``memory_allocated`` before.
    CPU: peak RSS minus the RSS before (after ``malloc_trim``). ``method='vmhwm'`` reads the kernel's exact peak
    (``VmHWM``, reset through ``/proc/self/clear_refs``; Linux); ``'sampler'`` polls the RSS with psutil from a
    background thread every ``interval`` seconds (portable; misses peaks shorter than the interval); ``'auto'``
    takes ``vmhwm`` where it works.

        mem = PeakMemory(torch.device('cpu'))
        with mem:
            model(x)
        mem.peak_bytes
    """

    def __init__(self, device: torch.device, method: str = 'auto', interval: float = 0.001) -> None:
        self.device = torch.device(device)
        self.interval = interval
        if self.device.type == 'cuda':
            self.method = 'cuda'
        elif method == 'auto':
            self.method = 'vmhwm' if _reset_hwm() else 'sampler'
        else:
            if method == 'vmhwm' and not _reset_hwm():
                raise RuntimeError('VmHWM cannot be reset here (/proc/self/clear_refs); use the sampler method')
            self.method = method
        self.peak_bytes = 0
        self._base = 0
        self._samples: List[int] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._samples.append(_rss_bytes())

    def __enter__(self) -> 'PeakMemory':
        if self.method == 'cuda':
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        _malloc_trim()
        self._base = _rss_bytes()
        self._samples = [self._base]
        if self.method == 'vmhwm':
            _reset_hwm()
        else:
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, name='rss-sampler', daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.method == 'cuda':
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method == 'vmhwm':
            peak = max(_read_hwm() or 0, _rss_bytes())
        else:
            self._stop.set()
            self._thread.join()
            self._samples.append(_rss_bytes())
            peak = max(self._samples)
        self.peak_bytes = max(int(peak) - int(self._base), 0)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _stats(times: Sequence[float]) -> Dict[str, Any]:
    t = np.asarray(times, dtype=np.float64)
    q25, q75 = np.percentile(t, [25, 75])
    return {'median_s': float(np.median(t)), 'p95_s': float(np.percentile(t, 95)), 'min_s': float(t.min()),
            'max_s': float(t.max()), 'iqr_s': float(q75 - q25), 'times_s': [float(x) for x in t]}


def matmul_throughput(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5,
                      warmup: int = 2) -> Dict[str, Any]:
    """GFLOP/s of ``torch.mm`` on two (n, n) matrices of ``dtype``: best and median over ``repeats``.

    The best is this machine's matmul peak for the benchmark's fractions. On CUDA, fp32 follows
    ``torch.backends.cuda.matmul.allow_tf32`` (recorded in the JSON), as the benchmarked models do.
    """
    device = torch.device(device)
    g = torch.Generator(device='cpu').manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            _sync(device)
            t0 = time.perf_counter()
            torch.mm(a, b)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    flop = 2 * n ** 3
    return {'n': n, 'dtype': str(dtype).replace('torch.', ''), 'gflops_best': flop / min(times) / 1e9,
            'gflops_median': flop / float(np.median(times)) / 1e9, 'times_s': times}


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------

def _pe_trunk(pe: Backbone, image_size: int, device: torch.device) -> torch.nn.Module:
    """SAM3's PE ViT trunk alone, from the ``pe`` config's numbers (no neck, text encoder or decoder)."""
    from hydra.utils import instantiate

    from . import compat
    from .build import compose_config

    compat.apply_cpu_shims()  # imports sam3 (triton-free stub on CPU); a no-op for the ViT itself
    cfg = compose_config(pe.name, [*pe.overrides, f'backbone.image_size={image_size}'])
    return instantiate(cfg.trunk, _convert_='all').to(device).eval()


def _pe_window_info(trunk: torch.nn.Module, grid: int) -> Dict[str, Any]:
    windows = [b.window_size for b in trunk.blocks if b.window_size > 0]
    w = windows[0] if windows else None
    padded = math.ceil(grid / w) * w if w else grid
    return {'window': w, 'windowed_blocks': len(windows), 'global_blocks': len(trunk.blocks) - len(windows),
            'windowed_grid': padded}


def _cradio_trunk(b: Backbone, device: torch.device) -> torch.nn.Module:
    from .cradio import create_cradio
    from .trunk import CRadioTrunk

    return CRadioTrunk(create_cradio(b.variant, adaptor_names=('sam3',), device=device), 'sam3').eval()


def _num_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _compile(fn: Callable, enabled: bool) -> Callable:
    if not enabled:
        return fn
    import torch._dynamo as dynamo

    # C-RADIO switches windows at run time: one graph per (window, size), more than dynamo's default 8
    for name in ('recompile_limit', 'cache_size_limit', 'accumulated_recompile_limit', 'accumulated_cache_size_limit'):
        if hasattr(dynamo.config, name):
            setattr(dynamo.config, name, max(getattr(dynamo.config, name), 256))
    return torch.compile(fn)


# --------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------

@dataclass
class _Case:
    row: Dict[str, Any]
    key: str                          # 'encoder' or 'inference'
    prepare: Callable[[], None]       # untimed: switch the window
    call: Callable[[], Any]           # timed
    dtype: str
    times: List[float] = field(default_factory=list)
    peaks: List[int] = field(default_factory=list)
    mem_method: str = ''


def _check_real(out: Any, case: _Case) -> None:
    """Refuse timings of a call that computed nothing: fake tensors (left behind by a FLOP count on fake inputs,
    e.g. in a model's cache) make a forward return in no time."""
    from torch._subclasses.fake_tensor import FakeTensor
    from torch.utils._pytree import tree_leaves

    if any(isinstance(t, FakeTensor) for t in tree_leaves(out)):
        raise RuntimeError(
            f"{case.row['backbone']} returned fake tensors after FLOP counting: a fake tensor was cached inside the "
            f'model, so its timings would be meaningless')


def _interleave(cases: List[_Case], cfg: BenchConfig, device: torch.device, what: str) -> None:
    """Round-robin over the cases: ``warmup`` untimed rounds, then ``repeats`` timed ones.

    Python's garbage collector is off during each call (as in ``timeit``) and runs once between rounds.
    """
    for round_ in range(cfg.warmup + cfg.repeats):
        timed = round_ >= cfg.warmup
        gc.collect()
        for c in cases:
            c.prepare()
            amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=c.dtype == 'bf16')
            mem = PeakMemory(device, cfg.rss_method)
            gc.disable()
            try:
                with torch.inference_mode(), amp, mem:
                    _sync(device)
                    t0 = time.perf_counter()
                    out = c.call()
                    _sync(device)
                    dt = time.perf_counter() - t0
                _check_real(out, c)
                del out
            finally:
                gc.enable()
            if timed:
                c.times.append(dt)
                c.peaks.append(mem.peak_bytes)
                c.mem_method = mem.method
            _logger.info('%s %s %s px W=%s %s round %d%s: %.3fs', what, c.row['backbone'], c.row['input'][0],
                         c.row['window'] or 'global', c.dtype, round_, '' if timed else ' (warm-up)', dt)
    for c in cases:
        c.row[c.key] = {**c.row.get(c.key, {}), **_stats(c.times), 'peak_mem_bytes': max(c.peaks),
                        'peak_mem_method': c.mem_method}


def _levels(cfg: BenchConfig) -> List[Dict[str, Any]]:
    return [{'size': s, 'grid': s // 16} for s in cfg.sizes]


def _pe_layout(pe: Backbone) -> Dict[str, Any]:
    """PE's window and block counts, read from its config (nothing is built)."""
    from .build import compose_config

    cfg = compose_config(pe.name, list(pe.overrides))
    depth, n_global = int(cfg.trunk.depth), len(cfg.trunk.global_att_blocks)
    return {'window': int(cfg.backbone.window_size), 'windowed_blocks': depth - n_global, 'global_blocks': n_global}


def plan_rows(cfg: BenchConfig) -> List[Dict[str, Any]]:
    """Every row the benchmark will fill, in order, before anything is built or measured: per size level and
    dtype, PE (its own window; ``windowed_grid`` is the grid padded to a multiple of it), then each C-RADIO backbone
    x window (``status='skipped'`` with a ``reason`` where the window does not divide the grid and
    ``off_grid='skip'``; with ``'nearest'`` the input moves to the nearest size it allows, ``off_grid=True``)."""
    cfg = cfg.resolved()
    pe = _pe_backbone(cfg)
    layout = _pe_layout(pe) if pe is not None else None
    rows = []
    for level in _levels(cfg):
        g = level['grid']
        for dtype in cfg.dtypes:
            base = {'size': level['size'], 'grid': g, 'dtype': dtype, 'batch': cfg.batch}
            if pe is not None:
                px, w = g * pe.patch_size, layout['window']
                rows.append({**base, 'backbone': pe.name, 'label': pe.label, 'kind': 'pe', **layout,
                             'input': [px, px], 'status': 'ok', 'windowed_grid': math.ceil(g / w) * w})
            for name in cfg.backbones:
                b = BACKBONES[name]
                for w in cfg.windows:
                    row = {**base, 'backbone': b.name, 'label': b.label, 'kind': 'cradio', 'window': w,
                           'input': [g * b.patch_size] * 2, 'status': 'ok', 'windowed_grid': g}
                    if w is not None and g % w:
                        reason = f'window {w} does not divide the {g}x{g} grid'
                        if cfg.off_grid == 'skip':
                            row.update(status='skipped', reason=reason, input=None)
                        else:
                            step = b.patch_size * w
                            side = max(round(level['size'] / step), 1) * step
                            row.update(input=[side, side], grid=side // b.patch_size,
                                       windowed_grid=side // b.patch_size, off_grid=True,
                                       reason=f'{reason}; run at the nearest size it allows, {side} px')
                    rows.append(row)
    return rows


def _pe_backbone(cfg: BenchConfig) -> Optional[Backbone]:
    return (TINY_PE if cfg.tiny else FULL_PE) if cfg.pe else None


def _find(rows: Sequence[Dict[str, Any]], **match: Any) -> Optional[Dict[str, Any]]:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return float(a) / float(b) if a is not None and b else None


def _add_ratios(rows: List[Dict[str, Any]]) -> None:
    for r in rows:
        if r['status'] != 'ok':
            continue
        same = dict(size=r['size'], dtype=r['dtype'], status='ok')
        pe = _find(rows, kind='pe', **same)
        on_grid = not r.get('off_grid')
        enc = r['encoder']
        if pe is not None and on_grid:
            r['ratio_to_pe'] = {
                'latency': _ratio(enc['median_s'], pe['encoder']['median_s']),
                'peak_mem': _ratio(enc['peak_mem_bytes'], pe['encoder']['peak_mem_bytes']),
                'params': _ratio(r['params'], pe['params']),
                'flops': _ratio(r['flops'], pe['flops']),
            }
            if 'inference' in r and 'inference' in pe:
                r['inference']['ratio_to_pe'] = {
                    'latency': _ratio(r['inference']['median_s'], pe['inference']['median_s']),
                    'peak_mem': _ratio(r['inference']['peak_mem_bytes'], pe['inference']['peak_mem_bytes']),
                    'params': _ratio(r['inference']['params'], pe['inference']['params'])}
        if r['kind'] == 'cradio' and on_grid:
            glob = _find(rows, kind='cradio', backbone=r['backbone'], window=None, **same)
            if glob is not None:
                r['ratio_to_global'] = {'latency': _ratio(enc['median_s'], glob['encoder']['median_s']),
                                        'flops': _ratio(r['flops'], glob['flops']),
                                        'peak_mem': _ratio(enc['peak_mem_bytes'], glob['encoder']['peak_mem_bytes'])}
                if 'inference' in r and 'inference' in glob:
                    r['inference']['ratio_to_global'] = _ratio(r['inference']['median_s'],
                                                               glob['inference']['median_s'])
        if r['dtype'] != 'fp32':
            fp32 = _find(rows, kind=r['kind'], backbone=r['backbone'], window=r['window'], size=r['size'],
                         dtype='fp32', status='ok')
            if fp32 is not None:
                r['speedup_vs_fp32'] = _ratio(fp32['encoder']['median_s'], enc['median_s'])
                if 'inference' in r and 'inference' in fp32:
                    r['inference']['speedup_vs_fp32'] = _ratio(fp32['inference']['median_s'],
                                                               r['inference']['median_s'])


def _pe_padding_notes(rows: Sequence[Dict[str, Any]]) -> List[str]:
    notes, seen = [], set()
    for r in rows:
        if r['kind'] != 'pe' or r['status'] != 'ok' or r['size'] in seen:
            continue
        seen.add(r['size'])
        g, pg = r['grid'], r['windowed_grid']
        if pg != g:
            notes.append(
                f"{r['label']} at {r['input'][0]} px pads its {g}x{g} grid to {pg}x{pg} in its {r['windowed_blocks']} "
                f"windowed blocks ({pg * pg / (g * g) - 1:.0%} more tokens there); C-RADIO windows that divide {g} "
                f"add none, so the smaller input is relatively cheaper for C-RADIO.")
    return notes


def _encoder_phase(cfg: BenchConfig, device: torch.device, pe: Optional[Backbone],
                   rows: List[Dict[str, Any]]) -> None:
    cradio = {}
    for name in cfg.backbones:
        torch.manual_seed(cfg.seed)
        _logger.info('building %s (random weights)', name)
        cradio[name] = _cradio_trunk(BACKBONES[name], device)
    for level in _levels(cfg):
        level_rows = [r for r in rows if r['size'] == level['size'] and r['status'] == 'ok']
        modules: Dict[str, torch.nn.Module] = dict(cradio)
        if pe is not None:
            torch.manual_seed(cfg.seed)
            px = level['grid'] * pe.patch_size
            _logger.info('building %s at %d px (random weights)', pe.label, px)
            modules[pe.name] = _pe_trunk(pe, px, device)
        calls = {name: _compile(m, cfg.compile) for name, m in modules.items()}
        inputs: Dict[Tuple[int, int], torch.Tensor] = {}
        flops: Dict[Tuple[str, Optional[int], Tuple[int, int]], Tuple[int, Dict[str, int]]] = {}
        cases = []
        for r in level_rows:
            m, hw = modules[r['backbone']], tuple(r['input'])
            if hw not in inputs:  # SAM3's normalisation: [-1, 1]
                gen = torch.Generator(device='cpu').manual_seed(cfg.seed)
                inputs[hw] = (torch.rand(cfg.batch, 3, *hw, generator=gen) * 2 - 1).to(device)
            x = inputs[hw]
            if r['kind'] == 'pe':
                r.update(_pe_window_info(m, r['grid']))  # what was built (the plan read the config)
            else:
                m.encoder.set_window_size(r['window'])
                depth = m.encoder.arch.depth
                r['global_blocks'] = len(m.encoder.global_blocks)
                r['windowed_blocks'] = depth - r['global_blocks']
            r['params'] = _num_params(m)
            key = (r['backbone'], r['window'], hw)
            if key not in flops:  # FLOPs do not depend on the dtype
                flops[key] = count_flops(m, x)
            r['flops'], r['flops_by_op'] = flops[key]

            def prepare(m=m, r=r) -> None:
                if r['kind'] == 'cradio':
                    m.encoder.set_window_size(r['window'])

            cases.append(_Case(r, 'encoder', prepare, lambda f=calls[r['backbone']], x=x: f(x), r['dtype']))
        _interleave(cases, cfg, device, 'encoder')
        for r in level_rows:
            r['encoder']['gflops_per_s'] = r['flops'] / r['encoder']['median_s'] / 1e9
        if pe is not None:
            del modules[pe.name]
        del calls, modules, inputs
        _free(device)
    del cradio
    _free(device)


def _synthetic_image(hw: Tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = hw
    # smooth colour gradients plus noise: an image, not pure noise
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1) * 200
    return np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)


def _inference_phase(cfg: BenchConfig, device: torch.device, pe: Optional[Backbone],
                     rows: List[Dict[str, Any]]) -> None:
    from .build import build_sam3
    from .predictor import Sam3ImagePredictor

    image = _synthetic_image(cfg.image_hw, cfg.seed)
    names = ([pe.name] if pe is not None else []) + list(cfg.backbones)
    for level in _levels(cfg):
        g = level['grid']
        level_rows = [r for r in rows if r['size'] == level['size'] and r['status'] == 'ok']
        predictors = {}
        for name in names:
            b = pe if name == 'pe' else BACKBONES[name]
            px = g * b.patch_size
            torch.manual_seed(cfg.seed)
            _logger.info('building SAM3 on %s at %d px (random weights)', b.label, px)
            kw = {} if b.kind == 'pe' else {'window_size': None}
            model = build_sam3(b.name, mode='image', pretrained=False, interactive=False, device=device,
                               overrides=[*b.overrides, f'backbone.image_size={px}'], **kw)
            if cfg.compile:
                model.backbone.vision_backbone.trunk.compile()
            predictors[name] = Sam3ImagePredictor(model, confidence_threshold=cfg.inference_threshold,
                                                  autocast=False)
        cases = []
        for r in level_rows:
            if r.get('off_grid'):
                r['inference'] = {'skipped': 'the SAM3 model runs at the grid size, which this window does not divide'}
                continue
            pred = predictors[r['backbone']]
            trunk = pred.model.backbone.vision_backbone.trunk

            def prepare(trunk=trunk, r=r) -> None:
                if r['kind'] == 'cradio':
                    trunk.encoder.set_window_size(r['window'])

            def call(pred=pred) -> Any:
                pred.set_image(image)
                return pred.predict_text(cfg.text)

            r['inference'] = {'params': _num_params(pred.model), 'text': cfg.text, 'image_hw': list(cfg.image_hw),
                              'batch': 1, 'confidence_threshold': cfg.inference_threshold}
            cases.append(_Case(r, 'inference', prepare, call, r['dtype']))
        _interleave(cases, cfg, device, 'inference')
        del predictors, cases
        _free(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def _feature_deviation(a: torch.Tensor, ref: torch.Tensor) -> Dict[str, float]:
    """(B, N, C) features vs (B, N, C) reference: max |diff|, relative L2 error, mean cosine over tokens."""
    a, ref = a.float(), ref.float()
    return {'max_abs': float((a - ref).abs().max()),
            'rel_err': float((a - ref).norm() / ref.norm().clamp_min(1e-12)),
            'cos': float(torch.nn.functional.cosine_similarity(a, ref, dim=-1).mean())}


def bf16_fixture_check(fixture: Path, device: torch.device, repeats: int = 5, warmup: int = 1) -> Dict[str, Any]:
    """bf16 autocast vs float32 on the NVIDIA fixture: feature deviation and speed-up per case.

    Loads ``fixture/model.pth.tar`` (with the ``sam3`` adaptor) through ``load_cradio`` and runs each case's input
    from ``fixture/reference.safetensors`` (global and ViTDet windows, as in ``cases.json``) in float32 and under
    bf16 autocast, interleaved. Deviations are of the bf16 backbone and ``sam3`` adaptor features from the float32
    ones; ``fp32_vs_reference`` checks the float32 path against NVIDIA's stored features.
    """
    from safetensors.torch import load_file

    from .cradio import load_cradio

    device = torch.device(device)
    fixture = Path(fixture)
    ckpt, ref_file, cases_file = (fixture / n for n in ('model.pth.tar', 'reference.safetensors', 'cases.json'))
    missing = [str(p) for p in (ckpt, ref_file, cases_file) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f'bf16 fixture check: missing {missing}; pass the cradio_tiny fixture folder')
    enc = load_cradio(ckpt, adaptor_names=['sam3'], device=device)
    ref = load_file(str(ref_file))
    cases = json.loads(cases_file.read_text())['cases']
    out: Dict[str, Any] = {'checkpoint': str(ckpt), 'device': str(device), 'cases': {}}
    for name, case in cases.items():
        if f'{name}/input' not in ref or f'{name}/features' not in ref:
            continue
        enc.set_window_size(case.get('window'))
        x = ref[f'{name}/input'].to(device)
        res: Dict[str, Any] = {'window': case.get('window'), 'input': list(x.shape)}
        times: Dict[str, List[float]] = {'fp32': [], 'bf16': []}
        outs = {}
        with torch.inference_mode():
            for i in range(warmup + repeats):
                for dt in ('fp32', 'bf16'):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dt == 'bf16'):
                        _sync(device)
                        t0 = time.perf_counter()
                        outs[dt] = enc(x)
                        _sync(device)
                    if i >= warmup:
                        times[dt].append(time.perf_counter() - t0)
        for part in ('backbone', 'sam3'):
            res[part] = _feature_deviation(outs['bf16'][part].features, outs['fp32'][part].features)
        res['fp32_vs_reference_max_abs'] = float(
            (outs['fp32']['backbone'].features.float().cpu() - ref[f'{name}/features']).abs().max())
        res['fp32_median_s'] = float(np.median(times['fp32']))
        res['bf16_median_s'] = float(np.median(times['bf16']))
        res['speedup'] = res['fp32_median_s'] / res['bf16_median_s']
        out['cases'][name] = res
    if not out['cases']:
        raise ValueError(f'{ref_file} holds no <case>/input with <case>/features')
    vals = list(out['cases'].values())
    out['worst'] = {part: {'max_abs': max(v[part]['max_abs'] for v in vals),
                           'rel_err': max(v[part]['rel_err'] for v in vals),
                           'cos': min(v[part]['cos'] for v in vals)} for part in ('backbone', 'sam3')}
    out['speedup_median'] = float(np.median([v['speedup'] for v in vals]))
    return out


def _environment(device: torch.device) -> Dict[str, Any]:
    from .evaluation.runner import environment

    env = environment(device)
    env['threads'] = torch.get_num_threads()
    if device.type == 'cuda':
        env['cuda_matmul_allow_tf32'] = torch.backends.cuda.matmul.allow_tf32
        env['cudnn_allow_tf32'] = torch.backends.cudnn.allow_tf32
    env['float32_matmul_precision'] = torch.get_float32_matmul_precision()
    return env


def run_benchmark(cfg: BenchConfig) -> Dict[str, Any]:
    """Run everything ``cfg`` asks for; returns ``{'meta', 'config', 'matmul', 'rows', 'bf16_fixture', 'notes'}``.

    Rows come in a fixed order (size level, dtype, PE, then each C-RADIO backbone's windows), one per
    backbone x window x size x dtype, including ``status='skipped'`` rows for windows that do not divide the grid.
    """
    cfg = cfg.resolved()
    device = torch.device(cfg.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError('device cuda was asked for but torch sees no CUDA device; use --device cpu')
    pe = _pe_backbone(cfg)
    from . import compat
    compat.apply_cpu_shims()  # imports sam3, whose model_builder turns TF32 on for Ampere+ GPUs: before the matmuls
    if device.type == 'cuda' and cfg.tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    t_start = time.perf_counter()
    _logger.info('matmul peak: torch.mm %dx%d on %s', cfg.mm_size, cfg.mm_size, device)
    matmul = {'before': {d: matmul_throughput(device, DTYPES[d], cfg.mm_size) for d in DTYPES}}
    rows = plan_rows(cfg)
    _encoder_phase(cfg, device, pe, rows)
    if cfg.inference:
        _inference_phase(cfg, device, pe, rows)
    matmul['after'] = {d: matmul_throughput(device, DTYPES[d], cfg.mm_size) for d in DTYPES}
    matmul['peak_gflops'] = {d: max(matmul['before'][d]['gflops_best'], matmul['after'][d]['gflops_best'])
                             for d in DTYPES}
    for r in rows:  # fractions of the best matmul seen in the run (before or after)
        if r['status'] == 'ok':
            for d, peak in matmul['peak_gflops'].items():
                r['encoder'][f'fraction_of_{d}_mm'] = r['encoder']['gflops_per_s'] / peak
    _add_ratios(rows)
    fixture = None
    if 'bf16' in cfg.dtypes:
        if cfg.fixture is not None and Path(cfg.fixture).is_dir():
            fixture = bf16_fixture_check(Path(cfg.fixture), device, repeats=max(cfg.repeats, 3))
        else:
            fixture = {'skipped': f'fixture folder {cfg.fixture} not found (pass --fixture tests/data/cradio_tiny)'}
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    return {'meta': {**_environment(device), 'seconds': time.perf_counter() - t_start}, 'config': config,
            'matmul': matmul, 'rows': rows, 'bf16_fixture': fixture, 'notes': _pe_padding_notes(rows)}


# --------------------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------------------

def _fmt(x: Optional[float], spec: str = '.2f', suffix: str = '') -> str:
    return '-' if x is None else f'{x:{spec}}{suffix}'


def _window_label(r: Dict[str, Any]) -> str:
    if r['kind'] == 'pe':
        return f"{r.get('window')} (own)" if r.get('window') else 'global'
    return str(r['window']) if r['window'] else 'global'


def format_table(result: Dict[str, Any]) -> str:
    """Markdown: one line per row, every number also as a ratio to PE at the same grid and dtype."""
    lines = ['| backbone | input | grid | window | dtype | encoder median (s) | p95 (s) | x PE | x global | '
             'x fp32 | peak mem (MiB) | x PE | params (M) | x PE | GFLOP | x PE | GFLOP/s | fp32 mm | bf16 mm | '
             'inference (s) | x PE | x global |',
             '|' + '---|' * 22]
    for r in result['rows']:
        if r['status'] != 'ok':
            lines.append(f"| {r['label']} | - | {r['grid']} | {_window_label(r)} | {r['dtype']} | "
                         f"skipped: {r['reason']} |" + ' |' * 16)
            continue
        e, pe, gl = r['encoder'], r.get('ratio_to_pe', {}), r.get('ratio_to_global', {})
        grid = f"{r['grid']}" + (f" ({r['windowed_grid']} in windows)" if r.get('windowed_grid', r['grid']) !=
                                 r['grid'] else '')
        inf = r.get('inference') or {}
        lines.append(
            f"| {r['label']} | {r['input'][0]}x{r['input'][1]} | {grid} | {_window_label(r)} | {r['dtype']} | "
            f"{e['median_s']:.3g} | {e['p95_s']:.3g} | {_fmt(pe.get('latency'), '.2f', 'x')} | "
            f"{_fmt(gl.get('latency'), '.2f', 'x')} | {_fmt(r.get('speedup_vs_fp32'), '.2f', 'x faster')} | "
            f"{e['peak_mem_bytes'] / 2 ** 20:.0f} | {_fmt(pe.get('peak_mem'), '.2f', 'x')} | "
            f"{r['params'] / 1e6:.1f} | {_fmt(pe.get('params'), '.2f', 'x')} | {r['flops'] / 1e9:.3g} | "
            f"{_fmt(pe.get('flops'), '.2f', 'x')} | {e['gflops_per_s']:.3g} | "
            f"{_fmt(e.get('fraction_of_fp32_mm'), '.0%')} | {_fmt(e.get('fraction_of_bf16_mm'), '.0%')} | "
            f"{_fmt(inf.get('median_s'), '.3g')} | {_fmt((inf.get('ratio_to_pe') or {}).get('latency'), '.2f', 'x')} | "
            f"{_fmt(inf.get('ratio_to_global'), '.2f', 'x')} |")
    out = ['\n'.join(lines)]
    mm = result.get('matmul', {}).get('peak_gflops')
    if mm:
        out.append('torch.mm peak (GFLOP/s): ' + ', '.join(f'{d} {v:.1f}' for d, v in mm.items()))
    fx = result.get('bf16_fixture')
    if fx and 'worst' in fx:
        w = fx['worst']
        out.append(f"bf16 vs fp32 on the fixture ({len(fx['cases'])} cases): backbone features max|d| "
                   f"{w['backbone']['max_abs']:.3g}, rel. error {w['backbone']['rel_err']:.3g}, 1 - cos <= "
                   f"{1 - w['backbone']['cos']:.2g}; sam3 adaptor rel. error {w['sam3']['rel_err']:.3g}, 1 - cos <= "
                   f"{1 - w['sam3']['cos']:.2g}; speed-up {fx['speedup_median']:.2f}x (worst case of each)")
    elif fx:
        out.append(f"bf16 fixture check skipped: {fx['skipped']}")
    out += result.get('notes', [])
    return '\n\n'.join(out)


def plot_latency(result: Dict[str, Any], path: Path) -> Path:
    """PNG: median latency (min-max bars) vs window size, one line per backbone and dtype, PE as a dashed line;
    one column per size level, a second row for whole-image inference when it was measured."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in result['rows'] if r['status'] == 'ok' and not r.get('off_grid')]
    sizes = list(dict.fromkeys(r['size'] for r in result['rows']))
    windows = result['config']['windows']
    labels = ['global' if w is None else str(w) for w in windows]
    keys = ['encoder'] + (['inference'] if any('median_s' in (r.get('inference') or {}) for r in rows) else [])
    fig = Figure(figsize=(5.5 * len(sizes), 4 * len(keys)), layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(keys), len(sizes), squeeze=False)
    colors = ['tab:blue', 'tab:orange', 'tab:green', 'tab:red', 'tab:purple', 'tab:brown']
    for i, key in enumerate(keys):
        for j, size in enumerate(sizes):
            ax = axes[i][j]
            at = [r for r in rows if r['size'] == size and 'median_s' in (r.get(key) or {})]
            series = list(dict.fromkeys((r['backbone'], r['label'], r['dtype']) for r in at if r['kind'] == 'cradio'))
            for k, (name, label, dtype) in enumerate(series):
                y, lo, hi = [], [], []
                for w in windows:
                    r = _find(at, backbone=name, dtype=dtype, window=w)
                    m = r[key] if r else None
                    y.append(m['median_s'] if m else np.nan)
                    lo.append(m['median_s'] - m['min_s'] if m else 0)
                    hi.append(m['max_s'] - m['median_s'] if m else 0)
                ax.errorbar(range(len(windows)), y, yerr=[lo, hi], marker='o', capsize=3,
                            color=colors[k % len(colors)], linestyle='-' if dtype == 'fp32' else ':',
                            label=f'{label} {dtype}')
            for r in (r for r in at if r['kind'] == 'pe'):
                ax.axhline(r[key]['median_s'], color='black', linestyle='--' if r['dtype'] == 'fp32' else '-.',
                           label=f"{r['label']} {r['input'][0]} px W{r.get('window')} {r['dtype']}")
            grid = size // 16
            ax.set_title(f'{key}: {grid}x{grid} grid (C-RADIO {size} px)')
            ax.set_xticks(range(len(windows)), labels)
            ax.set_xlabel('C-RADIO window (tokens)')
            ax.set_ylabel('median latency (s)')
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    meta = result.get('meta', {})
    dev = meta.get('device', {})
    fig.suptitle(f"C-RADIOv4 vs SAM3 PE, {dev.get('name', '')} ({dev.get('type', '')}), "
                 f"batch {result['config']['batch']}", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_outputs(result: Dict[str, Any], json_path: Path, plot_path: Optional[Path] = None) -> Dict[str, Path]:
    """Write ``json_path``, the PNG plot (default: next to it, ``.png``) and the markdown table (``.md``)."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    md = json_path.with_suffix('.md')
    md.write_text(format_table(result) + '\n')
    png = plot_latency(result, Path(plot_path) if plot_path else json_path.with_suffix('.png'))
    return {'json': json_path, 'plot': png, 'markdown': md}


# --------------------------------------------------------------------------------------------------------------
# Command line (eval/bench.py and ``sam3-cradio bench``)
# --------------------------------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's options, shared by ``eval/bench.py`` and ``sam3-cradio bench``."""
    p.add_argument('--variants', nargs='+', default=None,
                   help='C-RADIO backbones: h, so400m (or cradio_v4_h, c-radio_v4-h, ...), tiny '
                        '(default: h so400m; with --tiny: tiny)')
    p.add_argument('--sizes', nargs='+', type=int, default=None,
                   help='C-RADIO input sides in px, multiples of 16; PE runs at the same grid (size / 16 * 14) '
                        '(default: 1152 576, i.e. PE 1008 504; with --tiny: 192 96)')
    p.add_argument('--windows', nargs='+', type=parse_window_size, default=None,
                   help="'global' and ViTDet windows in tokens (default: global 6 8 12 18 24; with --tiny: "
                        "global 2 3 4 6); global is always added")
    p.add_argument('--no-pe', action='store_true', help="leave out SAM3's PE (no ratios to PE)")
    p.add_argument('--off-grid', choices=['skip', 'nearest'], default='skip',
                   help='a window that does not divide the grid: skip it (default) or run it at the nearest size '
                        'it allows (the old encoder benchmark; no ratios for such rows)')
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
    p.add_argument('--mm-size', type=int, default=None, help='torch.mm matrix side for the matmul peak '
                                                             '(default 2048; with --tiny: 256)')
    p.add_argument('--rss-method', choices=['auto', 'vmhwm', 'sampler'], default='auto',
                   help='CPU peak memory: kernel VmHWM (Linux, exact) or a psutil sampler thread')
    p.add_argument('--fixture', type=Path, default=DEFAULT_FIXTURE,
                   help='cradio_tiny fixture folder for the bf16 deviation check')
    p.add_argument('--no-tf32', action='store_true',
                   help='CUDA: true float32 matmuls (importing sam3 turns TF32 on for Ampere and newer)')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch decides)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--tiny', action='store_true', help='tiny models, sizes and windows: every row type in seconds')
    p.add_argument('--json', type=Path, default=Path('bench.json'),
                   help='output JSON; the table goes next to it (.md), the plot too (.png) unless --plot')
    p.add_argument('--plot', type=Path, default=None, help='output PNG (default: the JSON path with .png)')
    p.add_argument('--dry-run', action='store_true', help='list the rows that would be measured, build nothing')
    return p


def config_from_args(a: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        backbones=a.variants, sizes=a.sizes, windows=a.windows, pe=not a.no_pe, dtypes=tuple(a.dtype),
        batch=a.batch, repeats=a.repeats, warmup=a.warmup, device=a.device, compile=a.compile,
        inference=a.inference, text=a.text, inference_threshold=a.inference_threshold, mm_size=a.mm_size,
        off_grid=a.off_grid, rss_method=a.rss_method, fixture=a.fixture, seed=a.seed, tiny=a.tiny,
        tf32=False if a.no_tf32 else None)


def format_plan(rows: Sequence[Dict[str, Any]]) -> str:
    """Markdown list of planned rows (``--dry-run``)."""
    lines = ['| backbone | input | grid | window | dtype | status |', '|---|---|---|---|---|---|']
    for r in rows:
        inp = f"{r['input'][0]}x{r['input'][1]}" if r.get('input') else '-'
        lines.append(f"| {r['label']} | {inp} | {r['grid']} | {_window_label(r)} | {r['dtype']} | "
                     f"{r['status']}{': ' + r['reason'] if r.get('reason') else ''} |")
    return '\n'.join(lines)


def run_cli(a: argparse.Namespace) -> str:
    """Run what the parsed options describe (``--dry-run``: only plan it), write the files, return the text to
    print: the table, the notes and the paths written."""
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = config_from_args(a)
    if a.dry_run:
        rows = plan_rows(cfg)
        return f"{format_plan(rows)}\n\n{sum(r['status'] == 'ok' for r in rows)} rows to measure"
    result = run_benchmark(cfg)
    paths = write_outputs(result, a.json, a.plot)
    return f"{format_table(result)}\n\nwrote {paths['json']}, {paths['markdown']}, {paths['plot']}"
