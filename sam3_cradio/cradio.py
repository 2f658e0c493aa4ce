"""C-RADIOv4 image encoder (H and SO400M), numerically NVIDIA's, with plain ViTDet windowing.

One family, one file (timm style): architecture description (:class:`CRadioArch`), the release table
(:data:`RELEASES`), the model (:class:`CRadioEncoder`), checkpoint conversion to and from NVIDIA's released
``.pth.tar`` layout, and the entry points :func:`load_cradio` (weights) and :func:`create_cradio` (random weights).

The ViT itself is timm's C-RADIOv4 definition (``naflexvit_*_patch16_radio_v4``: patch 16, bias-free linear patch
embedding, 128x128 CPE grid resized bilinearly to a square of the larger side then cropped top-left, pre-norm
blocks, no final norm), with sizes read from the checkpoint. This module adds what timm leaves out: the input
conditioner (the checkpoint's fp16-rounded mean/std), the per-teacher summary tokens, the adaptor heads, and
ViTDet windowed attention.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models._features import feature_take_indices
from timm.models.naflexvit import batch_patchify
from torch import nn

from .adaptors import CRadioAdaptor, HeadSpec, RadioOutput, build_head, head_spec_from_state
from .checkpoint import (
    CheckpointError,
    HubFile,
    PathLike,
    RadioCheckpoint,
    check_keys,
    hub_download,
    read_radio_checkpoint,
    save_radio_checkpoint,
)
from .registry import name_key

_logger = logging.getLogger(__name__)

__all__ = [
    'CRadioArch', 'TeacherSpec', 'Release', 'RELEASES', 'VARIANTS', 'CRadioEncoder', 'load_cradio', 'create_cradio',
    'save_cradio', 'global_block_indexes', 'nearest_supported_resolution', 'window_partition',
    'window_unpartition', 'resolve_release_name',
]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The released checkpoints store the conditioner in fp16; the rounded values are what the model was trained with
# (the exact constants move outputs by ~5e-3).
CRADIO_MEAN = tuple(torch.tensor(OPENAI_CLIP_MEAN).half().float().tolist())
CRADIO_STD = tuple(torch.tensor(OPENAI_CLIP_STD).half().float().tolist())


# --------------------------------------------------------------------------------------------------------------
# Architecture description
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TeacherSpec:
    """One distillation teacher: its CLS-token slot and (when the checkpoint has them) its adaptor heads."""
    name: str
    type: str
    use_summary: bool
    token_slot: int
    summary_head: HeadSpec | None = None
    feature_head: HeadSpec | None = None


@dataclass(frozen=True)
class CRadioArch:
    """Everything needed to build a C-RADIO encoder; read from a checkpoint by :func:`arch_from_checkpoint`.

    ``num_cls_tokens + num_registers`` prefix tokens precede the patch tokens; ``summary_idxs`` are the CLS slots
    concatenated into the backbone summary.
    """
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden_dim: int
    num_cls_tokens: int
    num_registers: int
    summary_idxs: tuple[int, ...]
    teachers: tuple[TeacherSpec, ...]
    patch_size: int = 16
    pos_embed_grid: int = 128
    qkv_bias: bool = True
    layer_scale: bool = False
    final_norm: bool = False
    input_mean: tuple[float, float, float] = CRADIO_MEAN
    input_std: tuple[float, float, float] = CRADIO_STD
    # ViTDet schedule: RADIO's `vitdet_num_global` / `vitdet_num_windowed` (None -> 4 global blocks)
    vitdet_num_global: int | None = None
    vitdet_num_windowed: int | None = None
    max_resolution: int | None = None
    preferred_resolution: tuple[int, int] | None = None
    # the checkpoint's training Namespace (as a dict), kept so a saved model round-trips
    args: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def num_prefix_tokens(self) -> int:
        return self.num_cls_tokens + self.num_registers

    def teacher(self, name: str) -> TeacherSpec:
        for t in self.teachers:
            if t.name == name:
                return t
        raise ValueError(
            f'Unknown adaptor {name!r}. This checkpoint was distilled from the teachers '
            f'{[t.name for t in self.teachers]}; adaptor names come from its args.teachers.'
        )


@dataclass(frozen=True)
class Release:
    """A released C-RADIO model: where its weights live and what RADIO's release table says about it."""
    checkpoint: HubFile
    safetensors: HubFile
    arch: CRadioArch  # architecture numbers, for random-weight builds (benchmarks, tests)
    timm_name: str
    max_resolution: int = 2048
    preferred_resolution: tuple[int, int] = (512, 512)
    supports_vitdet: bool = True


def _release_teachers(dim: int) -> tuple[TeacherSpec, ...]:
    # Head sizes of the released adaptors are read from the checkpoint when loading; these (teacher widths, and a
    # hidden width equal to the output width) only shape random-weight builds for benchmarks.
    def head(kind: str, out: int, inner: int = 1) -> HeadSpec:
        return HeadSpec(kind, dim, out, out, 0 if kind == 'attn' else inner)
    return (
        TeacherSpec('siglip2-g', 'siglip2', True, 0, head('v2', 1536), head('attn', 1536)),
        TeacherSpec('dino_v3_7b', 'dino_v3', True, 1, head('v2', 4096), head('v2', 4096)),
        TeacherSpec('sam3', 'sam3', False, 2, head('v2', 1024), head('v2', 1024)),
    )


