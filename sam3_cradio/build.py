"""``build_sam3``: SAM3 image and video models on a C-RADIOv4 (or SAM3's own PE) trunk, from hydra configs.

sam2-style: compose ``configs/sam3_<backbone>.yaml`` with overrides, instantiate SAM3's own classes, load weights
with strict key accounting, move to the device, eval mode.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError, HubFile, check_keys, hub_download, safe_torch_load
from .options import DTYPES as DTYPE_CHOICES
from .options import ModelOptions, resolve_build
from .registry import DEFAULT_BACKBONE, ModelSpec, Window, resolve

_logger = logging.getLogger(__name__)

__all__ = ['build_sam3', 'build_sam3_video_predictor', 'build_trunk', 'autocast_for', 'parse_dtype', 'DTYPES', 'compose_config', 'compose_yaml', 'load_sam3_checkpoint', 'CONFIG_DIR', 'TRUNK_PREFIX']

CONFIG_DIR = Path(__file__).parent / 'configs'

# where the vision trunk sits in each model's state dict
TRUNK_PREFIX = {
    'image': 'backbone.vision_backbone.trunk.',
    'video': 'detector.backbone.vision_backbone.trunk.',
}
MODES = ('image', 'video')

def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    def div(a: int, b: int) -> int:
        if int(a) % int(b):
            raise ValueError(f'image_size {a} is not a multiple of the patch size {b}')
        return int(a) // int(b)

    OmegaConf.register_new_resolver('sam3c.div', div, replace=True)
    OmegaConf.register_new_resolver('sam3c.mul', lambda a, b: int(a) * int(b), replace=True)


def _compose(config_dir: Path, name: str, overrides: Sequence[str]) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    _register_resolvers()
    # hydra keeps one global instance; use our own and leave none behind for the caller
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base='1.3'):
            return compose(config_name=name, overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


@functools.cache
def _defaults(config_dir: Path, name: str) -> dict[str, Any]:
    """Every key of a config as written (no overrides), flattened to dotted paths: what overrides are checked
    against. Interpolations and ``???`` stay unresolved."""
    from omegaconf import OmegaConf

    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            path = f'{prefix}{key}'
            if isinstance(value, dict):
                walk(value, path + '.')
            # a typed default; None for sub-trees, lists, interpolations ('${...}') and mandatory values ('???')
            typed = isinstance(value, (bool, int, float)) or (isinstance(value, str) and not value.startswith(('${', '???')))
            flat[path] = value if typed else None

    walk(OmegaConf.to_container(_compose(config_dir, name, ()), resolve=False), '')
    return flat


def _check_overrides(config_dir: Path, name: str, overrides: Sequence[str]) -> None:
    """Refuse overrides of keys the config does not have (with the nearest key) and values of the wrong type
    (a word where a number is expected), before anything is instantiated."""
    import difflib

    known = _defaults(config_dir, name)
    for override in overrides:
        key, sep, value = override.partition('=')
        if not sep:
            raise ValueError(f'override {override!r} is not KEY=VALUE (e.g. dims=tiny, backbone.checkpoint=/path)')
        if key.startswith(('+', '~')) or '/' in key or key in ('dims',):
            continue  # explicit additions and deletions, config groups: hydra checks them
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            hint = f'; did you mean {near[0]}?' if near else ''
            raise ValueError(f'override {override!r}: the config {name!r} has no key {key!r}{hint}')
        default = known[key]
        if isinstance(default, bool):
            ok = value.lower() in ('true', 'false')
        elif isinstance(default, (int, float)):
            try:
                float(value)
                ok = not isinstance(default, int) or float(value).is_integer()
            except ValueError:
                ok = value in ('null', '~')
        else:
            ok = True
        if not ok:
            kind = 'true or false' if isinstance(default, bool) else 'an integer' if isinstance(default, int) else 'a number'
            raise ValueError(f'override {override!r}: {key} takes {kind} (default {default!r}), got {value!r}')


def compose_yaml(config_dir: Path, name: str, overrides: Sequence[str] = ()) -> Any:
    """Compose ``<config_dir>/<name>.yaml`` with hydra ``overrides`` (``key=value`` strings).

    Overrides are checked first: an unknown key (with the nearest known one), a malformed override or a value of
    the wrong type is a one-line ValueError.
    """
    from hydra.errors import HydraException

    _check_overrides(config_dir, name, overrides)
    try:
        return _compose(config_dir, name, overrides)
    except HydraException as e:  # what the check above cannot see (override grammar, config groups)
        raise ValueError(f'invalid override for config {name!r}: {str(e).splitlines()[0]}') from None


def compose_config(spec: ModelSpec | str, overrides: Sequence[str] = ()) -> Any:
    """Compose the SAM3 config of a backbone (a :class:`ModelSpec` or a registered name) with hydra ``overrides``.

    The registry fills the config's backbone facts (``backbone.image_size`` etc.); ``overrides`` come after them.
    """
    spec = spec if isinstance(spec, ModelSpec) else resolve(spec)
    return compose_yaml(CONFIG_DIR, spec.backbone.config, [*spec.hydra_overrides(), *overrides])


def build_trunk(
        spec: ModelSpec | str,
        overrides: Sequence[str] = (),
        device: str | torch.device | None = None,
) -> nn.Module:
    """The vision trunk of a backbone alone (no neck, text encoder or decoder), random weights for PE.

    What the benchmark and the distillation teachers time and train against; C-RADIO trunks load their
    release when ``pretrained=true`` is among ``overrides``.
    """
    from . import compat

    spec, rest = resolve_build(spec, overrides=overrides)
    cfg = compose_config(spec, ['pretrained=false', *rest])
    compat.apply_cpu_shims()
    return _instantiate(cfg.trunk).to(device or 'cpu').eval()


def _sam3_checkpoint_path(cfg: Any, sam3_checkpoint: str | Path | None) -> Path:
    if sam3_checkpoint is not None:
        path = Path(sam3_checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f'SAM3 checkpoint {str(path)!r} does not exist')
        return path
    if cfg.get('sam3_checkpoint') is None:
        raise ValueError(
            f'config {cfg.backbone.name!r} names no SAM3 checkpoint; pass sam3_checkpoint= or pretrained=False')
    return hub_download(HubFile(cfg.sam3_checkpoint.repo_id, cfg.sam3_checkpoint.filename), 'SAM3')


def _remap_sam3_keys(ckpt: dict[str, torch.Tensor], mode: str, interactive: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    """sam3.pt keys (``detector.*``, ``tracker.*``) -> this model's keys, as sam3's own builders map them.

    Returns the mapped dict and the checkpoint keys this model has no place for by design (the plain image model
    has no SAM2 neck and no tracker).
    """
    if mode == 'video':
        return dict(ckpt), []
    out, ignored = {}, []
    for k, v in ckpt.items():
        if k.startswith('detector.'):
            if not interactive and k.startswith('detector.backbone.vision_backbone.sam2_convs.'):
                ignored.append(k)
            else:
                out[k[len('detector.'):]] = v
        elif k.startswith('tracker.'):
            if interactive:
                out['inst_interactive_predictor.model.' + k[len('tracker.'):]] = v
            else:
                ignored.append(k)
        else:
            out[k] = v  # left for the key check to report
    return out, ignored


def load_sam3_checkpoint(
        model: nn.Module,
        path: str | Path,
        mode: str,
        interactive: bool,
        own_trunk: bool,
        segmentation: bool = True,
) -> dict[str, int]:
    """Load sam3.pt into ``model`` with strict key accounting; returns counts of what was loaded and skipped.

    Every SAM3 key must load, except the PE trunk's when ``own_trunk`` is False (a C-RADIO trunk): those are
    dropped on purpose and counted, and the segmentation head's of an image model built without one
    (``segmentation=False``, sam3's ``enable_segmentation=False``). Anything else missing or unexpected raises.
    """
    ckpt = safe_torch_load(path)
    if isinstance(ckpt, dict) and isinstance(ckpt.get('model'), dict):
        ckpt = ckpt['model']
    if not isinstance(ckpt, dict) or not any(str(k).startswith('detector.') for k in ckpt):
        found = list(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        hint = ' It looks like a RADIO checkpoint; pass it as cradio_checkpoint.' if isinstance(ckpt, dict) and 'args' in ckpt else ''
        raise CheckpointError(
            f'{path} is not a SAM3 checkpoint: expected detector.* / tracker.* keys (sam3.pt), found {found}.{hint}')
    state, ignored = _remap_sam3_keys(ckpt, mode, interactive)
    if not segmentation:
        ignored += [k for k in state if k.startswith('segmentation_head.')]
        state = {k: v for k, v in state.items() if not k.startswith('segmentation_head.')}
    trunk = TRUNK_PREFIX[mode]
    dropped = []
    if not own_trunk:
        dropped = [k for k in state if k.startswith(trunk)]
        for k in dropped:
            del state[k]
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    check_keys(missing, unexpected, what=f'loading SAM3 weights from {path}',
               allow_missing=() if own_trunk else (trunk + '*',))
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}'
                  for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if mismatched:
        raise CheckpointError(f'{path}: {len(mismatched)} tensors have the wrong shape: {mismatched[:10]}')
    model.load_state_dict(state, strict=False)
    counts = {'loaded': len(state), 'trunk_dropped': len(dropped), 'ignored_by_design': len(ignored)}
    _logger.info('SAM3 weights from %s: %s', path, counts)
    return counts


def _finish_sam3(model: nn.Module, cfg: Any) -> None:
    """Sizes sam3 0.1.4 sets outside its constructors' arguments, made to follow the backbone's grid."""
    from . import compat

    compat.set_interactive_feature_sizes(model, cfg.feat_size)


def _instantiate(node: Any) -> nn.Module:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_='all')
    except InstantiationException as e:
        # hydra wraps errors in its own; a user error (missing weights, bad checkpoint) reads better bare
        if isinstance(e.__cause__, (ValueError, FileNotFoundError)):
            raise e.__cause__ from None
        raise


DTYPES = dict(zip(DTYPE_CHOICES, (torch.float32, torch.bfloat16)))  # --dtype's names -> torch dtypes
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'fp32' / 'bf16' (or the torch dtypes) -> torch dtype; anything else is refused with the choices."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPE_NAMES:
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise ValueError(f'dtype must be one of {list(DTYPES)}, got {dtype!r}')


def autocast_for(model: nn.Module) -> AbstractContextManager:
    """The autocast a model from :func:`build_sam3` runs under: bf16 on its device for ``dtype='bf16'``, else none."""
    from contextlib import nullcontext

    cfg = getattr(model, 'sam3_cradio_cfg', None) or {}
    if cfg.get('dtype') != 'bf16':
        return nullcontext()
    device = next(model.parameters()).device
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _sam3_weights_choice(pretrained: bool | None, load_from_HF: bool | None, has_checkpoint: bool) -> bool:
    """``pretrained`` from our name or sam3's: sam3 loads weights when given a checkpoint or ``load_from_HF``."""
    if load_from_HF is None:
        return True if pretrained is None else pretrained
    wanted = bool(load_from_HF) or has_checkpoint
    if pretrained is not None and pretrained != wanted:
        raise ValueError(f'pretrained={pretrained} and load_from_HF={load_from_HF} disagree; give one of them')
    return wanted


def _pick(ours: Any, theirs: Any, names: str) -> Any:
    """One value from an argument given under our name or sam3's; both given and different is an error."""
    if ours is not None and theirs is not None and ours != theirs:
        raise ValueError(f'{names} name the same thing and disagree ({ours!r} vs {theirs!r}); give one of them')
    return ours if ours is not None else theirs


def build_sam3(
        backbone: str | ModelSpec | ModelOptions = DEFAULT_BACKBONE,
        window_size: Window | str | None = None,
        mode: str = 'image',
        *,
        resolution: int | None = None,
        overrides: Sequence[str] = (),
        pretrained: bool | None = None,
        sam3_checkpoint: str | Path | None = None,
        cradio_checkpoint: str | Path | None = None,
        interactive: bool | None = None,
        device: str | torch.device | None = None,
        bpe_path: str | None = None,
        dtype: str | torch.dtype = 'fp32',
        # sam3's builder arguments under their sam3 names (build_sam3_image_model / build_sam3_video_model)
        checkpoint_path: str | Path | None = None,
        load_from_HF: bool | None = None,
        eval_mode: bool = True,
        enable_segmentation: bool = True,
        enable_inst_interactivity: bool | None = None,
        compile: bool = False,
        trunk_runtime: str | None = None,
        trunk_model: str | Path | None = None,
) -> nn.Module:
    """Build SAM3 with the chosen vision backbone.

    Args:
        backbone: a registered backbone (:mod:`sam3_cradio.registry`): 'cradio_v4_h', 'cradio_v4_so400m',
            'pe' (SAM3's own encoder), 'cradio_tiny' (tests); ``'NAME:WINDOW'``; a resolved ``ModelSpec``; or
            checked :class:`~sam3_cradio.options.ModelOptions` (what the commands pass): they carry the window,
            resolution, weights, device, dtype and trunk runtime, and those arguments are then not given again.
        window_size: C-RADIO ViTDet window in tokens, or 'global'; it must divide the token grid (72 at 1152 px:
            6, 8, 9, 12, 18, 24, ...). None (default) keeps the backbone's default: global for C-RADIO, PE's own
            24. PE's window is fixed by its checkpoint: passing one for it is an error.
        mode: 'image' (``Sam3Image``) or 'video' (``Sam3VideoInferenceWithInstanceInteractivity``).
        resolution: input side in px (default: the backbone's, 1152 for C-RADIOv4); a multiple of the patch size
            (times the window in ViTDet mode). The error names the nearest valid size. ``model.image_size`` holds
            it; the trunk refuses inputs of another size.
        overrides: hydra overrides, e.g. ``['dims=tiny']``; ``backbone.image_size=`` and
            ``backbone.window_size=`` are checked as ``resolution`` and ``window_size`` are.
        pretrained: load SAM3 weights (sam3.pt: HF ``facebook/sam3`` or ``sam3_checkpoint``) and C-RADIO weights
            (the release, or ``cradio_checkpoint``). False gives random weights (tests, benchmarks). Default True.
        sam3_checkpoint: local sam3.pt instead of the HF download.
        cradio_checkpoint: local C-RADIO .pth.tar / .safetensors instead of the release.
        interactive: image mode: also build SAM3's interactive instance predictor (point and box clicks).
            Default True.
        device: where to put the model (default: CUDA if available, else CPU).
        bpe_path: SAM3 text tokenizer vocabulary (default: the copy inside open_clip).
        dtype: 'fp32' (default) or 'bf16': the vision trunk's weights are cast to bfloat16 once, here, so that
            running under ``torch.autocast(device, torch.bfloat16)`` (the predictors and commands do) casts no
            trunk weight per call; the rest of SAM3 keeps float32 weights and runs under that autocast. A C-RADIO
            trunk also runs in bf16 without autocast (it casts its input and returns float32 features).
        checkpoint_path, load_from_HF, eval_mode, enable_segmentation, enable_inst_interactivity, compile: sam3's
            builder arguments with sam3's meaning, so that code written against sam3 migrates by a change of import
            and a ``backbone=``: ``checkpoint_path`` is ``sam3_checkpoint``; ``load_from_HF=False`` without a
            checkpoint gives random weights; ``enable_inst_interactivity`` is ``interactive``; ``eval_mode=False``
            returns the model in train mode; ``enable_segmentation=False`` builds the image model without its
            segmentation head (boxes only); ``compile=True`` compiles what sam3 compiles (the PE trunk, the pixel
            decoder, the video model) and the C-RADIO trunk. Giving both names of one thing with different values
            is an error.
        trunk_runtime: 'torch' (default: the C-RADIO trunk in torch), or 'onnxruntime' / 'openvino' to run an
            exported trunk (``sam3_cradio.export``) on the CPU instead; the rest of SAM3 stays in torch.
        trunk_model: the exported trunk (.onnx from ``sam3-cradio export``) for ``trunk_runtime``. Its metadata
            must match this build (backbone, resolution, window; with ``cradio_checkpoint``, that file's sha256;
            with pretrained SAM3 weights, non-random trunk weights), else a ValueError says what differs.

    Returns:
        The SAM3 model (eval mode unless ``eval_mode=False``); ``model.image_size`` is its input side,
        ``model.sam3_cradio_spec`` the resolved backbone choice and ``model.sam3_cradio_cfg`` the backbone config
        and the weight report (SAM3 keys loaded, trunk keys dropped, keys ignored by design).
    """
    if isinstance(backbone, ModelOptions):  # first: locals() holds the arguments alone
        return _build_from_options(backbone, mode, locals())
    from omegaconf import OmegaConf

    from . import compat

    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    model_dtype = parse_dtype(dtype)
    sam3_checkpoint = _pick(sam3_checkpoint, checkpoint_path, 'sam3_checkpoint and checkpoint_path')
    interactive = _pick(interactive, enable_inst_interactivity, 'interactive and enable_inst_interactivity')
    interactive = True if interactive is None else bool(interactive)
    pretrained = _sam3_weights_choice(pretrained, load_from_HF, sam3_checkpoint is not None)
    if not enable_segmentation and mode == 'video':
        raise ValueError('enable_segmentation=False applies to image models; the video model always segments')
    spec, ovr = resolve_build(backbone, window_size, resolution, overrides)
    if cradio_checkpoint is not None and not spec.backbone.is_cradio:
        raise ValueError(f'{spec.name} takes its weights from sam3.pt (sam3_checkpoint), not cradio_checkpoint')
    trunk_runtime = trunk_runtime or 'torch'
    runtime_trunk = None
    if trunk_runtime != 'torch' or trunk_model is not None:  # checked (file, metadata, runtime) before building
        from .export.runtimes import trunk_config
        runtime_trunk = trunk_config(spec, trunk_runtime, trunk_model, cradio_checkpoint=cradio_checkpoint,
                                     pretrained=pretrained)
    device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if cradio_checkpoint is not None:
        ovr.append(f'backbone.checkpoint={Path(cradio_checkpoint).resolve()}')
    if not enable_segmentation:
        ovr.append('image_model.segmentation_head=null')
    if compile:
        ovr += ['segmentation_head.pixel_decoder.compile_mode=default', 'video_model.compile_model=true']
        if not spec.backbone.is_cradio:
            ovr.append('trunk.compile_mode=default')
    ovr += [f'pretrained={pretrained}', f'interactive={interactive}',
            f'temporal_disambiguation={mode == "video"}',
            f'bpe_path={bpe_path or compat.bpe_path()}']
    cfg = compose_config(spec, ovr)
    if runtime_trunk is not None:  # the neck's `trunk: ${trunk}` then instantiates the exported trunk
        from omegaconf import open_dict
        with open_dict(cfg):
            cfg.trunk = runtime_trunk
    if spec.backbone.is_cradio and not pretrained and cfg.backbone.checkpoint is None:
        _logger.info('C-RADIO trunk with random weights (pretrained=False)')

    if compat.needs_cpu_shims(device):  # no CUDA, or a model for the CPU: sam3's CUDA-only code needs its shims
        compat.apply_cpu_shims()
    else:
        compat.import_sam3()
    model = _instantiate(cfg.image_model if mode == 'image' else cfg.video_model)
    if mode == 'image' and interactive:
        from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor
        model.inst_interactive_predictor = SAM3InteractiveImagePredictor(_instantiate(cfg.tracker))
    _finish_sam3(model, cfg)

    own_trunk = not spec.backbone.is_cradio
    report: dict[str, Any] = {'sam3_weights': None}
    if pretrained:
        path = _sam3_checkpoint_path(cfg, sam3_checkpoint)
        report = {'sam3_weights': str(path),
                  **load_sam3_checkpoint(model, path, mode, interactive, own_trunk, enable_segmentation)}
    elif sam3_checkpoint is not None:
        raise ValueError('sam3_checkpoint was given with pretrained=False; drop one of them')
    else:
        compat.init_uninitialised_text_params(model)

    model = model.to(device)
    model.train(not eval_mode)
    compat.move_caches_to(model, device)
    trunk = (model.detector if mode == 'video' else model).backbone.vision_backbone.trunk
    if model_dtype != torch.float32 and isinstance(trunk, nn.Module) and any(True for _ in trunk.parameters()):
        trunk.to(model_dtype)
    if spec.backbone.is_cradio:
        trunk.image_size = spec.resolution
        if compile and runtime_trunk is None:
            trunk.compile()  # in place: the state dict keeps its keys
    model.image_size = spec.resolution  # what sam3's video model already carries; Sam3Processor needs it passed
    model.sam3_cradio_cfg = OmegaConf.to_container(cfg.backbone, resolve=True) | {
        'mode': mode, 'feat_size': cfg.feat_size, 'interactive': interactive, **report,
        'dtype': DTYPE_NAMES[model_dtype],
        'trunk_runtime': trunk_runtime, 'trunk_model': runtime_trunk['path'] if runtime_trunk else None}
    model.sam3_cradio_spec = spec
    return model


# build_sam3's arguments that ModelOptions carry, with their defaults: given beside ModelOptions they must keep them
_OPTION_ARGS = {'window_size': None, 'resolution': None, 'overrides': (), 'pretrained': None, 'sam3_checkpoint': None,
                'cradio_checkpoint': None, 'device': None, 'dtype': 'fp32', 'checkpoint_path': None,
                'load_from_HF': None, 'trunk_runtime': None, 'trunk_model': None}


def _build_from_options(options: ModelOptions, mode: str, args: dict[str, Any]) -> nn.Module:
    given = [k for k, default in _OPTION_ARGS.items() if args[k] != default and not (k == 'overrides' and not args[k])]
    if given:
        raise ValueError(f'ModelOptions carry {", ".join(given)}; set them in the options, not again here')
    if options.seed is not None:
        torch.manual_seed(options.seed)
    rest = {k: v for k, v in args.items() if k not in _OPTION_ARGS and k not in ('backbone', 'mode')}
    return build_sam3(options.spec, mode=mode, **options.build_kwargs(), **rest)


def build_sam3_video_predictor(
        backbone: str | ModelSpec | ModelOptions = DEFAULT_BACKBONE,
        window_size: Window | str | None = None,
        *,
        async_loading_frames: bool = False,
        video_loader_type: str = 'cv2',
        **kwargs: Any,
) -> Any:
    """sam3's own ``Sam3VideoPredictor`` (``handle_request`` / ``handle_stream_request`` sessions) on a model
    from ``build_sam3(backbone, window_size, mode='video', **kwargs)``.

    sam3's constructor builds its PE model itself and moves it to CUDA, so the predictor is made without it and
    given our model; its request handling is sam3's, unchanged. Takes sam3's predictor options
    (``async_loading_frames``, ``video_loader_type``) and every ``build_sam3`` argument (``checkpoint_path``,
    ``bpe_path``, ``device``, ...).
    """
    model = build_sam3(backbone, window_size, 'video', **kwargs)
    from sam3.model.sam3_video_predictor import Sam3VideoPredictor

    predictor = Sam3VideoPredictor.__new__(Sam3VideoPredictor)
    predictor.async_loading_frames = async_loading_frames
    predictor.video_loader_type = video_loader_type
    predictor.model = model
    return predictor
