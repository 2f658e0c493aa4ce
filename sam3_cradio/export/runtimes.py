"""Exported trunks in onnxruntime and OpenVINO, as SAM3 trunks (``build_sam3(..., trunk_runtime=,
trunk_model=)``).

CPU options, chosen on purpose (``RuntimeOptions`` records them; ``docs/deploy.md`` gives the reasons):

* threads: intra-op threads = ``torch.get_num_threads()`` when the session is made, so that the trunk and the
  rest of SAM3 (torch) use the same cores; onnxruntime runs one op at a time (``inter_op_num_threads=1``,
  sequential execution); OpenVINO uses ``INFERENCE_NUM_THREADS`` with ``PERFORMANCE_HINT=LATENCY`` (one stream:
  one image as fast as possible, not many in parallel).
* graph optimisation: onnxruntime ``ORT_ENABLE_ALL`` (constant folding, layer-norm / GELU / MatMul fusions,
  layout transforms); OpenVINO compiles the graph for the CPU itself.
* precision: float32 by default (what parity is checked in). bf16 only where it is real: OpenVINO's
  ``INFERENCE_PRECISION_HINT=bf16`` on CPUs that report BF16 (AVX512-BF16 or AMX); OpenVINO would otherwise pick
  bf16 by itself on such CPUs, so the float32 path sets ``f32`` explicitly. onnxruntime's CPU provider has no
  bfloat16 kernels, so it stays float32. ``precision='auto'`` follows torch: bf16 inside a bf16
  ``torch.autocast`` where the runtime has it, float32 otherwise.
"""
from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..options import TRUNK_RUNTIMES
from ..registry import ModelSpec
from ..trunk import check_input_size
from .info import ExportInfo, check_info, file_sha256, read_info

_logger = logging.getLogger(__name__)

__all__ = ['RUNTIMES', 'EXPORTED_RUNTIMES', 'PRECISIONS', 'RuntimeOptions', 'ExportedModel', 'ExportedTrunk',
           'runtime_unavailable', 'cpu_has_bf16', 'trunk_config']

RUNTIMES = TRUNK_RUNTIMES  # torch, then the runtimes of exported files
EXPORTED_RUNTIMES = tuple(r for r in RUNTIMES if r != 'torch')
PRECISIONS = ('auto', 'fp32', 'bf16')
_PACKAGES = {'onnxruntime': 'onnxruntime', 'openvino': 'openvino'}
_OPSET_HINT = ('. A runtime that does not know opset 23 (its Attention op) needs a file exported with --opset 18')
ORT_NO_BF16 = ("onnxruntime's CPU execution provider has no bfloat16 kernels (MatMul in bf16 is not implemented; "
               "its bf16 fast-math option is for ARM64 only)")


def runtime_unavailable(runtime: str) -> str | None:
    """Why ``runtime`` cannot run here (not installed, or unknown), or None when it can."""
    if runtime not in RUNTIMES:
        return f'unknown runtime {runtime!r}; choose one of {list(RUNTIMES)}'
    if runtime == 'torch':
        return None
    try:
        importlib.import_module(_PACKAGES[runtime])
    except ImportError as e:
        return f'{runtime} is not installed ({e}); pip install "sam3-cradio[export]"'
    return None


def _import(runtime: str) -> Any:
    reason = runtime_unavailable(runtime)
    if reason is not None:
        raise ValueError(reason)
    return importlib.import_module(_PACKAGES[runtime])


def cpu_has_bf16() -> bool:
    """The CPU computes bf16 natively (AVX512-BF16 or AMX), as OpenVINO reports it; False without OpenVINO."""
    try:
        import openvino as ov
    except ImportError:
        return False
    return 'BF16' in ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')


@dataclass
class RuntimeOptions:
    """The settings a runtime session was made with (what the benchmark records)."""
    runtime: str
    threads: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {'runtime': self.runtime, 'threads': self.threads, **self.settings}


class _OrtRunner:
    def __init__(self, path: Path, threads: int) -> None:
        ort = _import('onnxruntime')
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle workers sleep instead of spinning: spinning threads would take the cores from torch, which runs
        # the rest of SAM3 right after the trunk (and from the next call in an interleaved benchmark).
        so.add_session_config_entry('session.intra_op.allow_spinning', '0')
        so.log_severity_level = 3  # errors only: its warnings about unused initializers are noise here
        try:
            self.session = ort.InferenceSession(str(path), so, providers=['CPUExecutionProvider'])
        except Exception as e:  # onnxruntime's own exception types: a file it cannot load is a user error
            raise ValueError(f'onnxruntime {ort.__version__} cannot load {path}: {str(e).splitlines()[0]}'
                             f'{_OPSET_HINT}') from None
        self.input_name = self.session.get_inputs()[0].name
        self.options = RuntimeOptions('onnxruntime', threads, {
            'version': ort.__version__, 'provider': 'CPUExecutionProvider', 'inter_op_threads': 1,
            'execution_mode': 'sequential', 'graph_optimization_level': 'ORT_ENABLE_ALL',
            'allow_spinning': False})

    def bf16_unavailable(self) -> str | None:
        return ORT_NO_BF16

    def run(self, x: np.ndarray, precision: str) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: x})


