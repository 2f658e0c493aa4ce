"""Measurements: FLOPs (torch's counter plus CPU attention), peak memory (CUDA or CPU RSS), the machine's matmul
peak, interleaved timing of several calls, and the machine state the timings depend on."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..reporting import environment
from .rows import Measurement

_logger = logging.getLogger(__name__)

__all__ = ['attention_flops', 'attention_flop_mapping', 'count_flops', 'PeakMemory', 'reset_hwm', 'rss_bytes',
           'malloc_trim', 'MatmulPeak', 'matmul_throughput', 'TimedCall', 'check_real', 'interleave', 'sync',
           'op_class', 'op_profile', 'timing_environment']


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


def attention_flop_mapping() -> dict[Any, Callable[..., int]]:
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


def count_flops(fn: Callable[..., Any], *args: Any, fake: bool = True) -> tuple[int, dict[str, int]]:
    """FLOPs of ``fn(*args)`` under ``FlopCounterMode`` (with :func:`attention_flop_mapping`), and per aten op.

    With ``fake`` the tensor arguments are replaced by fake tensors of the same shapes, so nothing is computed
    (a full-size forward costs no time); if the function cannot run on fake tensors it is run for real.
    """
    from torch.utils.flop_counter import FlopCounterMode

    def run(call_args: Sequence[Any]) -> tuple[int, dict[str, int]]:
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
# Memory
# --------------------------------------------------------------------------------------------------------------

def rss_bytes() -> int:
    """This process's resident memory now, in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def _read_hwm() -> int | None:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``); False where that
    is not possible."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return _read_hwm() is not None
    except OSError:
        return False


_LIBC: Any = None


def malloc_trim() -> None:
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

    def __init__(self, device: torch.device | str, method: str = 'auto', interval: float = 0.001) -> None:
        self.device = torch.device(device)
        self.interval = interval
        if self.device.type == 'cuda':
            self.method = 'cuda'
        elif method == 'auto':
            self.method = 'vmhwm' if reset_hwm() else 'sampler'
        else:
            if method == 'vmhwm' and not reset_hwm():
                raise RuntimeError('VmHWM cannot be reset here (/proc/self/clear_refs); use the sampler method')
            self.method = method
        self.peak_bytes = 0
        self._base = 0
        self._samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._samples.append(rss_bytes())

    def __enter__(self) -> PeakMemory:
        if self.method == 'cuda':
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        malloc_trim()
        self._base = rss_bytes()
        self._samples = [self._base]
        if self.method == 'vmhwm':
            reset_hwm()
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
            peak = max(_read_hwm() or 0, rss_bytes())
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self._samples.append(rss_bytes())
            peak = max(self._samples)
        self.peak_bytes = max(int(peak) - int(self._base), 0)


# --------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


@dataclass(kw_only=True)
class MatmulPeak:
    """``torch.mm`` throughput on two (n, n) matrices: the best round is this machine's peak for the fractions."""
    n: int
    dtype: str
    gflops_best: float
    gflops_median: float
    times_s: list[float]


def matmul_throughput(device: torch.device | str, dtype: torch.dtype, n: int = 2048, repeats: int = 5,
                      warmup: int = 2) -> MatmulPeak:
    """GFLOP/s of ``torch.mm`` on two (n, n) matrices of ``dtype``: best and median over ``repeats``.

    On CUDA, fp32 follows ``torch.backends.cuda.matmul.allow_tf32`` (recorded in the JSON), as the benchmarked
    models do.
    """
    device = torch.device(device)
    g = torch.Generator(device='cpu').manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync(device)
            t0 = time.perf_counter()
            torch.mm(a, b)
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    flop = 2 * n ** 3
    return MatmulPeak(n=n, dtype=str(dtype).replace('torch.', ''), gflops_best=flop / min(times) / 1e9,
                      gflops_median=flop / float(np.median(times)) / 1e9, times_s=times)


@dataclass
class TimedCall:
    """One configuration in an interleaved timing: ``prepare`` (untimed, e.g. switch the window) then ``call``
    (timed) under autocast for ``dtype``; ``times`` and ``peaks`` collect the timed rounds."""
    name: str                         # for the log and errors
    prepare: Callable[[], None]
    call: Callable[[], Any]
    dtype: str
    times: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)
    mem_method: str = ''

    def stats(self) -> dict[str, Any]:
        """The :class:`~sam3_cradio.bench.rows.Measurement` fields of the timed rounds."""
        return Measurement.stats(self.times, self.peaks, self.mem_method)


