"""C-RADIOv4 adaptor heads: per-teacher MLPs mapping backbone tokens into a teacher's space.

A C-RADIOv4 checkpoint carries, for every teacher in ``args.teachers``, a *summary* head (applied to that
teacher's CLS token) and a *feature* head (applied to every patch token). Two head types exist:

- ``"v2"`` (:class:`MlpHead`): ``fc1`` -> residual ``[LayerNorm, GELU, Linear]`` blocks -> ``[LayerNorm, GELU, Linear]``.
- ``"attn"`` (:class:`AttnHead`): two timm ViT blocks (16 heads, qkv without bias, LayerScale) then a ``"v2"`` MLP;
  used by the SigLIP2-g feature head.

Sizes are read from the checkpoint's tensors (``head_spec_from_state``), never assumed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
from timm.layers import LayerNorm as TimmLayerNorm
from timm.models.vision_transformer import Block
from torch import nn

__all__ = ['RadioOutput', 'HeadSpec', 'MlpHead', 'AttnHead', 'CRadioAdaptor', 'HEAD_TYPES', 'head_spec_from_state', 'build_head']

# RADIO's attention head hard-codes 16 heads and timm's default ViT LayerNorm eps (1e-6 in timm 1.0.31, which
# produced the released heads); written out here so a future timm default cannot silently change the numbers.
ATTN_HEAD_NUM_HEADS = 16
ATTN_HEAD_NORM_EPS = 1e-6


class RadioOutput(NamedTuple):
    """One output of the encoder or of an adaptor.

    Attributes:
        summary: (B, C_s) summary vector.
        features: (B, N, C) in 'NLC' or (B, C, H, W) in 'NCHW'.
    """
    summary: torch.Tensor
    features: torch.Tensor


def pixel_shuffle_tokens(x: torch.Tensor, grid_size: tuple[int, int], factor: int) -> torch.Tensor:
    """(B, h*w, f*f*C) tokens -> (B, (h*f)*(w*f), C), row-major on the upsampled grid.

    Each token's channels hold an f x f block of sub-patch features in (u1, u2, c) order, as RADIO writes them.
    """
    B, _, C = x.shape
    h, w = grid_size
    c = C // (factor * factor)
    x = x.reshape(B, h, w, factor, factor, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, h * factor * w * factor, c)


class MlpHead(nn.Module):
    """RADIO's MLP "v2" head: (B, N, in_dim) -> (B, N * upsample_factor**2, out_dim // upsample_factor**2)."""

    def __init__(
            self,
            in_dim: int,
            hidden_dim: int,
            out_dim: int,
            num_inner: int = 0,
            upsample_factor: int = 1,
    ) -> None:
        super().__init__()
        if out_dim % (upsample_factor ** 2):
            raise ValueError(f'out_dim {out_dim} is not divisible by upsample_factor**2 = {upsample_factor ** 2}')
        self.upsample_factor = upsample_factor
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.blocks = nn.ModuleList([
            nn.Sequential(nn.LayerNorm(hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim))
            for _ in range(num_inner)
        ])
        self.final = nn.Sequential(nn.LayerNorm(hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int] | None = None) -> torch.Tensor:
        x = self.fc1(x)
        for block in self.blocks:
            x = x + block(x)
        x = self.final(x)
        if self.upsample_factor > 1:
            if grid_size is None:
                raise ValueError('grid_size is required for a head with upsample_factor > 1')
            x = pixel_shuffle_tokens(x, grid_size, self.upsample_factor)
        return x