class _OpenVinoRunner:
    def __init__(self, path: Path, threads: int) -> None:
        ov = _import('openvino')
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(path))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses for unreadable files
            raise ValueError(f'OpenVINO {ov.__version__} cannot read {path}: {str(e).splitlines()[0]}'
                             f'{_OPSET_HINT}') from None
        self.threads = threads
        self._compiled: dict[str, tuple[Any, Any]] = {}
        self._has_bf16 = 'BF16' in self.core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')
        self.options = RuntimeOptions('openvino', threads, {
            'version': ov.__version__, 'device': 'CPU', 'performance_hint': 'LATENCY',
            'inference_precision_hint': {'fp32': 'f32', 'bf16': 'bf16'}})

    def bf16_unavailable(self) -> str | None:
        return None if self._has_bf16 else 'this CPU has no native bf16 (AVX512-BF16 / AMX), as OpenVINO reports it'

    def _request(self, precision: str) -> Any:
        if precision not in self._compiled:
            config = {'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_NUM_THREADS': self.threads,
                      'INFERENCE_PRECISION_HINT': 'bf16' if precision == 'bf16' else 'f32'}
            compiled = self.core.compile_model(self.model, 'CPU', config)
            self._compiled[precision] = (compiled, compiled.create_infer_request())
            # what OpenVINO actually compiled with (its Type prints as "<Type: 'float32'>": keep its short name)
            self.options.settings[f'compiled_{precision}'] = {
                k: _ov_str(compiled.get_property(k)) for k in (
                    'INFERENCE_PRECISION_HINT', 'PERFORMANCE_HINT', 'NUM_STREAMS', 'INFERENCE_NUM_THREADS',
                    'ENABLE_CPU_PINNING')}
        return self._compiled[precision][1]

    def run(self, x: np.ndarray, precision: str) -> list[np.ndarray]:
        request = self._request(precision)
        results = request.infer({0: x})  # copies the outputs out of the request's buffers
        return [results[out] for out in request.model_outputs]


def _ov_str(value: Any) -> str:
    return value.to_string() if hasattr(value, 'to_string') else str(value)


_RUNNERS = {'onnxruntime': _OrtRunner, 'openvino': _OpenVinoRunner}


class ExportedModel:
    """An exported file (trunk or encoder) in a runtime: ``run(x)`` -> ``{output name: tensor}``.

    Args:
        path: the .onnx file (:mod:`sam3_cradio.export.export`).
        runtime: 'onnxruntime' or 'openvino'.
        precision: 'fp32', 'bf16' (refused where the runtime or the CPU has no bf16), or 'auto' (bf16 inside a
            bf16 ``torch.autocast`` where available, else float32).
        threads: intra-op threads (default: ``torch.get_num_threads()`` now).
        info: the file's :class:`ExportInfo` when already read.
    """

    def __init__(self, path: str | os.PathLike, runtime: str = 'onnxruntime', *, precision: str = 'auto',
                 threads: int | None = None, info: ExportInfo | None = None) -> None:
        if runtime not in _RUNNERS:
            raise ValueError(f'an exported model runs in {list(_RUNNERS)}, not {runtime!r}')
        if precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {list(PRECISIONS)}, got {precision!r}')
        self.path = Path(path)
        self.info = info if info is not None else read_info(self.path)
        self.runtime = runtime
        self.threads = int(threads or torch.get_num_threads())
        self._runner = _RUNNERS[runtime](self.path, self.threads)
        self.bf16_unavailable = self._runner.bf16_unavailable()
        if precision == 'bf16' and self.bf16_unavailable:
            raise ValueError(f'precision bf16 with {runtime}: {self.bf16_unavailable}; use fp32')
        self.precision = precision
        self._said_fp32 = False

    @property
    def options(self) -> RuntimeOptions:
        return self._runner.options

    def resolve_precision(self, device_type: str = 'cpu', precision: str | None = None) -> str:
        """The precision a call runs in: the given one, else this model's; 'auto' follows torch's autocast."""
        p = precision or self.precision
        if p == 'auto':
            amp = torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16
            if amp and self.bf16_unavailable and not self._said_fp32:
                _logger.info('bf16 autocast: the %s trunk runs in float32 (%s)', self.runtime, self.bf16_unavailable)
                self._said_fp32 = True
            p = 'bf16' if amp and not self.bf16_unavailable else 'fp32'
        if p == 'bf16' and self.bf16_unavailable:
            raise ValueError(f'precision bf16 with {self.runtime}: {self.bf16_unavailable}; use fp32')
        return p

    def run(self, x: torch.Tensor, precision: str | None = None) -> dict[str, torch.Tensor]:
        """Run on ``x`` (any device and float dtype; computed on the CPU); outputs are float32 on ``x``'s device."""
        p = self.resolve_precision(x.device.type, precision)
        arr = np.ascontiguousarray(x.detach().to('cpu', torch.float32).numpy())
        outs = self._runner.run(arr, p)
        return {name: torch.from_numpy(np.asarray(o)).to(x.device)
                for name, o in zip(self.info.output_names, outs)}

    def __getstate__(self) -> dict[str, Any]:
        # sessions do not pickle; a copy reopens the file
        return {k: v for k, v in self.__dict__.items() if k != '_runner'}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._runner = _RUNNERS[self.runtime](self.path, self.threads)