def _release_arch(embed_dim: int, depth: int, mlp_hidden_dim: int) -> CRadioArch:
    return CRadioArch(
        embed_dim=embed_dim, depth=depth, num_heads=16, mlp_hidden_dim=mlp_hidden_dim, num_cls_tokens=3,
        num_registers=7, summary_idxs=(0, 1), teachers=_release_teachers(embed_dim),
        # the released checkpoints store the CLIP constants in fp16
        input_mean=tuple(torch.tensor(OPENAI_CLIP_MEAN).half().float().tolist()),
        input_std=tuple(torch.tensor(OPENAI_CLIP_STD).half().float().tolist()),
        max_resolution=2048, preferred_resolution=(512, 512),
    )


RELEASES: dict[str, Release] = {
    'c-radio_v4-h': Release(
        checkpoint=HubFile('nvidia/C-RADIOv4-H', 'c-radio_v4-h_half.pth.tar'),
        safetensors=HubFile('nvidia/C-RADIOv4-H', 'model.safetensors'),
        arch=_release_arch(1280, 32, 5120),
        timm_name='naflexvit_huge_patch16_radio_v4',
    ),
    'c-radio_v4-so400m': Release(
        checkpoint=HubFile('nvidia/C-RADIOv4-SO400M', 'c-radio_v4-so400m_half.pth.tar'),
        safetensors=HubFile('nvidia/C-RADIOv4-SO400M', 'model.safetensors'),
        arch=_release_arch(1152, 27, 4304),
        timm_name='naflexvit_so400m_patch16_radio_v4',
    ),
}


def _test_arch() -> CRadioArch:
    # The architecture of sam3_cradio/assets/cradio_tiny (NVIDIA's fixture): random-weight builds of it need no file.
    dim = 192
    return CRadioArch(
        embed_dim=dim, depth=8, num_heads=3, mlp_hidden_dim=768, num_cls_tokens=3, num_registers=7,
        summary_idxs=(0, 1), teachers=(
            TeacherSpec('siglip2-g', 'siglip2', True, 0, HeadSpec('v2', dim, 256, 96, 1), HeadSpec('attn', dim, 256, 96)),
            TeacherSpec('dino_v3_7b', 'dino_v3', True, 1, HeadSpec('v2', dim, 256, 80, 1), HeadSpec('v2', dim, 256, 80, 1)),
            TeacherSpec('sam3', 'sam3', False, 2, HeadSpec('v2', dim, 256, 64, 1), HeadSpec('v2', dim, 256, 64, 1)),
        ))


# Architectures buildable with random weights by name: the releases, plus a tiny one for tests (timm's test_vit).
VARIANTS: dict[str, CRadioArch] = {name: release.arch for name, release in RELEASES.items()}
VARIANTS['cradio_test'] = _test_arch()


def resolve_release_name(name: str) -> str | None:
    """'c-radio_v4-h', 'cradio_v4_h', 'C-RADIOv4-H' and 'nvidia/C-RADIOv4-H' all name the same release."""
    key = name_key(name)
    for release_name, release in RELEASES.items():
        if key in {name_key(release_name), name_key(release.checkpoint.repo_id)}:
            return release_name
    return None


# RADIO trains with its own timm model names; num_heads is the one size a state dict cannot reveal.
_RADIO_MODEL_HEADS = {
    'vit_huge_patch16_224': 16,
    'vit_huge_patch16_224_mlpnorm': 16,
    'vit_so400m_patch16_224': 16,
    'vit_so400m_v2_patch16_224': 16,
    'vit_giant_patch16_224': 24,
    'vit_large_patch16_v2_224': 16,
    'vit_base_patch16_v2_224': 12,
}


def _num_heads(model_name: str, model_kwargs: Mapping[str, Any]) -> int:
    if 'num_heads' in model_kwargs:
        return int(model_kwargs['num_heads'])
    if model_name in _RADIO_MODEL_HEADS:
        return _RADIO_MODEL_HEADS[model_name]
    try:
        with torch.device('meta'):
            vit = timm.create_model(model_name, pretrained=False, **model_kwargs)
        return int(vit.blocks[0].attn.num_heads)
    except Exception as e:
        raise CheckpointError(
            f'cannot tell the number of attention heads of args.model={model_name!r}: it is neither a timm model '
            f'nor a known RADIO model ({e}).'
        ) from None


