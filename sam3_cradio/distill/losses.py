"""Distillation losses of the C-RADIOv4 recipe, as pure functions of tensors (plus the EMA and DAMP helpers).

Geometry convention (used by every dense loss): a feature map ``(B, C, h, w)`` comes with the *box* its view covers,
``(y, x, height, width)`` in pixels of the shared source canvas; grid cell ``(i, j)`` covers
``[y + i*height/h, y + (i+1)*height/h) x [x + j*width/w, ...)``. Two maps are compared only on the intersection of
their boxes: both are resampled bilinearly (``align_corners=False``, i.e. at cell centres) onto one common
``(h', w')`` grid of cell centres spanning exactly that intersection, and the squared error is averaged there.
When both boxes start on multiples of both maps' cell sizes and the common grid has the first map's cell size, the
samples fall on cell centres and the resampling is exact (no interpolation).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    'Box', 'overlap_box', 'resample_to_box', 'aligned_overlap', 'dense_shift_loss', 'mesa_loss', 'angle_loss',
    'AngularDispersion', 'ema_update', 'damp',
]

Box = tuple[float, float, float, float]  # (y, x, height, width) in canvas pixels


def overlap_box(a: Box, b: Box) -> Box | None:
    """Intersection of two boxes, or None if they do not overlap.

    Example:
        >>> overlap_box((0, 0, 64, 64), (32, 16, 64, 64))
        (32, 16, 32, 48)
    """
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    if y1 <= y0 or x1 <= x0:
        return None
    return (y0, x0, y1 - y0, x1 - x0)


def resample_to_box(feat: torch.Tensor, box: Box, target: Box, size: tuple[int, int]) -> torch.Tensor:
    """Sample ``feat`` (B, C, h, w), which covers ``box``, at the ``size`` cell centres of ``target`` -> (B, C, *size)."""
    B = feat.shape[0]
    dev, dt = feat.device, feat.dtype if feat.is_floating_point() else torch.float32
    ty, tx, th, tw = target
    ys = ty + (torch.arange(size[0], device=dev, dtype=torch.float64) + 0.5) * th / size[0]
    xs = tx + (torch.arange(size[1], device=dev, dtype=torch.float64) + 0.5) * tw / size[1]
    gy = 2 * (ys - box[0]) / box[2] - 1  # -1 / +1: the outer edges of the map (align_corners=False)
    gx = 2 * (xs - box[1]) / box[3] - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing='ij')[::-1], dim=-1).to(dt)  # (h', w', 2) as (x, y)
    return F.grid_sample(feat, grid[None].expand(B, -1, -1, -1), mode='bilinear', padding_mode='border',
                         align_corners=False)


def aligned_overlap(
        feat_a: torch.Tensor, box_a: Box, feat_b: torch.Tensor, box_b: Box,
        size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both maps resampled onto a common grid over the overlap of their boxes.

    Args:
        feat_a, feat_b: (B, C, h, w) maps covering ``box_a`` / ``box_b`` (``(y, x, height, width)`` canvas pixels).
        size: the common grid; default: the overlap measured in ``feat_a``'s cells (rounded, at least 1).

    Returns:
        Two (B, C, h', w') tensors, position-aligned.
    """
    for f, name in ((feat_a, 'feat_a'), (feat_b, 'feat_b')):
        if f.ndim != 4:
            raise ValueError(f'{name} must be (B, C, h, w), got shape {tuple(f.shape)}')
    if feat_a.shape[:2] != feat_b.shape[:2]:
        raise ValueError(
            f'feature maps differ in batch or channels: {tuple(feat_a.shape)} vs {tuple(feat_b.shape)}; the student '
            f'adaptor must output as many channels as the teacher')
    ov = overlap_box(box_a, box_b)
    if ov is None:
        raise ValueError(f'the views {box_a} and {box_b} do not overlap; use shifts smaller than the crop size')
    if size is None:
        cy, cx = box_a[2] / feat_a.shape[2], box_a[3] / feat_a.shape[3]
        size = (max(int(round(ov[2] / cy)), 1), max(int(round(ov[3] / cx)), 1))
    return resample_to_box(feat_a, box_a, ov, size), resample_to_box(feat_b, box_b, ov, size)


