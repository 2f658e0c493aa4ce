"""CPU compatibility shims for Meta's SAM 3 (PyPI ``sam3==0.1.4``).

sam3 0.1.4 hard-codes CUDA in a handful of places (``device="cuda"``, ``.cuda()``, ``pin_memory()``,
bfloat16 features that only CUDA autocast absorbs), so it neither builds nor runs on a machine without a GPU.
This module fixes those sites *in-process*, without forking, vendoring or editing the installed package:

- :func:`apply_cpu_shims` wraps one sam3 function or method per site. It is explicit (never run at import),
  idempotent, gated on the installed sam3 version, and returns the names of the shims it applied.
- Every wrapper checks ``torch.cuda.is_available()`` when it is *called* and, when CUDA is available, calls the
  original unchanged, so GPU behaviour is untouched. The two exceptions are bug fixes that are correct on any
  device: ``connected_components_empty`` (B11) and ``edt_stub`` (B2, only when ``triton`` cannot be imported).
- The CUDA-only calls are redirected by :class:`_CudaToDeviceMode`, a ``TorchFunctionMode`` entered only for the
  duration of the wrapped sam3 function (thread-local), instead of patching ``torch.Tensor`` globally.

Blocker ids (B1..B14) refer to the shared note ``sam3-0.1.4-facts.md``. Blockers fixed by the caller rather than
by a shim: B1/B8 (install ``psutil`` / ``scikit-image``; checked here with a clear message), B3/B3b (pass
``bpe_path=bpe_path()``, ``load_from_HF=False``), B6 (``Sam3Processor(model, device="cpu")``) and B14 (use
``build_sam3_video_model`` instead of the multi-GPU ``build_sam3_video_predictor``).

Example:
    >>> from sam3_cradio.compat import apply_cpu_shims, bpe_path
    >>> apply_cpu_shims()  # doctest: +SKIP
    ['position_encoding_cpu', 'decoder_coords_cpu', ...]
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
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = [
    'SUPPORTED_SAM3_VERSION',
    'BPE_FILENAME',
    'apply_cpu_shims',
    'applied_cpu_shims',
    'check_sam3_version',
    'bpe_path',
    'init_uninitialised_text_params',
    'move_caches_to',
]

logger = logging.getLogger(__name__)

SUPPORTED_SAM3_VERSION = '0.1.4'
BPE_FILENAME = 'bpe_simple_vocab_16e6.txt.gz'

# Marker set on every wrapper; lets a patch recognise an already-patched attribute (no double wrapping).
_SHIM_ATTR = '__sam3_cradio_shim__'

_lock = threading.Lock()
_applied: List[str] = []
_done = False


# --------------------------------------------------------------------------------------------------------------
# Shared machinery
# --------------------------------------------------------------------------------------------------------------

def _cuda_available() -> bool:
    # Looked up on every call (not cached) so each wrapper follows the machine it runs on.
    return torch.cuda.is_available()


def _is_cuda_device(device: Any) -> bool:
    if isinstance(device, (str, torch.device, int)):
        try:
            return torch.device(device).type == 'cuda'
        except (RuntimeError, TypeError):
            return False
    return False


class _CudaToDeviceMode(TorchFunctionMode):
    """Redirects sam3's CUDA-only calls to ``device`` while a wrapped sam3 function runs.

    Only three patterns are touched: ``Tensor.pin_memory()`` becomes a no-op (pinning needs a CUDA driver and is
    pointless without a GPU), ``Tensor.cuda(...)`` becomes ``.to(device)``, and a ``device=`` keyword naming CUDA
    (e.g. ``torch.zeros(..., device="cuda")``) becomes ``device``. Everything else passes through unchanged.
    Torch function modes are thread-local, so other threads never see the redirection.
    """

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = torch.device(device)

    def __torch_function__(self, func: Callable, types: Tuple[type, ...], args: Tuple[Any, ...] = (),
                           kwargs: Optional[Dict[str, Any]] = None) -> Any:
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.pin_memory:
            return args[0]
        if func is torch.Tensor.cuda:
            return args[0].to(self.device, non_blocking=bool(kwargs.get('non_blocking', False)))
        if _is_cuda_device(kwargs.get('device')):
            kwargs['device'] = self.device
        return func(*args, **kwargs)


def _cpu(*args: Any, **kwargs: Any) -> torch.device:
    return torch.device('cpu')


def _module_device(self: nn.Module, *args: Any, **kwargs: Any) -> torch.device:
    # The tracker's own device (sam3's `Sam3TrackerBase.device` property: device of its first parameter).
    return self.device


def _redirect_cuda(fn: Callable, device_of: Callable[..., torch.device] = _cpu) -> Callable:
    """Wrap ``fn`` so that, without CUDA, it runs under :class:`_CudaToDeviceMode` (``device_of(*args)``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _cuda_available():
            return fn(*args, **kwargs)
        with _CudaToDeviceMode(device_of(*args, **kwargs)):
            return fn(*args, **kwargs)

    return wrapper


def _edit_args_without_cuda(fn: Callable, edit: Callable[[inspect.BoundArguments], None]) -> Callable:
    """Wrap ``fn`` so that, without CUDA, ``edit`` may change its bound arguments (however they were passed)."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _cuda_available():
            return fn(*args, **kwargs)
        bound = signature.bind(*args, **kwargs)
        edit(bound)
        return fn(*bound.args, **bound.kwargs)

    return wrapper


def _force_kwargs(fn: Callable, forced: Dict[str, Any]) -> Callable:
    """Wrap ``fn`` so that, without CUDA, the named arguments are forced (however they were passed)."""

    def force(bound: inspect.BoundArguments) -> None:
        for name, value in forced.items():
            if name in bound.arguments and bound.arguments[name] != value:
                logger.debug('%s: overriding %s=%r with %r (no CUDA)', fn.__qualname__, name,
                             bound.arguments[name], value)
            bound.arguments[name] = value

    return _edit_args_without_cuda(fn, force)


def _patch(owner: Any, attr: str, make_wrapper: Callable[[Callable], Callable], shim: str) -> bool:
    """Replace ``owner.attr`` by ``make_wrapper(original)``; returns False if it is already patched.

    ``staticmethod`` attributes are unwrapped and re-wrapped so they stay static. The original stays reachable
    as ``wrapper.__wrapped__`` (set by ``functools.wraps``).
    """
    raw = inspect.getattr_static(owner, attr)
    is_static = isinstance(raw, staticmethod)
    original = raw.__func__ if is_static else raw
    if getattr(original, _SHIM_ATTR, None) is not None:
        return False
    wrapper = make_wrapper(original)
    setattr(wrapper, _SHIM_ATTR, shim)
    setattr(owner, attr, staticmethod(wrapper) if is_static else wrapper)
    logger.debug('sam3 CPU shim %r: patched %s.%s', shim, getattr(owner, '__name__', owner), attr)
    return True


# --------------------------------------------------------------------------------------------------------------
# Shims, one per blocker. Each returns True when it patched something.
# --------------------------------------------------------------------------------------------------------------

def shim_edt_stub() -> bool:
    """B2: ``sam3/model/edt.py:6-7`` imports ``triton`` at import time (via ``sam3_tracker_utils.py:8``).

    ``edt_triton`` is only used for training-time point sampling (``sam3_tracker_utils.py:178``). When ``triton``
    cannot be imported, register a stub module ``sam3.model.edt`` whose ``edt_triton`` raises a clear error, so
    ``import sam3`` works. ``triton`` itself is never stubbed (``torch._dynamo`` probes ``triton.language``).
    Must run before sam3 is imported; does nothing when triton imports or sam3's edt module is already loaded.
    """
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
    return True


def shim_position_encoding_cpu() -> bool:
    """B4: ``sam3/model/position_encoding.py:47`` precomputes with ``torch.zeros(..., device="cuda")``.

    ``PositionEmbeddingSine.__init__`` fills its cache for ``precompute_resolution`` (used by the vision neck,
    ``model_builder.py:503``, and the tracker memory encoder, ``:333-339``). Without CUDA the wrapped ``__init__``
    runs the same code with that tensor created on CPU, so the cache lives on CPU.
    """
    from sam3.model.position_encoding import PositionEmbeddingSine

    return _patch(PositionEmbeddingSine, '__init__', _redirect_cuda, 'position_encoding_cpu')


def shim_decoder_coords_cpu() -> bool:
    """B5: ``sam3/model/decoder.py:280-282`` calls ``self._get_coords(feat_size, feat_size, device="cuda")``.

    ``TransformerDecoder.__init__`` precomputes the boxRPB coordinates for resolution 1008 / stride 14 on CUDA.
    The wrapped ``_get_coords`` staticmethod maps a CUDA device to CPU when CUDA is unavailable.
    """
    from sam3.model.decoder import TransformerDecoder

    def make(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def _get_coords(H: int, W: int, device: Any) -> Tuple[torch.Tensor, torch.Tensor]:
            if not _cuda_available() and _is_cuda_device(device):
                device = torch.device('cpu')
            return fn(H, W, device)

        return _get_coords

    return _patch(TransformerDecoder, '_get_coords', make, 'decoder_coords_cpu')


def shim_pin_memory_cpu() -> bool:
    """B7: ``pin_memory()`` needs a CUDA driver; without CUDA it is skipped at sam3's three call sites.

    - ``sam3/model/geometry_encoders.py:659`` ``SequenceGeometryEncoder._encode_boxes`` (every text/box prompt).
    - ``sam3/model/sam3_tracker_base.py:168`` ``Sam3TrackerBase._get_tpos_enc`` (video propagation).
    - ``sam3/model/sam3_video_inference.py:480`` ``Sam3VideoInference._postprocess_output`` (video outputs).
    """
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model.sam3_tracker_base import Sam3TrackerBase
    from sam3.model.sam3_video_inference import Sam3VideoInference

    patched = [
        _patch(SequenceGeometryEncoder, '_encode_boxes', _redirect_cuda, 'pin_memory_cpu'),
        _patch(Sam3TrackerBase, '_get_tpos_enc', _redirect_cuda, 'pin_memory_cpu'),
        _patch(Sam3VideoInference, '_postprocess_output', _redirect_cuda, 'pin_memory_cpu'),
    ]
    return any(patched)


def shim_tracker_cuda_calls() -> bool:
    """B13: hard-coded ``.cuda()`` in the tracker; without CUDA it becomes ``.to(tracker.device)``.

    - ``sam3/model/sam3_tracker_base.py:657`` and ``:664``
      ``Sam3TrackerBase._prepare_memory_conditioned_features`` (memory features / pos-enc, every propagation).
    - ``sam3/model/sam3_tracking_predictor.py:303`` ``Sam3TrackerPredictor.add_new_points_or_box`` (previous
      mask logits when refining an existing object).
    """
    from sam3.model.sam3_tracker_base import Sam3TrackerBase
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor

    def make(fn: Callable) -> Callable:
        return _redirect_cuda(fn, device_of=_module_device)

    patched = [
        _patch(Sam3TrackerBase, '_prepare_memory_conditioned_features', make, 'tracker_cuda_calls'),
        _patch(Sam3TrackerPredictor, 'add_new_points_or_box', make, 'tracker_cuda_calls'),
    ]
    return any(patched)


def shim_tracker_state_on_cpu() -> bool:
    """B12: ``sam3/model/sam3_tracking_predictor.py:81`` sets ``storage_device=cuda`` unless offloading.

    ``Sam3VideoInference._init_new_tracker_state`` (``sam3_video_inference.py:984-990``) never passes
    ``offload_state_to_cpu``. Without CUDA the wrapped ``Sam3TrackerPredictor.init_state`` forces
    ``offload_state_to_cpu=True`` and ``offload_video_to_cpu=True`` (the latter avoids ``io_utils`` ``.cuda()``).
    """
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor

    def make(fn: Callable) -> Callable:
        return _force_kwargs(fn, {'offload_state_to_cpu': True, 'offload_video_to_cpu': True})

    return _patch(Sam3TrackerPredictor, 'init_state', make, 'tracker_state_on_cpu')


def shim_video_frames_on_cpu() -> bool:
    """B9: ``Sam3VideoInference.init_state`` defaults to ``offload_video_to_cpu=False``.

    That reaches ``images.cuda()`` in ``sam3/model/io_utils.py`` (``:66``, ``:107-109``, ``:204-206``,
    ``:310-312``, ``:326``, ``:395``). Without CUDA the wrapped ``init_state``
    (``sam3/model/sam3_video_inference.py:54``) forces ``offload_video_to_cpu=True``.
    """
    from sam3.model.sam3_video_inference import Sam3VideoInference

    def make(fn: Callable) -> Callable:
        return _force_kwargs(fn, {'offload_video_to_cpu': True})

    return _patch(Sam3VideoInference, 'init_state', make, 'video_frames_on_cpu')


def _tracker_fpn_to_float32(multigpu_buffer: Dict[int, Dict[str, Tuple[Any, Any]]]) -> None:
    """Cast the buffered ``tracker_backbone_fpn_*`` entries from bfloat16 back to float32, in place."""
    for frame_buffer in multigpu_buffer.values():
        for key, (value, handle) in list(frame_buffer.items()):
            if key.startswith('tracker_backbone_fpn_') and isinstance(value, torch.Tensor) \
                    and value.dtype == torch.bfloat16:
                frame_buffer[key] = (value.float(), handle)


def shim_tracker_fpn_float32() -> bool:
    """B10: ``sam3/model/sam3_image.py:839`` casts the SAM2-neck features to bfloat16 for the all-gather.

    On GPU, CUDA autocast absorbs the dtype; on CPU the ``autocast("cuda")`` decorators are disabled and
    ``sam3_video_base.py:383`` (``conv_s0``) fails with "Input type (c10::BFloat16) and bias type (float) should
    be the same". Without CUDA the wrapped ``Sam3ImageOnVideoMultiGPU._build_multigpu_buffer_next_chunk``
    casts the buffered ``tracker_backbone_fpn_*`` back to float32.
    """
    from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU

    def make(fn: Callable) -> Callable:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            if not _cuda_available():
                _tracker_fpn_to_float32(signature.bind(*args, **kwargs).arguments['multigpu_buffer'])
            return out

        return wrapper

    return _patch(Sam3ImageOnVideoMultiGPU, '_build_multigpu_buffer_next_chunk', make, 'tracker_fpn_float32')


def shim_tracker_memory_float32() -> bool:
    """B15: the tracker stores its memory features in bfloat16 (``sam3_tracking_predictor.py:1098``, ``:1149``).

    On GPU, CUDA autocast absorbs the dtype. On CPU, tracking an object on a frame before its first prompted frame
    (no float32 object pointer joins the memory tokens, ``sam3_tracker_base.py:790``) feeds an all-bfloat16 memory
    to the float32 memory attention (``sam/transformer.py:300``, ``v_proj``): "mat1 and mat2 must have the same
    dtype". Without CUDA the wrapped ``TransformerEncoderCrossAttention.forward`` casts the memory (``prompt``,
    ``prompt_pos``) to the dtype of the image features (``src``).
    """
    from sam3.model.decoder import TransformerEncoderCrossAttention

    def memory_to_feature_dtype(bound: inspect.BoundArguments) -> None:
        src = bound.arguments['src']
        dtype = (src[0] if isinstance(src, (list, tuple)) else src).dtype
        for name in ('prompt', 'prompt_pos'):
            value = bound.arguments.get(name)
            if isinstance(value, torch.Tensor) and value.dtype != dtype:
                bound.arguments[name] = value.to(dtype)

    def make(fn: Callable) -> Callable:
        return _edit_args_without_cuda(fn, memory_to_feature_dtype)

    return _patch(TransformerEncoderCrossAttention, 'forward', make, 'tracker_memory_float32')


def shim_connected_components_empty() -> bool:
    """B11: ``sam3/perflib/connected_components.py:48`` ``torch.stack``s an empty list when there are 0 masks.

    ``connected_components_cpu`` raises "stack expects a non-empty TensorList" on a (0, 1, H, W) batch, which
    ``sam3_video_base.py:970`` reaches on every frame without a new detection. For an empty batch the wrapped
    function returns zero labels and counts of the input's shape, with the dtype the non-empty path would give
    (skimage's label dtype depends on the input dtype, so it is probed on a 1x1 image). Not gated on CUDA: it is
    a plain bug fix of the CPU path, which CUDA tensors never reach. ``connected_components`` looks the function
    up as a module global, so patching the module attribute covers every caller.
    """
    from sam3.perflib import connected_components as cc

    def make(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def connected_components_cpu(input_tensor: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
            if input_tensor.shape[0] == 0:
                probe, _ = cc.connected_components_cpu_single(input_tensor.new_zeros(1, 1))
                labels = torch.zeros(input_tensor.shape, dtype=probe.dtype, device=input_tensor.device)
                return labels, labels.clone()
            return fn(input_tensor)

        return connected_components_cpu

    return _patch(cc, 'connected_components_cpu', make, 'connected_components_empty')


def shim_connected_components_counts() -> bool:
    """Speed: ``sam3/perflib/connected_components.py:18-29`` counts each component's pixels with one full-image
    pass per component (quadratic; ~20 s per call on noisy masks), on the CPU path that hole filling uses in video.

    The wrapped ``connected_components_cpu_single`` returns the same labels and counts (background 0) from one
    ``bincount``. Not gated on CUDA: CUDA tensors never reach the CPU path.
    """
    from sam3.perflib import connected_components as cc

    def make(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def connected_components_cpu_single(values: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
            from skimage.measure import label

            labels = torch.from_numpy(label(values.cpu().numpy()))
            sizes = torch.bincount(labels.flatten().long())
            sizes[0] = 0  # background pixels keep a count of 0, as in sam3
            return labels, sizes[labels.long()].to(labels.dtype)

        return connected_components_cpu_single

    return _patch(cc, 'connected_components_cpu_single', make, 'connected_components_counts')


# Applied in this order after sam3 is imported (`edt_stub` runs before the import).
CPU_SHIMS: Dict[str, Callable[[], bool]] = {
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
}


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------

def _installed_sam3_version() -> str:
    # Read from the distribution metadata so the check can run before `import sam3` (see `edt_stub`).
    try:
        return importlib.metadata.version('sam3')
    except importlib.metadata.PackageNotFoundError as e:
        raise ModuleNotFoundError(
            f'sam3 is not installed; sam3_cradio needs Meta\'s SAM 3: pip install sam3=={SUPPORTED_SAM3_VERSION}'
        ) from e


def check_sam3_version(version: Optional[str] = None, strict: bool = True) -> str:
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


def _import_sam3() -> types.ModuleType:
    try:
        return importlib.import_module('sam3')
    except ModuleNotFoundError as e:
        if e.name == 'psutil':  # B1: imported by sam3_video_predictor.py:15 but not declared
            raise ModuleNotFoundError(
                'sam3 0.1.4 imports psutil (sam3/model/sam3_video_predictor.py:15) without declaring it: '
                'pip install psutil', name='psutil') from e
        raise


def apply_cpu_shims(strict_version: bool = True) -> List[str]:
    """Patch sam3 in-process so it builds and runs without a GPU. Explicit and idempotent.

    Imports sam3 (after registering the ``edt_stub`` if triton is missing), checks its version, and applies each
    shim in :data:`CPU_SHIMS`. Wrappers call the original sam3 code unchanged whenever CUDA is available.
    A second call patches nothing and returns the same names.

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
            logger.debug('sam3 CPU shims already applied: %s', _applied)
            return list(_applied)
        check_sam3_version(strict=strict_version)
        applied: List[str] = []
        if shim_edt_stub():
            applied.append('edt_stub')
        sam3 = _import_sam3()
        if getattr(sam3, '__version__', None) != _installed_sam3_version():  # metadata vs imported package
            check_sam3_version(getattr(sam3, '__version__', 'unknown'), strict=strict_version)
        for name, shim in CPU_SHIMS.items():
            if shim():
                applied.append(name)
        if importlib.util.find_spec('skimage') is None:  # B8: undeclared dependency of the CPU CC fallback
            warnings.warn('scikit-image is not installed; sam3\'s CPU connected-components fallback '
                          '(sam3/perflib/connected_components.py:20) needs it for video: pip install scikit-image',
                          stacklevel=2)
        _applied[:] = applied
        _done = True
        logger.info('Applied sam3 CPU shims: %s', ', '.join(applied) or 'none')
        return list(_applied)


def applied_cpu_shims() -> List[str]:
    """Names of the shims applied by :func:`apply_cpu_shims` so far (empty before the first call)."""
    return list(_applied)


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
def init_uninitialised_text_params(model: nn.Module) -> List[str]:
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

    names: List[str] = []
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
def move_caches_to(model: nn.Module, device: torch.device) -> int:
    """Move sam3's precomputed caches, which ``model.to(device)`` does not see, onto ``device``.

    ``PositionEmbeddingSine.cache`` (``position_encoding.py:36-50``), the decoder's box-RPB coordinates
    (``decoder.py:279-284``, ``coord_cache``) and the tracker's ``RoPEAttention.freqs_cis`` are plain
    attributes holding tensors, created on CUDA (or, with the shims, on CPU) at construction. Left on the wrong device they break the first forward. Returns how many
    tensors were moved.
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
            # sam/transformer.py:285 puts freqs_cis on CUDA whenever CUDA exists, whatever the model's device
            for name in ('freqs_cis', 'freqs_cis_real', 'freqs_cis_imag'):
                if isinstance(getattr(module, name, None), torch.Tensor):
                    setattr(module, name, getattr(module, name).to(device))
                    moved += 1
    return moved