class ExportedTrunk(nn.Module):
    """SAM3's trunk contract on an exported trunk file: ``channel_list``, ``forward(x) -> [features]`` with x
    (B, 3, H, W) in [-1, 1] and features (B, C, H/16, W/16), ``image_size`` (refuses other input sizes, like
    :class:`~sam3_cradio.trunk.CRadioTrunk`).

    It has no parameters (the weights live in the file) and gives no gradients. ``expect`` (backbone, resolution,
    window, adaptor, weights_sha256, weights_required) is checked against the file's metadata
    (:func:`~sam3_cradio.export.info.check_info`). ``precision`` may be changed after construction.
    """

    def __init__(self, path: str | os.PathLike, runtime: str = 'onnxruntime', *, precision: str = 'auto',
                 threads: int | None = None, expect: dict[str, Any] | None = None) -> None:
        super().__init__()
        info = read_info(path)
        check_info(info, path, kind='trunk', **(expect or {}))
        self.exported = ExportedModel(path, runtime, precision=precision, threads=threads, info=info)
        self.info = info
        self.runtime = runtime
        self.channel_list: list[int] = [info.channels]
        self.image_size: int | None = info.resolution
        self.patch_size = info.patch_size

    @property
    def precision(self) -> str:
        return self.exported.precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in PRECISIONS:
            raise ValueError(f'precision must be one of {list(PRECISIONS)}, got {value!r}')
        if value == 'bf16' and self.exported.bf16_unavailable:
            raise ValueError(f'precision bf16 with {self.runtime}: {self.exported.bf16_unavailable}; use fp32')
        self.exported.precision = value

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_input_size(x, self.image_size, f'this SAM3 model\'s trunk ({self.exported.path.name}) was exported',
                         'or export the trunk for that size')
        return [self.exported.run(x)[self.info.output_names[0]]]

    def extra_repr(self) -> str:
        return f'{self.runtime}, {self.exported.path.name}: {self.info.describe()}'


def trunk_config(
        spec: ModelSpec,
        runtime: str,
        trunk_model: str | os.PathLike | None,
        *,
        cradio_checkpoint: str | os.PathLike | None = None,
        pretrained: bool = True,
        adaptor: str = 'sam3',
) -> dict[str, Any] | None:
    """The hydra node of the trunk for ``build_sam3(trunk_runtime=runtime, trunk_model=...)``; None for 'torch'.

    Everything is checked here, before any model is built: the runtime is known and installed, the file exists,
    is ONNX, was written by ``sam3-cradio export`` for this backbone, size, window and adaptor, and holds the
    weights of ``cradio_checkpoint`` when one is given (sha256), or non-random weights when SAM3's pretrained
    weights are loaded.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f'trunk_runtime must be one of {list(RUNTIMES)}, got {runtime!r}')
    if runtime == 'torch':
        if trunk_model is not None:
            raise ValueError("trunk_model is an exported trunk for trunk_runtime='onnxruntime' or 'openvino'; "
                             "the torch runtime builds the trunk from weights (drop trunk_model or name a runtime)")
        return None
    if trunk_model is None:
        raise ValueError(f'trunk_runtime={runtime!r} runs an exported trunk: pass trunk_model=FILE.onnx '
                         f'(made by sam3-cradio export)')
    if not spec.backbone.is_cradio:
        raise ValueError(f'{spec.name} is SAM3\'s own encoder; exported trunks are C-RADIO trunks')
    _import(runtime)
    path = Path(trunk_model).resolve()
    expect: dict[str, Any] = {
        'backbone': spec.name, 'resolution': spec.resolution, 'window': spec.window,
        'adaptor': adaptor, 'weights_sha256': file_sha256(cradio_checkpoint) if cradio_checkpoint else None,
        'weights_required': bool(pretrained and cradio_checkpoint is None)}
    info = read_info(path)
    check_info(info, trunk_model, kind='trunk', **expect)
    _logger.info('trunk from %s in %s: %s', path, runtime, info.describe())
    return {'_target_': f'{__name__}.ExportedTrunk', 'path': str(path), 'runtime': runtime, 'expect': expect}