def _get(args: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = args.get(key, default)
    return default if value is None else value


def arch_from_checkpoint(chk: RadioCheckpoint, release: Release | None = None) -> CRadioArch:
    """Derive the architecture from the checkpoint's args and tensor shapes (no per-model constants)."""
    sd, args = chk.state_dict, chk.args

    def tensor(key: str) -> torch.Tensor:
        if key not in sd:
            raise CheckpointError(f'{chk.source} has no {key!r}: it is not a C-RADIO checkpoint')
        return sd[key]

    for key in ('model', 'teachers'):
        if key not in args:
            raise CheckpointError(f'{chk.source}: args has no {key!r} field; it is not a RADIO training checkpoint')
    if args.get('cpe_max_size') is None:
        raise CheckpointError(f'{chk.source} is not a CPE (C-RADIO) checkpoint: args.cpe_max_size is not set')
    if any('parametrizations' in k for k in sd):
        raise CheckpointError(
            f'{chk.source} holds spectral-reparametrised training weights; use the released (EMA / _half) file')

    embed_dim, patch_dim = tensor('base_model.patch_generator.embedder.weight').shape
    patch_size = int(round(math.sqrt(patch_dim / 3)))
    if 3 * patch_size ** 2 != patch_dim:
        raise CheckpointError(f'{chk.source}: patch embedding input {patch_dim} is not 3 x p x p')
    depth = 0
    while f'base_model.blocks.{depth}.attn.qkv.weight' in sd:
        depth += 1
    if depth == 0:
        raise CheckpointError(f'{chk.source} has no base_model.blocks.*: it is not a ViT C-RADIO checkpoint')

    pos = tensor('base_model.patch_generator.pos_embed')
    grid = int(round(math.sqrt(pos.shape[1])))
    if grid * grid != pos.shape[1] or pos.shape[2] != embed_dim:
        raise CheckpointError(f'{chk.source}: pos_embed {tuple(pos.shape)} is not a square grid of width {embed_dim}')

    teachers_cfg = list(args['teachers'])
    names = [t['name'] for t in teachers_cfg]
    cls_per_teacher = bool(_get(args, 'cls_token_per_teacher', True))
    num_cls = len(set(names)) if cls_per_teacher else 1
    num_registers = _get(args, 'cpe_num_registers', 0)
    if not num_registers and _get(args, 'register_multiple', 0):
        num_registers = args['register_multiple'] - num_cls % args['register_multiple']
    tokens = tensor('base_model.patch_generator.cls_token.token')
    if tokens.shape[0] != num_cls + num_registers:
        raise CheckpointError(
            f'{chk.source}: {tokens.shape[0]} prefix tokens stored, but args give {num_cls} CLS + '
            f'{num_registers} registers')

    if cls_per_teacher:
        first_index: dict[str, int] = {}
        for i, t in enumerate(teachers_cfg):
            if t.get('use_summary', True):
                first_index.setdefault(t['name'], i)
        summary_idxs = tuple(sorted(first_index.values()))
    else:
        summary_idxs = (0,)

    summary_version = _get(args, 'mlp_version', 'v2')
    feature_version = _get(args, 'spatial_mlp_version', summary_version)
    teachers = []
    for i, t in enumerate(teachers_cfg):
        heads = {}
        for kind, prefix, version in (
                ('summary', '_heads', t.get('mlp_version') or summary_version),
                ('feature', '_feature_projections', t.get('spatial_mlp_version') or feature_version)):
            state = _strip_teacher_prefix(sd, prefix, t['name'], i)
            ups = int(_get(t, 'fd_upsample_factor', 1)) if kind == 'feature' else 1
            heads[kind] = head_spec_from_state(version, state, ups) if state else None
        teachers.append(TeacherSpec(
            name=t['name'], type=t.get('type', t['name']), use_summary=bool(t.get('use_summary', True)),
            token_slot=int(t.get('token_slot', i)) if cls_per_teacher else 0,
            summary_head=heads['summary'], feature_head=heads['feature'],
        ))

    mean = tensor('input_conditioner.norm_mean').float().flatten().tolist()
    std = tensor('input_conditioner.norm_std').float().flatten().tolist()
    model_norm = bool(_get(args, 'model_norm', False))
    return CRadioArch(
        embed_dim=int(embed_dim),
        depth=depth,
        num_heads=_num_heads(args['model'], _get(args, 'model_kwargs', {})),
        mlp_hidden_dim=int(tensor('base_model.blocks.0.mlp.fc1.weight').shape[0]),
        num_cls_tokens=num_cls,
        num_registers=int(num_registers),
        summary_idxs=summary_idxs,
        teachers=tuple(teachers),
        patch_size=patch_size,
        pos_embed_grid=grid,
        qkv_bias='base_model.blocks.0.attn.qkv.bias' in sd,
        layer_scale=any(k.startswith('base_model.blocks.0.ls1.') for k in sd),
        final_norm=model_norm and 'base_model.norm.weight' in sd,
        input_mean=tuple(mean),
        input_std=tuple(std),
        max_resolution=release.max_resolution if release else None,
        preferred_resolution=release.preferred_resolution if release else None,
        args=dict(args),
    )


def _teacher_head_prefixes(prefix: str, name: str, index: int) -> tuple[str, str]:
    # RADIO stores heads under the teacher's name (released files) or, in older files, its index.
    return f'{prefix}.{name}.', f'{prefix}.{index}.'


def _strip_teacher_prefix(sd: Mapping[str, torch.Tensor], prefix: str, name: str, index: int) -> dict[str, torch.Tensor]:
    for p in _teacher_head_prefixes(prefix, name, index):
        state = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
        if state:
            return state
    return {}


# --------------------------------------------------------------------------------------------------------------
# ViTDet helpers
# --------------------------------------------------------------------------------------------------------------

def global_block_indexes(depth: int, num_global: int | None = None, num_windowed: int | None = None) -> tuple[int, ...]:
    """Blocks that keep global attention in ViTDet mode, chosen as NVIDIA's ``radio/vitdet.py`` does.

    Blocks run in periods of ``num_windowed + 1`` (else ``depth // num_global``, 4 global blocks by default); the
    last block of each period is global, and so is the model's last block. H (32 blocks) -> 7, 15, 23, 31;
    SO400M (27 blocks) -> 5, 11, 17, 23, 26.
    """
    if num_windowed is not None:
        period = num_windowed + 1
    else:
        period = max(depth // (num_global or 4), 1)
    return tuple(i for i in range(depth) if (i + 1) % period == 0 or i == depth - 1)


def nearest_supported_resolution(height: int, width: int, step: int) -> tuple[int, int]:
    """Round each side to the nearest multiple of ``step`` (ties to even, as RADIO's Python ``round``), min one step."""
    return tuple(max(int(round(s / step)) * step, step) for s in (height, width))


def window_partition(x: torch.Tensor, grid_size: tuple[int, int], window: int) -> torch.Tensor:
    """(B, h*w, C) row-major patch tokens -> (B * num_windows, window**2, C), windows row-major."""
    B, _, C = x.shape
    h, w = grid_size
    x = x.view(B, h // window, window, w // window, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, C)


def window_unpartition(x: torch.Tensor, grid_size: tuple[int, int], window: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * num_windows, window**2, C) -> (B, h*w, C) row-major."""
    h, w = grid_size
    C = x.shape[-1]
    x = x.view(-1, h // window, w // window, window, window, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h * w, C)


def _to_format(tokens: torch.Tensor, grid_size: tuple[int, int], fmt: str) -> torch.Tensor:
    if fmt == 'NLC':
        return tokens
    if fmt == 'NCHW':
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid_size)
    raise ValueError(f"feature format must be 'NLC' or 'NCHW', got {fmt!r}")


# --------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------

def _timm_name(arch: CRadioArch) -> str:
    for release in RELEASES.values():
        r = release.arch
        if (r.embed_dim, r.depth, r.num_heads, r.mlp_hidden_dim) == (
                arch.embed_dim, arch.depth, arch.num_heads, arch.mlp_hidden_dim):
            return release.timm_name
    # any other size: timm's C-RADIOv4 recipe with the checkpoint's sizes
    return 'naflexvit_huge_patch16_radio_v4'


def _create_trunk(arch: CRadioArch) -> nn.Module:
    vit = timm.create_model(
        _timm_name(arch),
        pretrained=False,
        num_classes=0,
        global_pool='',
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.num_heads,
        mlp_ratio=arch.mlp_hidden_dim / arch.embed_dim,
        qkv_bias=arch.qkv_bias,
        init_values=1e-5 if arch.layer_scale else None,
        patch_size=arch.patch_size,
        # timm counts the first CLS token as its class token and every further prefix token as a register
        reg_tokens=arch.num_prefix_tokens - 1,
        pos_embed_grid_size=(arch.pos_embed_grid, arch.pos_embed_grid),
        final_norm=arch.final_norm,
        # RADIO flattens each patch in (c, y, x) order
        patchify_channels_last=False,
    )
    # RADIO's patch embedding is a bias-free linear layer.
    vit.embeds.proj.bias = None
    emb = vit.embeds
    # CRadioEncoder._embed runs these embeddings itself (to cache the position-embedding resize): it relies on
    # a linear patch projection, no input/output norm, and a learned table resized square-then-crop.
    if not (emb.is_linear and emb.norm_input is None and isinstance(emb.norm, nn.Identity)
            and emb.pos_embed_type == 'learned' and emb.pos_embed_ar_preserving and not emb.pos_drop.p):
        raise RuntimeError(
            f'timm {timm.__version__} built {_timm_name(arch)} with patch embeddings this package does not handle; '
            f'install the timm version pyproject.toml pins (>=1.0.31,<1.1)')
    hidden = vit.blocks[0].mlp.fc1.out_features
    if hidden != arch.mlp_hidden_dim:
        raise RuntimeError(f'timm built an MLP of width {hidden}, expected {arch.mlp_hidden_dim}')
    return vit


class CRadioEncoder(nn.Module):
    """C-RADIO image encoder: input conditioner, timm ViT trunk, optional ViTDet windows, adaptor heads.

    ``forward(x)`` takes RGB in [0, 1], (B, 3, H, W) with H and W multiples of :attr:`min_resolution_step`, and
    returns ``{'backbone': RadioOutput, <adaptor>: RadioOutput, ...}``: the backbone summary (B, len(summary_idxs)*D)
    and features (B, h*w, D) or (B, D, h, w), and for every loaded adaptor its summary and features.
    """

    def __init__(
            self,
            arch: CRadioArch,
            adaptor_names: Sequence[str] = (),
            window_size: int | None = None,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.model = _create_trunk(arch)
        self.register_buffer('input_mean', torch.tensor(arch.input_mean, dtype=torch.float32).view(3, 1, 1))
        self.register_buffer('input_std', torch.tensor(arch.input_std, dtype=torch.float32).view(3, 1, 1))
        self.adaptors = nn.ModuleDict()
        for name in adaptor_names:
            spec = arch.teacher(name)
            if spec.summary_head is None or spec.feature_head is None:
                raise ValueError(
                    f'adaptor {name!r} has no heads in this checkpoint. The Hugging Face model.safetensors export '
                    f'carries the backbone only; load the released .pth.tar to use adaptors.')
            self.adaptors[name] = CRadioAdaptor(
                build_head(spec.summary_head), build_head(spec.feature_head), spec.token_slot)
        self._pos_cache: tuple[tuple[Any, ...], torch.Tensor] | None = None  # see pos_embed
        self.window_size: int | None = None
        self.global_blocks: frozenset[int] = frozenset(range(arch.depth))
        self.set_window_size(window_size)

    # ---- properties ------------------------------------------------------------------------------------------
    @property
    def patch_size(self) -> int:
        return self.arch.patch_size

    @property
    def embed_dim(self) -> int:
        return self.arch.embed_dim

    @property
    def num_summary_tokens(self) -> int:
        """Prefix tokens (CLS slots and registers) before the patch tokens."""
        return self.arch.num_prefix_tokens

    @property
    def num_cls_tokens(self) -> int:
        return self.arch.num_cls_tokens

    @property
    def summary_idxs(self) -> tuple[int, ...]:
        return self.arch.summary_idxs

    @property
    def summary_dim(self) -> int:
        return self.embed_dim * len(self.summary_idxs)

    @property
    def min_resolution_step(self) -> int:
        """Input sides must be multiples of this: the patch size, times the window size in ViTDet mode."""
        return self.patch_size * (self.window_size or 1)

    @property
    def max_resolution(self) -> int | None:
        return self.arch.max_resolution

    @property
    def preferred_resolution(self) -> tuple[int, int] | None:
        return self.arch.preferred_resolution

    @property
    def adaptor_names(self) -> list[str]:
        return list(self.adaptors.keys())

    def set_window_size(self, window_size: int | None) -> None:
        """Switch between global attention (None) and ViTDet windows of ``window_size`` x ``window_size`` patches."""
        if window_size is not None:
            if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
                raise ValueError(f'window_size must be None or a positive int, got {window_size!r}')
            global_blocks = global_block_indexes(
                self.arch.depth, self.arch.vitdet_num_global, self.arch.vitdet_num_windowed)
            if len(global_blocks) == self.arch.depth:
                warnings.warn(
                    f'a {self.arch.depth}-block model has no windowed blocks under the ViTDet schedule; '
                    f'window_size={window_size} only changes the resolution step', stacklevel=2)
        else:
            global_blocks = range(self.arch.depth)
        self.window_size = window_size
        self.global_blocks = frozenset(global_blocks)

    def nearest_supported_resolution(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) closest to the given one that this encoder accepts."""
        return nearest_supported_resolution(height, width, self.min_resolution_step)

    # ---- forward ---------------------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> tuple[int, int]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f'expected an RGB batch (B, 3, H, W) with values in [0, 1], got shape {tuple(x.shape)}')
        h, w = x.shape[-2:]
        step = self.min_resolution_step
        if h % step or w % step:
            mode = f'patch {self.patch_size} x window {self.window_size}' if self.window_size else f'patch {self.patch_size}'
            nh, nw = self.nearest_supported_resolution(h, w)
            raise ValueError(
                f'input resolution {h}x{w} is not a multiple of min_resolution_step={step} ({mode}); '
                f'resize to the nearest supported resolution {nh}x{nw} (see nearest_supported_resolution)')
        return h // self.patch_size, w // self.patch_size

    def pos_embed(self, grid_size: tuple[int, int]) -> torch.Tensor:
        """(1, h*w, D) position embedding for an h x w patch grid (RADIO's CPE: resize square, then crop).

        The learned table is resized to ``max(h, w)`` squared and cropped to the grid, with timm's interpolation
        settings. Outside autograd the result is cached for the last grid, device and dtype (re-resizing the
        128 x 128 table every call is wasted work at a fixed size); the cache is keyed on the table's version
        counter too, so loading weights or an optimiser step invalidates it.
        """
        emb = self.model.embeds
        table = emb.pos_embed
        # a compiled graph, autograd and fake / meta tables (tracing, FLOP counting) all resize every call
        cacheable = (not torch.is_grad_enabled() and not torch.compiler.is_compiling()
                     and type(table) is nn.Parameter and table.device.type != 'meta')
        key = (tuple(grid_size), table.device, table.dtype, table.data_ptr(), table._version) if cacheable else None
        if cacheable and self._pos_cache is not None and self._pos_cache[0] == key:
            return self._pos_cache[1]
        h, w = grid_size
        if (h, w) == tuple(table.shape[1:3]):
            pos = table.reshape(1, h * w, -1)
        else:
            side = max(h, w)
            pos = F.interpolate(
                table.permute(0, 3, 1, 2).float(), size=(side, side), mode=emb.pos_embed_interp_mode,
                align_corners=emb.pos_embed_align_corners, antialias=emb.pos_embed_antialias,
            )[:, :, :h, :w].flatten(2).transpose(1, 2).to(table.dtype)
        # only plain tensors: a fake tensor (FLOP counting, tracing) would turn later real forwards fake too
        if cacheable and type(pos) is torch.Tensor:
            self._pos_cache = (key, pos)
        return pos

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Input conditioner, patch embedding, position embedding and prefix tokens: (B, P + h*w, D)."""
        grid_size = self._check_input(x)
        emb = self.model.embeds
        x = (x - self.input_mean) / self.input_std
        x = x.to(emb.proj.weight.dtype)  # a no-op for fp32 weights, autocast or not
        patches, _ = batch_patchify(x, emb.patch_size, channels_last=emb.channels_last)
        tokens = emb.proj(patches)
        tokens = tokens + self.pos_embed(grid_size).to(tokens.dtype)
        prefix = [t.expand(tokens.shape[0], -1, -1) for t in (emb.cls_token, emb.reg_token) if t is not None]
        return torch.cat(prefix + [tokens], dim=1), grid_size

    def _run_blocks(
            self,
            x: torch.Tensor,
            grid_size: tuple[int, int],
            take: Sequence[int] = (),
            last: int | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run blocks 0..last on (B, P + h*w, D) tokens; return the output and the outputs of blocks in ``take``.

        In windowed blocks the P prefix tokens sit out: they are set aside when a run of windowed blocks starts and
        rejoin (unchanged) at the next global block. Every returned tensor is in plain row-major patch order.
        """
        P, W = self.num_summary_tokens, self.window_size
        blocks = self.model.blocks if last is None else self.model.blocks[:last + 1]
        prefix: torch.Tensor | None = None  # not None while tokens are split into windows
        intermediates = []
        for i, block in enumerate(blocks):
            windowed = i not in self.global_blocks
            if windowed and prefix is None:
                prefix, x = x[:, :P], window_partition(x[:, P:], grid_size, W)
            elif not windowed and prefix is not None:
                x = torch.cat([prefix, window_unpartition(x, grid_size, W)], dim=1)
                prefix = None
            x = block(x)
            if i in take:
                intermediates.append(
                    x if prefix is None else torch.cat([prefix, window_unpartition(x, grid_size, W)], dim=1))
        if prefix is not None:
            x = torch.cat([prefix, window_unpartition(x, grid_size, W)], dim=1)
        return x, intermediates

    def _summary(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, list(self.summary_idxs)].flatten(1)

    def _outputs(self, tokens: torch.Tensor, grid_size: tuple[int, int], fmt: str) -> dict[str, RadioOutput]:
        P = self.num_summary_tokens
        prefix, features = tokens[:, :P], tokens[:, P:]
        out = {'backbone': RadioOutput(self._summary(tokens), _to_format(features, grid_size, fmt))}
        for name, adaptor in self.adaptors.items():
            summary, feats = adaptor(prefix, features, grid_size)
            u = adaptor.upsample_factor
            out[name] = RadioOutput(summary, _to_format(feats, (grid_size[0] * u, grid_size[1] * u), fmt))
        return out

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, 3, H, W) in [0, 1] -> final tokens (B, P + h*w, D) in row-major patch order, and (h, w)."""
        tokens, grid_size = self._embed(x)
        tokens, _ = self._run_blocks(tokens, grid_size)
        return self.model.norm(tokens), grid_size

    def forward(self, x: torch.Tensor, feature_fmt: str = 'NLC') -> dict[str, RadioOutput]:
        tokens, grid_size = self.forward_features(x)
        return self._outputs(tokens, grid_size, feature_fmt)

    def forward_adaptor_features(self, x: torch.Tensor, name: str, feature_fmt: str = 'NCHW') -> torch.Tensor:
        """Only one adaptor's spatial features, e.g. the ``sam3`` adaptor's (B, 1024, H/16, W/16) for SAM3."""
        if name not in self.adaptors:
            raise ValueError(f'adaptor {name!r} is not loaded; loaded: {self.adaptor_names}')
        tokens, grid_size = self.forward_features(x)
        P = self.num_summary_tokens
        adaptor = self.adaptors[name]
        feats = adaptor.feature_head(tokens[:, P:], grid_size).float()
        u = adaptor.upsample_factor
        return _to_format(feats, (grid_size[0] * u, grid_size[1] * u), feature_fmt)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | Sequence[int] | None = None,
            output_fmt: str = 'NCHW',
            norm: bool = False,
            intermediates_only: bool = False,
    ) -> list[RadioOutput] | tuple[dict[str, RadioOutput], list[RadioOutput]]:
        """Outputs of selected blocks, correct in ViTDet mode too (patch tokens back in row-major order).

        Args:
            x: (B, 3, H, W) RGB in [0, 1].
            indices: last n blocks if int, these blocks if a sequence (negatives count from the end), all if None.
            output_fmt: 'NCHW' or 'NLC' for the features.
            norm: apply the final norm (Identity for C-RADIOv4) to each intermediate.
            intermediates_only: return only the intermediates, stopping after the last one asked for.

        Returns:
            A list of RadioOutput(summary (B, len(summary_idxs)*D), features) per block, and unless
            ``intermediates_only`` the normal ``forward`` output first.
        """
        take, last = feature_take_indices(len(self.model.blocks), indices)
        tokens, grid_size = self._embed(x)
        tokens, intermediates = self._run_blocks(
            tokens, grid_size, take=set(take), last=last if intermediates_only else None)
        P = self.num_summary_tokens
        results = []
        for t in intermediates:
            t = self.model.norm(t) if norm else t
            results.append(RadioOutput(self._summary(t), _to_format(t[:, P:], grid_size, output_fmt)))
        if intermediates_only:
            return results
        return self._outputs(self.model.norm(tokens), grid_size, output_fmt), results


# --------------------------------------------------------------------------------------------------------------
# Checkpoint conversion (NVIDIA's released layout <-> this module)
# --------------------------------------------------------------------------------------------------------------

def checkpoint_filter_fn(
        state_dict: Mapping[str, torch.Tensor],
        arch: CRadioArch,
        adaptor_names: Sequence[str] = (),
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map RADIO keys to :class:`CRadioEncoder` keys. Returns the mapped dict and the RADIO keys left unused
    (heads of teachers that were not asked for); a key that belongs nowhere raises."""
    out: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    unknown: list[str] = []
    head_prefixes = {}
    for i, t in enumerate(arch.teachers):
        for src, dst in (('_heads', 'summary_head'), ('_feature_projections', 'feature_head')):
            for p in _teacher_head_prefixes(src, t.name, i):
                head_prefixes[p] = (t.name, dst)
    g = arch.pos_embed_grid
    for k, v in state_dict.items():
        if k == 'base_model.patch_generator.embedder.weight':
            out['model.embeds.proj.weight'] = v
        elif k == 'base_model.patch_generator.pos_embed':
            out['model.embeds.pos_embed'] = v.reshape(1, g, g, -1)
        elif k == 'base_model.patch_generator.cls_token.token':
            out['model.embeds.cls_token'] = v[None, :1]
            if v.shape[0] > 1:
                out['model.embeds.reg_token'] = v[None, 1:]
        elif k.startswith('base_model.blocks.') or (arch.final_norm and k.startswith('base_model.norm.')):
            out['model.' + k[len('base_model.'):].replace('.grandma', '.gamma')] = v
        elif k == 'input_conditioner.norm_mean':
            out['input_mean'] = v.reshape(3, 1, 1)
        elif k == 'input_conditioner.norm_std':
            out['input_std'] = v.reshape(3, 1, 1)
        elif k.startswith(('_heads.', '_feature_projections.')):
            prefix = next((p for p in head_prefixes if k.startswith(p)), None)
            if prefix is None:
                unknown.append(k)
                continue
            name, dst = head_prefixes[prefix]
            if name in adaptor_names:
                out[f'adaptors.{name}.{dst}.{k[len(prefix):]}'] = v
            else:
                unused.append(k)
        elif k.startswith('base_model.norm.'):
            unused.append(k)  # RADIO replaces the final norm with Identity unless args.model_norm
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(
            f'{len(unknown)} checkpoint tensors have no place in a C-RADIO encoder (e.g. feature normalizers or a '
            f'different architecture): {sorted(unknown)[:20]}')
    return out, unused


def encoder_state_to_radio(model: CRadioEncoder) -> dict[str, torch.Tensor]:
    """The inverse of :func:`checkpoint_filter_fn`: this model's weights under NVIDIA's released key names."""
    out: dict[str, torch.Tensor] = {}
    sd = model.state_dict()
    for k, v in sd.items():
        if k == 'model.embeds.proj.weight':
            out['base_model.patch_generator.embedder.weight'] = v
        elif k == 'model.embeds.pos_embed':
            out['base_model.patch_generator.pos_embed'] = v.reshape(1, -1, v.shape[-1])
        elif k == 'model.embeds.cls_token':
            tokens = [v[0]] + ([sd['model.embeds.reg_token'][0]] if 'model.embeds.reg_token' in sd else [])
            out['base_model.patch_generator.cls_token.token'] = torch.cat(tokens, dim=0)
        elif k == 'model.embeds.reg_token':
            continue
        elif k.startswith('model.'):
            out['base_model.' + k[len('model.'):]] = v
        elif k == 'input_mean':
            out['input_conditioner.norm_mean'] = v
        elif k == 'input_std':
            out['input_conditioner.norm_std'] = v
        elif k.startswith('adaptors.'):
            _, name, head, rest = k.split('.', 3)
            prefix = '_heads' if head == 'summary_head' else '_feature_projections'
            out[f'{prefix}.{name}.{rest}'] = v
        else:
            raise RuntimeError(f'no RADIO name for {k!r}')
    return out


def args_from_arch(arch: CRadioArch) -> dict[str, Any]:
    """A RADIO training Namespace (as a dict) describing ``arch``; the checkpoint's own args when it has them."""
    if arch.args is not None:
        return dict(arch.args)
    teachers = []
    for t in arch.teachers:
        conf: dict[str, Any] = {'name': t.name, 'type': t.type, 'use_summary': t.use_summary}
        if t.feature_head is not None:
            conf['spatial_mlp_version'] = t.feature_head.type
            if t.feature_head.upsample_factor > 1:
                conf['fd_upsample_factor'] = t.feature_head.upsample_factor
        if t.summary_head is not None:
            conf['mlp_version'] = t.summary_head.type
        teachers.append(conf)
    return {
        'model': f'cradio_{arch.embed_dim}d_{arch.depth}l',
        'model_kwargs': {'num_heads': arch.num_heads},
        'cpe_max_size': arch.pos_embed_grid * arch.patch_size,
        'cls_token_per_teacher': True,
        'cpe_num_registers': arch.num_registers,
        'register_multiple': None,
        'model_norm': arch.final_norm,
        'mlp_version': 'v2',
        'spatial_mlp_version': None,
        'teachers': teachers,
        'patch_size': arch.patch_size,
        'spectral_reparam': False,
        'spectral_heads': False,
        'damp': None,
        'dtype': torch.float32,
    }


def save_cradio(model: CRadioEncoder, path: PathLike, half: bool = True) -> None:
    """Save in NVIDIA's released ``.pth.tar`` layout, loadable by :func:`load_cradio` and by RADIO's own hub code.

    Only the loaded adaptors are written (with their teachers kept in args so token slots stay valid).
    """
    save_radio_checkpoint(path, encoder_state_to_radio(model), args_from_arch(model.arch), half=half)


# --------------------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------------------

def _resolve_source(source: PathLike, prefer_safetensors: bool) -> tuple[Path, Release | None]:
    name = resolve_release_name(str(source))
    if name is not None and not Path(source).exists():
        release = RELEASES[name]
        hub = release.safetensors if prefer_safetensors else release.checkpoint
        path = hub_download(hub, f'C-RADIO {name!r}')
        if prefer_safetensors:
            # the HF export keeps its architecture in config.json beside the weights
            hub_download(HubFile(hub.repo_id, 'config.json'), f'C-RADIO {name!r} config')
        return path, release
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f'{str(source)!r} is neither a file nor a known C-RADIO release ({sorted(RELEASES)})')
    return path, None


def load_cradio(
        source: PathLike,
        adaptor_names: Sequence[str] | None = None,
        window_size: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        prefer_safetensors: bool = False,
) -> CRadioEncoder:
    """Load a C-RADIO encoder with its adaptor heads, in eval mode.

    Args:
        source: a release name ('c-radio_v4-h', 'c-radio_v4-so400m'; downloaded through the Hugging Face cache),
            a released ``.pth.tar``, an HF ``model.safetensors`` (with its config.json beside it; no adaptors), or
            a folder holding one of them.
        adaptor_names: teachers whose heads to load, e.g. ['sam3']; names come from the checkpoint's teachers.
        window_size: None for global attention, or a ViTDet window in patches.
        device: where to put the model (default CPU).
        dtype: parameter dtype (the released fp16 weights are upcast, as RADIO does).
        prefer_safetensors: for release names, fetch the repo's model.safetensors instead of the .pth.tar.
    """
    if isinstance(adaptor_names, str):
        adaptor_names = [adaptor_names]
    adaptor_names = list(adaptor_names or [])
    path, release = _resolve_source(source, prefer_safetensors)
    chk = read_radio_checkpoint(path)
    arch = arch_from_checkpoint(chk, release)
    if release is not None and window_size is not None and not release.supports_vitdet:
        raise ValueError(f'{source} does not support ViTDet windows')

    with torch.device('meta'):
        model = CRadioEncoder(arch, adaptor_names, window_size)
    state, unused = checkpoint_filter_fn(chk.state_dict, arch, adaptor_names)
    expected = model.state_dict().keys()
    check_keys(expected - state.keys(), state.keys() - expected, what=f'loading {chk.source}')
    try:
        model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()},
                              strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f'{chk.source} does not fit its own architecture: {e}') from None
    # the conditioner stays float32: the fp16-rounded constants are exactly representable
    model.input_mean.data = model.input_mean.float()
    model.input_std.data = model.input_std.float()
    _logger.info('loaded %s (%d unused head tensors of other teachers)', chk.source, len(unused))
    return model.to(device or 'cpu').eval()


def create_cradio(
        variant: str = 'c-radio_v4-h',
        adaptor_names: Sequence[str] = ('sam3',),
        window_size: int | None = None,
        arch: CRadioArch | None = None,
        device: str | torch.device | None = None,
        **arch_overrides: Any,
) -> CRadioEncoder:
    """Build a C-RADIO encoder with random weights from a release's architecture numbers (benchmarks, tests).

    ``arch`` (or ``arch_overrides`` on the release's numbers) describes any other size.
    """
    if arch is None:
        name = resolve_release_name(variant) or variant
        if name not in VARIANTS:
            raise ValueError(f'unknown C-RADIO variant {variant!r}; known: {sorted(VARIANTS)}')
        arch = VARIANTS[name]
    if arch_overrides:
        arch = replace(arch, **arch_overrides)
    with torch.device(device or 'cpu'):
        model = CRadioEncoder(arch, adaptor_names, window_size)
    return model.eval()
