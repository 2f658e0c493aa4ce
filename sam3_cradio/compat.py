"""Every change sam3_cradio makes to Meta's SAM 3 (PyPI ``sam3==0.1.4``), in one module.

docs/sam3-compat.md lists each change: the sam3 file and line it touches, why, and when it applies.

Two kinds of change live here, each a named function the rest of the package calls:

- **CPU shims** (:func:`apply_cpu_shims`): sam3 0.1.4 hard-codes CUDA in a handful of places (``device="cuda"``,
  ``.cuda()``, ``pin_memory()``, bfloat16 features that only CUDA autocast absorbs), so it neither builds nor
  runs without a GPU. Each shim wraps one sam3 function or method in-process (no fork, no edited files). A wrapper
  changes nothing unless :func:`needs_cpu_shims` holds for the call: CUDA is absent, or the module or tensor the
  call works on is not on a CUDA device. Applying is explicit (never at import), idempotent and gated on the
  installed sam3 version; :func:`remove_cpu_shims` puts back every original object, and :func:`cpu_shims` is a
  context manager that applies them for a block and leaves sam3 as it found it.
- **Per-model overrides**, which touch one model object and undo themselves: :func:`override_propagation_plan`
  (which propagation sam3's video model runs next), :func:`tracker_non_overlap_output` (whether the tracker makes
  its output masks disjoint) and :func:`set_interactive_feature_sizes` (the interactive predictor's feature sizes,
  which sam3 hard-codes for a 72x72 grid).

Fixed by the caller rather than by a patch: install ``psutil`` / ``scikit-image`` (undeclared sam3 dependencies,
checked here with a clear message), pass ``bpe_path=bpe_path()`` and ``load_from_HF=False`` to sam3's builders,
build ``Sam3Processor(model, device=...)``, and use ``build_sam3_video_model`` rather than the multi-GPU
``build_sam3_video_predictor``.

Example:
    >>> from sam3_cradio import compat
    >>> with compat.cpu_shims():  # doctest: +SKIP
    ...     model = build_sam3_image_model(bpe_path=compat.bpe_path(), load_from_HF=False, device='cpu')
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import sys
import threading
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = [
    'SUPPORTED_SAM3_VERSION',
    'BPE_FILENAME',
    'CPU_SHIMS',
    'needs_cpu_shims',
    'import_sam3',
    'apply_cpu_shims',
    'applied_cpu_shims',
    'remove_cpu_shims',
    'cpu_shims',
    'check_sam3_version',
    'override_propagation_plan',
    'tracker_non_overlap_output',
    'set_interactive_feature_sizes',
    'bpe_path',
    'init_uninitialised_text_params',
    'move_caches_to',
]

logger = logging.getLogger(__name__)

SUPPORTED_SAM3_VERSION = '0.1.4'
BPE_FILENAME = 'bpe_simple_vocab_16e6.txt.gz'

# Marker set on every wrapper (and on the edt stub): recognises an already-patched attribute.
_SHIM_ATTR = '__sam3_cradio_shim__'


@dataclass(frozen=True)
class _Patch:
    """One patched attribute and what to put back: ``original`` is the raw object found in ``owner.__dict__``
    (a staticmethod stays a staticmethod), or None when ``owner`` only inherited the attribute."""
    shim: str
    owner: Any
    attr: str
    original: Any


_lock = threading.RLock()
_patches: list[_Patch] = []  # in the order applied; undone in reverse
_applied: list[str] = []
_edt_stub: types.ModuleType | None = None  # the stub module, while it is registered by us
_done = False


# --------------------------------------------------------------------------------------------------------------
# When a shim acts
# --------------------------------------------------------------------------------------------------------------

def needs_cpu_shims(device: str | torch.device | None = None) -> bool:
    """True where sam3's CUDA-only code needs a CPU fix: CUDA is absent, or ``device`` is given and is not CUDA.

    Every wrapper asks this on each call (not once), with the device of the module or tensor it works on when it
    has one, so a model on the GPU runs sam3's own code and a model on the CPU gets the fix on any machine.
    """
    if not torch.cuda.is_available():
        return True
    return device is not None and torch.device(device).type != 'cuda'


def _device_of(obj: Any) -> torch.device | None:
    """Device of a module (its first parameter), a tensor, or anything with a ``device`` attribute."""
    if isinstance(obj, torch.Tensor):
        return obj.device
    if isinstance(obj, nn.Module):
        p = next(obj.parameters(), None)
        if p is not None:
            return p.device
    d = getattr(obj, 'device', None)
    return torch.device(d) if isinstance(d, (str, torch.device)) else None


def _self_device(self: Any, *args: Any, **kwargs: Any) -> torch.device | None:
    return _device_of(self)


def _no_device(*args: Any, **kwargs: Any) -> None:
    return None


def _is_cuda_device(device: Any) -> bool:
    if isinstance(device, (str, torch.device, int)):
        try:
            return torch.device(device).type == 'cuda'
        except (RuntimeError, TypeError):
            return False
    return False


class _CudaToDeviceMode(TorchFunctionMode):
    """Redirects sam3's CUDA-only calls to ``device`` while a wrapped sam3 function runs.

    Three patterns only: ``Tensor.pin_memory()`` becomes a no-op (pinning needs a CUDA driver and is pointless
    without a GPU), ``Tensor.cuda(...)`` becomes ``.to(device)``, and a ``device=`` keyword naming CUDA (e.g.
    ``torch.zeros(..., device="cuda")``) becomes ``device``. Torch function modes are thread-local, so other threads
    never see the redirection, and nothing outside the wrapped call changes.
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = torch.device(device)

    def __torch_function__(self, func: Callable, types: tuple[type, ...], args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.pin_memory:
            return args[0]
        if func is torch.Tensor.cuda:
            return args[0].to(self.device, non_blocking=bool(kwargs.get('non_blocking', False)))
        if _is_cuda_device(kwargs.get('device')):
            kwargs['device'] = self.device
        return func(*args, **kwargs)


def _redirect_cuda(fn: Callable, device_of: Callable[..., torch.device | None] = _no_device) -> Callable:
    """Wrap ``fn``: where :func:`needs_cpu_shims` holds for ``device_of(*args)``, run it under
    :class:`_CudaToDeviceMode` (to that device, or the CPU when it is unknown)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        device = device_of(*args, **kwargs)
        if not needs_cpu_shims(device):
            return fn(*args, **kwargs)
        with _CudaToDeviceMode(device or torch.device('cpu')):
            return fn(*args, **kwargs)

    return wrapper


def _edit_args(fn: Callable, edit: Callable[[inspect.BoundArguments], None],
               device_of: Callable[..., torch.device | None] = _no_device) -> Callable:
    """Wrap ``fn``: where :func:`needs_cpu_shims` holds, ``edit`` may change its bound arguments (however passed)."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not needs_cpu_shims(device_of(*args, **kwargs)):
            return fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        edit(bound)
        return fn(*bound.args, **bound.kwargs)

    return wrapper


def _force_kwargs(fn: Callable, forced: dict[str, Any],
                  device_of: Callable[..., torch.device | None] = _no_device) -> Callable:
    """Wrap ``fn``: where :func:`needs_cpu_shims` holds, the named arguments are forced (however passed)."""

    def force(bound: inspect.BoundArguments) -> None:
        for name, value in forced.items():
            if name in bound.arguments and bound.arguments[name] != value:
                logger.debug('%s: overriding %s=%r with %r (CPU)', fn.__qualname__, name, bound.arguments[name], value)
            bound.arguments[name] = value

    return _edit_args(fn, force, device_of)


def _patch(owner: Any, attr: str, make_wrapper: Callable[[Callable], Callable], shim: str) -> bool:
    """Replace ``owner.attr`` by ``make_wrapper(original)`` and record how to undo it; False if already patched.

    ``staticmethod`` attributes are unwrapped and re-wrapped so they stay static. The original function stays
    reachable as ``wrapper.__wrapped__`` (set by ``functools.wraps``).
    """
    raw = inspect.getattr_static(owner, attr)
    is_static = isinstance(raw, staticmethod)
    original = raw.__func__ if is_static else raw
    if getattr(original, _SHIM_ATTR, None) is not None:
        return False
    wrapper = make_wrapper(original)
    setattr(wrapper, _SHIM_ATTR, shim)
    own = vars(owner).get(attr)  # None: inherited, so undoing means deleting the attribute again
    setattr(owner, attr, staticmethod(wrapper) if is_static else wrapper)
    _patches.append(_Patch(shim, owner, attr, own))
    logger.debug('sam3 shim %r: patched %s.%s', shim, getattr(owner, '__name__', owner), attr)
    return True


# --------------------------------------------------------------------------------------------------------------
# CPU shims, one per blocker. Each returns True when it patched something.
# --------------------------------------------------------------------------------------------------------------

def shim_edt_stub() -> bool:
    """``sam3/model/edt.py:6-7`` imports ``triton`` at import time (reached via ``sam3_tracker_utils.py:8``).

    ``edt_triton`` serves only training-time point sampling (``sam3_tracker_utils.py:178``). When ``triton`` cannot
    be imported, register a stub module ``sam3.model.edt`` whose ``edt_triton`` raises a clear error, so ``import
    sam3`` works. ``triton`` itself is never stubbed (``torch._dynamo`` probes ``triton.language``). Does nothing
    when triton imports or a ``sam3.model.edt`` module is already loaded.
    """
    global _edt_stub
    if 'sam3.model.edt' in sys.modules:
        return False
    try:
        import triton  # noqa: F401
        return False
    except ImportError:
        pass

    stub = types.ModuleType('sam3.model.edt')
    stub.__doc__ = 'Stub of sam3.model.edt registered by sam3_cradio.compat because triton is not importable.'

    def edt_triton(data: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            'sam3.model.edt.edt_triton needs triton (used only for training-time point sampling); '
            'it was replaced by a stub from sam3_cradio.compat because `import triton` failed. '
            'Install triton to use it.'
        )

    stub.edt_triton = edt_triton
    setattr(stub, _SHIM_ATTR, 'edt_stub')
    sys.modules['sam3.model.edt'] = stub
    _edt_stub = stub
    return True


def shim_position_encoding_cpu() -> bool:
    """``sam3/model/position_encoding.py:47`` precomputes with ``torch.zeros(..., device="cuda")``.

    ``PositionEmbeddingSine.__init__`` fills its cache for ``precompute_resolution`` (vision neck,
    ``model_builder.py:503``; tracker memory encoder, ``:333-339``). Without CUDA the wrapped ``__init__`` runs the
    same code with that tensor on the CPU. (With CUDA present the cache is built there and
    :func:`move_caches_to` moves it to the model's device.)
    """
    from sam3.model.position_encoding import PositionEmbeddingSine

    return _patch(PositionEmbeddingSine, '__init__', _redirect_cuda, 'position_encoding_cpu')


def shim_decoder_coords_cpu() -> bool:
    """``sam3/model/decoder.py:280-282`` calls ``self._get_coords(feat_size, feat_size, device="cuda")``.

    ``TransformerDecoder.__init__`` precomputes the box-RPB coordinates for resolution 1008 / stride 14 on CUDA.
    Without CUDA the wrapped ``_get_coords`` staticmethod maps a CUDA device to the CPU.
    """
    from sam3.model.decoder import TransformerDecoder

    def make(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def _get_coords(H: int, W: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if needs_cpu_shims() and _is_cuda_device(device):
                device = torch.device('cpu')
            return fn(H, W, device)

        return _get_coords

    return _patch(TransformerDecoder, '_get_coords', make, 'decoder_coords_cpu')


def shim_pin_memory_cpu() -> bool:
    """``pin_memory()`` needs a CUDA driver; for a model off the GPU it is skipped at sam3's three call sites.

    - ``sam3/model/geometry_encoders.py:659`` ``SequenceGeometryEncoder._encode_boxes`` (every text/box prompt).
    - ``sam3/model/sam3_tracker_base.py:168`` ``Sam3TrackerBase._get_tpos_enc`` (video propagation).
    - ``sam3/model/sam3_video_inference.py:480`` ``Sam3VideoInference._postprocess_output`` (video outputs).

    Gated on the module's device: a model on the GPU pins as sam3 does; a model on the CPU never pins (pinned
    memory only speeds up copies to a GPU).
    """
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model.sam3_tracker_base import Sam3TrackerBase
    from sam3.model.sam3_video_inference import Sam3VideoInference

    def make(fn: Callable) -> Callable:
        return _redirect_cuda(fn, device_of=_self_device)

    patched = [
        _patch(SequenceGeometryEncoder, '_encode_boxes', make, 'pin_memory_cpu'),
        _patch(Sam3TrackerBase, '_get_tpos_enc', make, 'pin_memory_cpu'),
        _patch(Sam3VideoInference, '_postprocess_output', make, 'pin_memory_cpu'),
    ]
    return any(patched)


def shim_tracker_cuda_calls() -> bool:
    """Hard-coded ``.cuda()`` in the tracker becomes ``.to(tracker.device)`` when the tracker is not on CUDA.

    - ``sam3/model/sam3_tracker_base.py:657`` and ``:664``
      ``Sam3TrackerBase._prepare_memory_conditioned_features`` (memory features / pos-enc, every propagation).
    - ``sam3/model/sam3_tracking_predictor.py:303`` ``Sam3TrackerPredictor.add_new_points_or_box`` (previous
      mask logits when refining an existing object).
    """
    from sam3.model.sam3_tracker_base import Sam3TrackerBase
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor

    def make(fn: Callable) -> Callable:
        return _redirect_cuda(fn, device_of=_self_device)

    patched = [
        _patch(Sam3TrackerBase, '_prepare_memory_conditioned_features', make, 'tracker_cuda_calls'),
        _patch(Sam3TrackerPredictor, 'add_new_points_or_box', make, 'tracker_cuda_calls'),
    ]
    return any(patched)


def shim_tracker_state_on_cpu() -> bool:
    """``sam3/model/sam3_tracking_predictor.py:81`` stores the tracker state on CUDA unless offloading.

    ``Sam3VideoInference._init_new_tracker_state`` (``sam3_video_inference.py:984-990``) never passes
    ``offload_state_to_cpu``. When the tracker is not on CUDA, the wrapped ``Sam3TrackerPredictor.init_state``
    forces ``offload_state_to_cpu=True`` and ``offload_video_to_cpu=True`` (the latter avoids ``io_utils``'
    ``.cuda()``).
    """
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor

    def make(fn: Callable) -> Callable:
        return _force_kwargs(fn, {'offload_state_to_cpu': True, 'offload_video_to_cpu': True}, _self_device)

    return _patch(Sam3TrackerPredictor, 'init_state', make, 'tracker_state_on_cpu')


def shim_video_frames_on_cpu() -> bool:
    """``Sam3VideoInference.init_state`` (``sam3/model/sam3_video_inference.py:54``) defaults to
    ``offload_video_to_cpu=False``, which reaches ``images.cuda()`` in ``sam3/model/io_utils.py`` (``:66``,
    ``:107-109``, ``:204-206``, ``:310-312``, ``:326``, ``:395``). When the model is not on CUDA the wrapped
    ``init_state`` forces ``offload_video_to_cpu=True``.
    """
    from sam3.model.sam3_video_inference import Sam3VideoInference

    def make(fn: Callable) -> Callable:
        return _force_kwargs(fn, {'offload_video_to_cpu': True}, _self_device)

    return _patch(Sam3VideoInference, 'init_state', make, 'video_frames_on_cpu')


def _tracker_fpn_to_float32(multigpu_buffer: dict[int, dict[str, tuple[Any, Any]]]) -> None:
    """Cast the buffered ``tracker_backbone_fpn_*`` entries that are not on CUDA from bfloat16 to float32."""
    for frame_buffer in multigpu_buffer.values():
        for key, (value, handle) in list(frame_buffer.items()):
            if key.startswith('tracker_backbone_fpn_') and isinstance(value, torch.Tensor) \
                    and value.dtype == torch.bfloat16 and needs_cpu_shims(value.device):
                frame_buffer[key] = (value.float(), handle)


def shim_tracker_fpn_float32() -> bool:
    """``sam3/model/sam3_image.py:839`` casts the SAM2-neck features to bfloat16 for the all-gather.

    On the GPU, CUDA autocast absorbs the dtype; elsewhere the ``autocast("cuda")`` decorators are disabled and
    ``sam3_video_base.py:383`` (``conv_s0``) fails with "Input type (c10::BFloat16) and bias type (float) should be
    the same". The wrapped ``Sam3ImageOnVideoMultiGPU._build_multigpu_buffer_next_chunk`` casts the buffered
    ``tracker_backbone_fpn_*`` features that are not on CUDA back to float32.
    """
    from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU

    def make(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            _tracker_fpn_to_float32(signature.bind(*args, **kwargs).arguments['multigpu_buffer'])
            return out

        return wrapper

    return _patch(Sam3ImageOnVideoMultiGPU, '_build_multigpu_buffer_next_chunk', make, 'tracker_fpn_float32')


def shim_tracker_memory_float32() -> bool:
    """The tracker stores its memory in bfloat16 (``sam3_tracking_predictor.py:1098``, ``:1149``).

    On the GPU, CUDA autocast absorbs the dtype. Elsewhere, tracking an object on a frame before its first prompted
    frame (no float32 object pointer joins the memory tokens, ``sam3_tracker_base.py:790``) feeds an all-bfloat16
    memory to the float32 memory attention (``sam/transformer.py:300``, ``v_proj``): "mat1 and mat2 must have the
    same dtype". When the image features (``src``) are not on CUDA, the wrapped
    ``TransformerEncoderCrossAttention.forward`` casts the memory (``prompt``, ``prompt_pos``) to their dtype.
    """
    from sam3.model.decoder import TransformerEncoderCrossAttention

    def first_src(bound: inspect.BoundArguments) -> torch.Tensor:
        src = bound.arguments['src']
        return src[0] if isinstance(src, (list, tuple)) else src

    def memory_to_feature_dtype(bound: inspect.BoundArguments) -> None:
        dtype = first_src(bound).dtype
        for name in ('prompt', 'prompt_pos'):
            value = bound.arguments.get(name)
            if isinstance(value, torch.Tensor) and value.dtype != dtype:
                bound.arguments[name] = value.to(dtype)

    def make(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        def src_device(*args: Any, **kwargs: Any) -> torch.device | None:
            return _device_of(first_src(signature.bind(*args, **kwargs)))

        return _edit_args(fn, memory_to_feature_dtype, src_device)

    return _patch(TransformerEncoderCrossAttention, 'forward', make, 'tracker_memory_float32')


def shim_connected_components_empty() -> bool:
    """``sam3/perflib/connected_components.py:48`` ``torch.stack``s an empty list when there are 0 masks.

    ``connected_components_cpu`` raises "stack expects a non-empty TensorList" on a (0, 1, H, W) batch, which
    ``sam3_video_base.py:970`` reaches on every frame without a new detection. For an empty batch on the CPU path
    the wrapped function returns zero labels and counts of the input's shape, with the dtype the non-empty path
    would give (skimage's label dtype depends on the input dtype, so it is probed on a 1x1 image).
    ``connected_components`` looks the function up as a module global, so patching the module attribute covers
    every caller.
    """
    from sam3.perflib import connected_components as cc

    def make(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def connected_components_cpu(input_tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if input_tensor.shape[0] == 0 and needs_cpu_shims(input_tensor.device):
                probe, _ = cc.connected_components_cpu_single(input_tensor.new_zeros(1, 1))
                labels = torch.zeros(input_tensor.shape, dtype=probe.dtype, device=input_tensor.device)
                return labels, labels.clone()
            return fn(input_tensor)

        return connected_components_cpu

    return _patch(cc, 'connected_components_cpu', make, 'connected_components_empty')


def shim_connected_components_counts() -> bool:
    """Speed: ``sam3/perflib/connected_components.py:18-29`` counts each component's pixels with one full-image
    pass per component (quadratic; ~20 s per call on noisy masks), on the CPU path hole filling uses in video.

    For tensors on the CPU path the wrapped ``connected_components_cpu_single`` returns the same labels and counts
    (background 0) from one ``bincount``.
    """
    from sam3.perflib import connected_components as cc

    def make(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def connected_components_cpu_single(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if not needs_cpu_shims(values.device):
                return fn(values)
            from skimage.measure import label

            labels = torch.from_numpy(label(values.cpu().numpy()))
            sizes = torch.bincount(labels.flatten().long())
            sizes[0] = 0  # background pixels keep a count of 0, as in sam3
            return labels, sizes[labels.long()].to(labels.dtype)

        return connected_components_cpu_single

    return _patch(cc, 'connected_components_cpu_single', make, 'connected_components_counts')


# Applied in this order after sam3 is imported (`edt_stub` runs before the import, in import_sam3).
def shim_video_predictor_properties_cpu() -> bool:
    """``sam3/model/sam3_video_predictor.py:277-283`` ``Sam3VideoPredictor._get_torch_and_gpu_properties`` asks
    ``torch.cuda.current_device()`` for a debug line that ``start_session`` (``:122-125``) formats on every call,
    whatever the log level; without a GPU that raises. For a model off the GPU it describes the CPU instead.
    """
    from sam3.model.sam3_video_predictor import Sam3VideoPredictor

    def make(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(self: Any) -> str:
            if needs_cpu_shims(_device_of(getattr(self, 'model', None))):
                return f'torch: {torch.__version__} on CPU ({torch.get_num_threads()} threads)'
            return fn(self)
        return wrapper

    return _patch(Sam3VideoPredictor, '_get_torch_and_gpu_properties', make, 'video_predictor_properties_cpu')


CPU_SHIMS: dict[str, Callable[[], bool]] = {
    'position_encoding_cpu': shim_position_encoding_cpu,
    'decoder_coords_cpu': shim_decoder_coords_cpu,
    'pin_memory_cpu': shim_pin_memory_cpu,
    'tracker_cuda_calls': shim_tracker_cuda_calls,
    'tracker_state_on_cpu': shim_tracker_state_on_cpu,
    'video_frames_on_cpu': shim_video_frames_on_cpu,
    'tracker_fpn_float32': shim_tracker_fpn_float32,
    'tracker_memory_float32': shim_tracker_memory_float32,
    'connected_components_empty': shim_connected_components_empty,
    'connected_components_counts': shim_connected_components_counts,
    'video_predictor_properties_cpu': shim_video_predictor_properties_cpu,
}


# --------------------------------------------------------------------------------------------------------------
# Applying and removing
# --------------------------------------------------------------------------------------------------------------

def _installed_sam3_version() -> str:
    # Read from the distribution metadata so the check can run before `import sam3` (see `edt_stub`).
    try:
        return importlib.metadata.version('sam3')
    except importlib.metadata.PackageNotFoundError as e:
        raise ModuleNotFoundError(
            f'sam3 is not installed; sam3_cradio needs Meta\'s SAM 3: pip install sam3=={SUPPORTED_SAM3_VERSION}'
        ) from e


def check_sam3_version(version: str | None = None, strict: bool = True) -> str:
    """Check that ``version`` (default: the installed sam3) is the one the shims were written for.

    Args:
        version: version string to check; None reads the installed ``sam3`` distribution.
        strict: raise on a mismatch; otherwise warn.

    Returns:
        The checked version.

    Raises:
        RuntimeError: ``strict`` and the version is not :data:`SUPPORTED_SAM3_VERSION`.
    """
    version = _installed_sam3_version() if version is None else version
    if version != SUPPORTED_SAM3_VERSION:
        msg = (f'sam3_cradio.compat CPU shims target sam3=={SUPPORTED_SAM3_VERSION}, got sam3=={version}; '
               f'the patched sites may have moved. Install sam3=={SUPPORTED_SAM3_VERSION} or call '
               f'apply_cpu_shims(strict_version=False) to try anyway.')
        if strict:
            raise RuntimeError(msg)
        warnings.warn(msg, stacklevel=2)
    return version


def import_sam3(strict_version: bool = True) -> types.ModuleType:
    """Import sam3 after checking its version, first registering the ``edt`` stub when triton cannot be imported
    (see :func:`shim_edt_stub`). What a GPU build needs instead of :func:`apply_cpu_shims`.

    Raises:
        RuntimeError: the sam3 version differs and ``strict_version`` is True (else a warning).
        ModuleNotFoundError: sam3 or its undeclared dependency psutil is missing, with the pip command.
    """
    with _lock:
        check_sam3_version(strict=strict_version)
        if 'sam3' not in sys.modules and shim_edt_stub():
            logger.debug('registered the sam3.model.edt stub (triton is not importable)')
        try:
            sam3 = importlib.import_module('sam3')
        except ModuleNotFoundError as e:
            if e.name == 'psutil':  # imported by sam3_video_predictor.py:15 but not declared
                raise ModuleNotFoundError(
                    'sam3 0.1.4 imports psutil (sam3/model/sam3_video_predictor.py:15) without declaring it: '
                    'pip install psutil', name='psutil') from e
            raise
        if getattr(sam3, '__version__', None) != _installed_sam3_version():  # metadata vs imported package
            check_sam3_version(getattr(sam3, '__version__', 'unknown'), strict=strict_version)
        return sam3


def apply_cpu_shims(strict_version: bool = True) -> list[str]:
    """Patch sam3 in-process so it builds and runs without a GPU. Explicit and idempotent.

    Imports sam3 (after registering the ``edt`` stub if triton is missing), checks its version, and applies each
    shim in :data:`CPU_SHIMS`. Each wrapper runs sam3's own code unchanged unless :func:`needs_cpu_shims` holds for
    the call. A second call patches nothing and returns the same names.

    Args:
        strict_version: raise if the installed sam3 is not :data:`SUPPORTED_SAM3_VERSION` (else warn and try).

    Returns:
        Names of the applied shims, in order.

    Raises:
        RuntimeError: the sam3 version differs and ``strict_version`` is True.
        ModuleNotFoundError: sam3 or one of its undeclared dependencies (psutil) is missing.
    """
    global _done
    with _lock:
        if _done:
            return list(_applied)
        import_sam3(strict_version)
        applied = ['edt_stub'] if _edt_stub is not None else []
        for name, shim in CPU_SHIMS.items():
            if shim():
                applied.append(name)
        if importlib.util.find_spec('skimage') is None:  # undeclared dependency of the CPU CC fallback
            warnings.warn('scikit-image is not installed; sam3\'s CPU connected-components fallback '
                          '(sam3/perflib/connected_components.py:20) needs it for video: pip install scikit-image',
                          stacklevel=2)
        _applied[:] = applied
        _done = True
        logger.debug('applied sam3 CPU shims: %s', ', '.join(applied) or 'none')
        return list(_applied)


def applied_cpu_shims() -> list[str]:
    """Names of the shims in place (empty before :func:`apply_cpu_shims` and after :func:`remove_cpu_shims`)."""
    return list(_applied)


def remove_cpu_shims() -> list[str]:
    """Undo :func:`apply_cpu_shims`: every patched attribute gets its original object back (the same object, so
    ``is`` holds), and the ``edt`` stub leaves ``sys.modules`` if this module put it there.

    sam3 modules that imported ``edt_triton`` from the stub keep that reference (a stub that raises; triton was
    missing anyway). Models built while the shims were in place keep the tensors they made (e.g. caches on the
    CPU). Safe to call when nothing is applied.

    Returns:
        Names of the shims removed, in the order they had been applied.
    """
    global _done, _edt_stub
    with _lock:
        removed = list(_applied)
        for p in reversed(_patches):
            if p.original is None:
                delattr(p.owner, p.attr)  # it was inherited: the base class's attribute shows through again
            else:
                setattr(p.owner, p.attr, p.original)
        _patches.clear()
        if _edt_stub is not None and sys.modules.get('sam3.model.edt') is _edt_stub:
            del sys.modules['sam3.model.edt']
        _edt_stub = None
        _applied.clear()
        _done = False
        if removed:
            logger.debug('removed sam3 CPU shims: %s', ', '.join(removed))
        return removed


@contextmanager
def cpu_shims(strict_version: bool = True) -> Iterator[list[str]]:
    """Apply the CPU shims for the ``with`` block; on exit sam3 is as it was before the block.

    When the shims were already in place before the block they stay in place (like timm's ``set_layer_config``,
    the previous state is restored, not a fixed one). Yields the names of the shims in place.
    """
    with _lock:
        was_applied = _done
        names = apply_cpu_shims(strict_version=strict_version)
    try:
        yield names
    finally:
        if not was_applied:
            remove_cpu_shims()


# --------------------------------------------------------------------------------------------------------------
# Per-model overrides (one model object; undone on exit)
# --------------------------------------------------------------------------------------------------------------

_PLAN_ATTR = 'parse_action_history_for_propagation'
_MISSING = object()


@contextmanager
def override_propagation_plan(model: nn.Module, plan: tuple[str, list[int] | None]) -> Iterator[None]:
    """Make sam3's video model run the propagation ``plan`` next, instead of the one it infers from its history.

    ``Sam3VideoInferenceWithInstanceInteractivity.propagate_in_video`` (``sam3_video_inference.py:993-1006``)
    asks ``parse_action_history_for_propagation`` (``:1219-1275``) which propagation to run: ``("propagation_full",
    None)`` (detector + tracker), ``("propagation_partial", [obj_ids])`` (tracker for those objects) or
    ``("propagation_fetch", None)`` (cached results). Its history misses cases (clicks after a text prompt but
    before any propagation, passes starting on the first or last frame), so the caller decides and this answers
    for the one ``model`` object, through an instance attribute that shadows the method and is removed on exit
    (the method itself is never replaced). sam3 asks on the generator's first step: advance it inside the block.
    """
    kind, obj_ids = plan
    if kind not in ('propagation_full', 'propagation_partial', 'propagation_fetch'):
        raise ValueError(f'unknown propagation type {kind!r}; expected propagation_full, propagation_partial or '
                         'propagation_fetch')
    previous = model.__dict__.get(_PLAN_ATTR, _MISSING)
    model.__dict__[_PLAN_ATTR] = lambda inference_state: (kind, obj_ids)
    try:
        yield
    finally:
        if previous is _MISSING:
            model.__dict__.pop(_PLAN_ATTR, None)
        else:
            model.__dict__[_PLAN_ATTR] = previous


@contextmanager
def tracker_non_overlap_output(tracker: nn.Module, non_overlap: bool) -> Iterator[None]:
    """Set the tracker's ``non_overlap_masks_for_output`` for the block, then restore the previous value.

    sam3's ``Sam3TrackerPredictor`` reads this attribute (``sam3_tracking_predictor.py:47``, used at ``:482``)
    when it returns video-resolution masks: True gives each pixel to the object with the highest logit, as SAM2's
    ``non_overlap_masks``. The video model builds its tracker with False (``model_builder.py:469``); SAM2's VOS
    protocol wants True for DAVIS (disjoint objects) and False for SA-V.
    """
    previous = tracker.non_overlap_masks_for_output
    tracker.non_overlap_masks_for_output = bool(non_overlap)
    try:
        yield
    finally:
        tracker.non_overlap_masks_for_output = previous


def set_interactive_feature_sizes(model: nn.Module, feat_size: int) -> int:
    """Make sam3's interactive image predictors expect the backbone's grid; returns how many were set.

    ``SAM3InteractiveImagePredictor`` sets ``_bb_feat_sizes = [(288, 288), (144, 144), (72, 72)]`` in its
    constructor (``sam1_task_predictor.py:64-68``): the neck's 4x/2x/1x maps of a 72x72 grid, used by
    ``Sam3Image.predict_inst`` (``sam3_image.py:624``, ``:668``) to reshape features. A backbone with another grid
    (C-RADIO at 1152 px: 72; other sizes, tiny test models) needs ``[(4f, 4f), (2f, 2f), (f, f)]``. An instance
    attribute of each predictor inside ``model``; the class is untouched.
    """
    from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor

    f = int(feat_size)
    if f <= 0:
        raise ValueError(f'feat_size must be a positive number of tokens, got {feat_size!r}')
    n = 0
    for m in model.modules():
        if isinstance(m, SAM3InteractiveImagePredictor):
            m._bb_feat_sizes = [(4 * f, 4 * f), (2 * f, 2 * f), (f, f)]
            n += 1
    return n


# --------------------------------------------------------------------------------------------------------------
# Helpers the builder uses
# --------------------------------------------------------------------------------------------------------------

def bpe_path() -> str:
    """Path of the CLIP BPE vocabulary ``bpe_simple_vocab_16e6.txt.gz`` shipped by ``open_clip_torch``.

    sam3 0.1.4 ships no vocab (its default ``bpe_path``, ``model_builder.py:583-585``, points at a missing
    ``site-packages/assets/`` file); open_clip's copy is byte-identical to the one upstream sam3 later ships.
    The package is located without importing it (importing open_clip is slow).

    Raises:
        FileNotFoundError: open_clip is not installed or lacks the file.
    """
    spec = importlib.util.find_spec('open_clip')
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f'{BPE_FILENAME} not found: sam3 0.1.4 does not ship its BPE vocabulary and open_clip is not '
            'installed. Fix: pip install open_clip_torch')
    path = Path(spec.origin).parent / BPE_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f'{path} does not exist; sam3 0.1.4 does not ship its BPE vocabulary. '
            'Fix: pip install --force-reinstall open_clip_torch')
    return str(path)


@torch.no_grad()
def init_uninitialised_text_params(model: nn.Module) -> list[str]:
    """Initialise the text-encoder parameters sam3 allocates with ``torch.empty`` and never initialises.

    ``sam3/model/text_encoder_ve.py:196`` (``positional_embedding``) and ``:218`` (``text_projection``, when
    ``proj_bias=False``) may hold garbage or NaN in random-weight builds, which turns every output into NaN.
    Uses open_clip's text-tower init: ``normal(std=0.01)`` and ``normal(std=width ** -0.5)``. Only for
    random-weight models; a checkpoint load overwrites both.

    Args:
        model: any module containing sam3 ``TextTransformer`` submodules (e.g. a full ``Sam3Image``).

    Returns:
        Qualified names of the initialised parameters.
    """
    from sam3.model.text_encoder_ve import TextTransformer

    names: list[str] = []
    for prefix, module in model.named_modules():
        if not isinstance(module, TextTransformer):
            continue
        dot = f'{prefix}.' if prefix else ''
        if isinstance(module.positional_embedding, nn.Parameter):
            nn.init.normal_(module.positional_embedding, std=0.01)
            names.append(f'{dot}positional_embedding')
        if isinstance(module.text_projection, nn.Parameter):  # an nn.Linear (proj_bias=True) is initialised
            nn.init.normal_(module.text_projection, std=module.width ** -0.5)
            names.append(f'{dot}text_projection')
    logger.debug('Initialised sam3 text parameters: %s', names)
    return names


@torch.no_grad()
def move_caches_to(model: nn.Module, device: torch.device | str) -> int:
    """Move sam3's precomputed caches, which ``model.to(device)`` does not see, onto ``device``.

    ``PositionEmbeddingSine.cache`` (``position_encoding.py:36-50``), the decoder's box-RPB coordinates
    (``decoder.py:279-284``, ``coord_cache``) and the tracker's ``RoPEAttention.freqs_cis`` are plain attributes
    holding tensors, created on CUDA (or, with the shims, on the CPU) at construction; left on the wrong device they
    break the first forward. ``sam/transformer.py:285`` also puts ``freqs_cis`` on CUDA whenever CUDA exists,
    whatever the model's device. Returns how many tensors were moved.
    """
    from sam3.model.decoder import TransformerDecoder
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.sam.transformer import RoPEAttention

    device = torch.device(device)
    moved = 0
    for module in model.modules():
        if isinstance(module, PositionEmbeddingSine):
            moved += len(module.cache)
            module.cache = {k: v.to(device) for k, v in module.cache.items()}
        elif isinstance(module, TransformerDecoder):
            if getattr(module, 'compilable_cord_cache', None) is not None:
                module.compilable_cord_cache = tuple(t.to(device) for t in module.compilable_cord_cache)
                moved += 2
            cache = getattr(module, 'coord_cache', None) or {}
            moved += 2 * len(cache)
            module.coord_cache = {k: tuple(t.to(device) for t in v) for k, v in cache.items()}
        elif isinstance(module, RoPEAttention):
            for name in ('freqs_cis', 'freqs_cis_real', 'freqs_cis_imag'):
                if isinstance(getattr(module, name, None), torch.Tensor):
                    setattr(module, name, getattr(module, name).to(device))
                    moved += 1
    return moved