def dense_shift_loss(
        student: torch.Tensor, student_box: Box, teacher: torch.Tensor, teacher_box: Box,
        size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Shift-equivariant dense loss: mean squared error over the overlap of two independently shifted views.

    The student's cell grid sets the common grid unless ``size`` is given. The teacher map is used as given
    (detach it, or compute it under ``no_grad``).

    Example:
        A 4x4 student map of zeros at box (0, 0, 64, 64) against a teacher map at (32, 0, 64, 64) whose rows 0-1
        are 1 and rows 2-3 are 100: only student rows 2-3 / teacher rows 0-1 overlap, so the loss is 1.
    """
    s, t = aligned_overlap(student.float(), student_box, teacher.float(), teacher_box, size)
    return F.mse_loss(s, t)


def _channel_layer_norm(x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x.float().permute(0, 2, 3, 1), (x.shape[1],)).permute(0, 3, 1, 2)


def mesa_loss(
        student: torch.Tensor, student_box: Box, ema: torch.Tensor, ema_box: Box,
        size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Shift-equivariant MESA: LayerNorm (over channels, no affine) both maps, then the aligned-overlap MSE.

    ``ema`` is the EMA student's (B, D, h, w) map of its own shifted view; it is detached here.
    """
    return dense_shift_loss(_channel_layer_norm(student), student_box, _channel_layer_norm(ema.detach()), ema_box,
                            size)


def angle_loss(student: torch.Tensor, teacher: torch.Tensor, dispersion: float = 1.0, eps: float = 1e-7) -> torch.Tensor:
    """Angle-normalised summary loss: mean over the batch of ``angle(student, teacher)**2 / dispersion``.

    Args:
        student, teacher: (B, C) summary vectors (only their directions matter).
        dispersion: the teacher's angular dispersion (:class:`AngularDispersion`), in rad^2; a teacher whose
            summaries spread over a wide cone gets a proportionally smaller weight.

    Example:
        student (1, 0), teacher (1, 1): the angle is pi/4, so the loss is pi**2/16 / dispersion.
    """
    if student.shape != teacher.shape or student.ndim != 2:
        raise ValueError(f'expected two (B, C) summaries of one shape, got {tuple(student.shape)} and {tuple(teacher.shape)}')
    if not dispersion > 0:
        raise ValueError(f'dispersion must be > 0, got {dispersion}; measure it with AngularDispersion')
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=eps).clamp(-1 + eps, 1 - eps)
    return torch.acos(cos).pow(2).mean() / dispersion


class AngularDispersion:
    """A teacher's angular dispersion: the mean squared angle (rad^2) between its summary vectors and their mean
    direction. Narrow cones give small values, near-orthogonal spreads approach (pi/2)**2 ~ 2.47; the seed reports
    ~0.694 for SigLIP2-g and ~2.12-2.19 for DINOv3.

    Normalising :func:`angle_loss` by it makes a student that always predicts the teacher's mean direction score
    exactly 1 for every teacher. ``update()`` / ``reset()`` / ``compute()`` as supervision's metrics.
    """

    def __init__(self) -> None:
        self._units: list[torch.Tensor] = []

    def reset(self) -> AngularDispersion:
        self._units = []
        return self

    def update(self, summaries: torch.Tensor) -> AngularDispersion:
        """Add a (B, C) batch of teacher summaries."""
        if summaries.ndim != 2:
            raise ValueError(f'expected (B, C) summaries, got shape {tuple(summaries.shape)}')
        self._units.append(F.normalize(summaries.detach().double().cpu(), dim=-1))
        return self

    def mean_direction(self) -> torch.Tensor:
        if not self._units:
            raise RuntimeError('AngularDispersion.compute() before any update()')
        return F.normalize(torch.cat(self._units).mean(0), dim=0)

    def compute(self) -> float:
        u = torch.cat(self._units) if self._units else None
        mu = self.mean_direction()
        return float(torch.acos((u @ mu).clamp(-1, 1)).pow(2).mean())


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for every floating-point parameter and buffer (others copied)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f'EMA decay must be in [0, 1], got {decay}')
    e_state, m_state = ema.state_dict(), model.state_dict()
    if e_state.keys() != m_state.keys():
        raise ValueError(f'EMA and model differ in keys: {sorted(e_state.keys() ^ m_state.keys())[:10]}')
    for k, e in e_state.items():
        m = m_state[k]
        if e.is_floating_point():
            e.mul_(decay).add_(m.detach().to(e.dtype), alpha=1.0 - decay)
        else:
            e.copy_(m)


@contextlib.contextmanager
def damp(params: Iterable[nn.Parameter], std: float, generator: torch.Generator | None = None,
         enabled: bool = True) -> Iterator[None]:
    """DAMP: multiplicative weight noise ``w * (1 + std * N(0, 1))`` inside the block, clean weights after it.

    Wrap a training step's forward *and* backward: gradients are taken at the noisy weights and the optimizer then
    updates the restored clean ones. Pass ``enabled=module.training`` so evaluation (and anything saved) never sees
    noise. The noise is drawn from ``generator`` (on the parameters' device) for reproducible runs.
    """
    params = [p for p in params if p.requires_grad]
    if not enabled or std <= 0 or not params:
        yield
        return
    saved = []
    with torch.no_grad():
        for p in params:
            saved.append(p.detach().clone())
            dev = generator.device if generator is not None else p.device
            noise = torch.randn(p.shape, generator=generator, device=dev, dtype=torch.float32)
            p.mul_(1.0 + std * noise.to(device=p.device, dtype=p.dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
