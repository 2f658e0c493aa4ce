"""Distillation toolkit: the C-RADIOv4 recipe's parts, to adapt a C-RADIO encoder to SAM3 on your own images.

- :mod:`.losses`: shift-equivariant dense loss, shift-equivariant MESA, angle-normalised summary loss and
  :class:`AngularDispersion`, EMA update, DAMP weight noise.
- :mod:`.teachers`: frozen SAM3 PE (dense) and C-RADIO adaptor teachers.
- :mod:`.data`: images, resumable sampler, stochastic multi-resolution, shifted crops.
- :mod:`.train`: the loop (AdamW, cosine, bf16 on CUDA, accumulation, exact resume, torchrun DDP) and
  the ``sam3-cradio distill`` command is :mod:`sam3_cradio.commands.distill`.
"""
from .losses import (
    AngularDispersion,
    Box,
    aligned_overlap,
    angle_loss,
    damp,
    dense_shift_loss,
    ema_update,
    mesa_loss,
    overlap_box,
)
from .teachers import CRadioTeacher, PETeacher, TeacherTarget
from .train import DistillResult, build_student, evaluate_dense, load_distill_config, set_trainable, train

__all__ = [
    'AngularDispersion', 'Box', 'aligned_overlap', 'angle_loss', 'damp', 'dense_shift_loss', 'ema_update',
    'mesa_loss', 'overlap_box', 'CRadioTeacher', 'PETeacher', 'TeacherTarget', 'DistillResult', 'build_student',
    'evaluate_dense', 'load_distill_config', 'set_trainable', 'train',
]