def check_real(out: Any, name: str) -> None:
    """Refuse timings of a call that computed nothing: fake tensors (left behind by a FLOP count on fake inputs,
    e.g. in a model's cache) make a forward return in no time."""
    from torch._subclasses.fake_tensor import FakeTensor
    from torch.utils._pytree import tree_leaves

    if any(isinstance(t, FakeTensor) for t in tree_leaves(out)):
        raise RuntimeError(
            f'{name} returned fake tensors after FLOP counting: a fake tensor was cached inside the model, so its '
            f'timings would be meaningless')


def interleave(calls: Sequence[TimedCall], device: torch.device, repeats: int, warmup: int,
               rss_method: str = 'auto') -> None:
    """Round-robin over the calls: ``warmup`` untimed rounds, then ``repeats`` timed ones, so that machine noise
    falls on every call alike. On CUDA the device is synchronised before and after every timed call.

    Python's garbage collector is off during each call (as in ``timeit``) and runs once between rounds.
    """
    for round_ in range(warmup + repeats):
        timed = round_ >= warmup
        gc.collect()
        for c in calls:
            c.prepare()
            amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=c.dtype == 'bf16')
            mem = PeakMemory(device, rss_method)
            gc.disable()
            try:
                with torch.inference_mode(), amp, mem:
                    sync(device)
                    t0 = time.perf_counter()
                    out = c.call()
                    sync(device)
                    dt = time.perf_counter() - t0
                check_real(out, c.name)
                del out
            finally:
                gc.enable()
            if timed:
                c.times.append(dt)
                c.peaks.append(mem.peak_bytes)
                c.mem_method = mem.method
            _logger.info('%s %s round %d%s: %.3fs', c.name, c.dtype, round_, '' if timed else ' (warm-up)', dt)


# --------------------------------------------------------------------------------------------------------------
# Where the time goes
# --------------------------------------------------------------------------------------------------------------

_LINEAR_OPS = {'aten.mm', 'aten.addmm', 'aten.bmm', 'aten.baddbmm', 'aten.matmul', 'aten.linear'}


def op_class(name: str) -> str:
    """'linear', 'attention' or 'other' for an op named as the FLOP counter ('aten.addmm') or the profiler
    ('aten::addmm') names it."""
    name = name.replace('::', '.')
    if 'scaled_dot_product' in name or 'flash_attention' in name or 'efficient_attention' in name:
        return 'attention'
    return 'linear' if name in _LINEAR_OPS else 'other'


def op_profile(call: Callable[[], Any], device: torch.device, dtype: str,
               flops_by_op: dict[str, int]) -> dict[str, dict[str, float]]:
    """Profile one call (``torch.profiler``, untimed otherwise) and split its time into op classes
    (:func:`op_class`): each class's self time, its share, its FLOPs (from ``flops_by_op``) and GFLOP/s. Shows
    which part of a model a dtype speeds up: on a CPU without AMX, bf16 doubles the linear layers but not torch's
    flash-attention kernel."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == 'cuda'
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == 'bf16')
    with torch.inference_mode(), amp, profile(activities=activities) as prof:
        out = call()
        sync(device)
    del out
    seconds = {'linear': 0.0, 'attention': 0.0, 'other': 0.0}
    for e in prof.key_averages():
        us = e.self_device_time_total if cuda else e.self_cpu_time_total
        seconds[op_class(e.key)] += us / 1e6
    gflop = {'linear': 0.0, 'attention': 0.0, 'other': 0.0}
    for name, n in flops_by_op.items():
        gflop[op_class(name)] += n / 1e9
    total = sum(seconds.values()) or 1.0
    return {k: {'seconds': seconds[k], 'share': seconds[k] / total, 'gflop': gflop[k],
                'gflops_per_s': gflop[k] / seconds[k] if seconds[k] > 0 else 0.0} for k in seconds}


# --------------------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------------------

def timing_environment(device: torch.device) -> dict[str, Any]:
    """:func:`sam3_cradio.reporting.environment` (git SHA, device, versions) plus what a timing depends on: torch's
    CPU threads, the TF32 switches (CUDA) and the float32 matmul precision; every benchmark's ``meta``."""
    env = environment(device)
    env['threads'] = torch.get_num_threads()
    if device.type == 'cuda':
        env['cuda_matmul_allow_tf32'] = torch.backends.cuda.matmul.allow_tf32
        env['cudnn_allow_tf32'] = torch.backends.cudnn.allow_tf32
    env['float32_matmul_precision'] = torch.get_float32_matmul_precision()
    return env