class AttnHead(nn.Module):
    """RADIO's "attn" feature head: two ViT blocks over the patch tokens, then an :class:`MlpHead` (no inner blocks)."""

    def __init__(
            self,
            in_dim: int,
            hidden_dim: int,
            out_dim: int,
            num_inner: int = 0,
            upsample_factor: int = 1,
    ) -> None:
        super().__init__()
        if num_inner:
            raise ValueError(f'the attn head has no inner MLP blocks, got num_inner={num_inner}')
        if in_dim % ATTN_HEAD_NUM_HEADS:
            raise ValueError(f'attn head width {in_dim} is not divisible by its {ATTN_HEAD_NUM_HEADS} heads')
        norm = partial(TimmLayerNorm, eps=ATTN_HEAD_NORM_EPS)
        self.upsample_factor = upsample_factor
        self.blocks = nn.Sequential(*[
            Block(in_dim, num_heads=ATTN_HEAD_NUM_HEADS, qkv_bias=False, init_values=1e-5, norm_layer=norm)
            for _ in range(2)
        ])
        self.mlp = MlpHead(in_dim, hidden_dim, out_dim, num_inner=0, upsample_factor=upsample_factor)

    def forward(self, x: torch.Tensor, grid_size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.mlp(self.blocks(x), grid_size)


@dataclass(frozen=True)
class HeadSpec:
    """Type and sizes of one adaptor head, as read from a checkpoint."""
    type: str
    in_dim: int
    hidden_dim: int
    out_dim: int
    num_inner: int = 0
    upsample_factor: int = 1


def _mlp_sizes(state: dict[str, torch.Tensor], prefix: str = '') -> tuple[int, int, int, int]:
    hidden_dim, in_dim = state[f'{prefix}fc1.weight'].shape
    out_dim = state[f'{prefix}final.2.weight'].shape[0]
    num_inner = 0
    while f'{prefix}blocks.{num_inner}.0.weight' in state:
        num_inner += 1
    return in_dim, hidden_dim, out_dim, num_inner


# head type -> (class, function reading (in, hidden, out, num_inner) from the head's checkpoint tensors)
HEAD_TYPES: dict[str, tuple[type, Callable[[dict[str, torch.Tensor]], tuple[int, int, int, int]]]] = {
    'v2': (MlpHead, _mlp_sizes),
    'attn': (AttnHead, lambda state: _mlp_sizes(state, 'mlp.')),
}


def head_spec_from_state(head_type: str, state: dict[str, torch.Tensor], upsample_factor: int = 1) -> HeadSpec:
    """Read a head's sizes from its checkpoint tensors (keys without the head's prefix)."""
    if head_type not in HEAD_TYPES:
        raise ValueError(f'unsupported adaptor head type {head_type!r}; supported: {sorted(HEAD_TYPES)}')
    try:
        sizes = HEAD_TYPES[head_type][1](state)
    except KeyError as e:
        raise ValueError(f'checkpoint tensors do not describe a {head_type!r} head: missing {e}') from None
    return HeadSpec(head_type, *(int(s) for s in sizes), upsample_factor=upsample_factor)


def build_head(spec: HeadSpec) -> nn.Module:
    """Instantiate the head described by ``spec`` (on the current default device)."""
    cls = HEAD_TYPES[spec.type][0]
    return cls(spec.in_dim, spec.hidden_dim, spec.out_dim, num_inner=spec.num_inner,
               upsample_factor=spec.upsample_factor)


class CRadioAdaptor(nn.Module):
    """One teacher's summary head and feature head, reading the CLS token at ``token_slot``."""

    def __init__(self, summary_head: nn.Module, feature_head: nn.Module, token_slot: int) -> None:
        super().__init__()
        self.summary_head = summary_head
        self.feature_head = feature_head
        self.token_slot = token_slot

    @property
    def upsample_factor(self) -> int:
        return self.feature_head.upsample_factor

    def forward(
            self,
            prefix_tokens: torch.Tensor,
            features: torch.Tensor,
            grid_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """prefix_tokens (B, P, D), features (B, h*w, D) -> summary (B, S), features (B, h*w*u*u, F), in float32."""
        summary = self.summary_head(prefix_tokens[:, self.token_slot])
        features = self.feature_head(features, grid_size)
        # RADIO returns adaptor outputs in float32 whatever the compute dtype.
        return summary.float(), features.float()
