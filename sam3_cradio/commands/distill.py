"""``sam3-cradio distill``: adapt a C-RADIOv4 encoder (its sam3 head, last blocks, or all) to SAM3 by
distillation; settings are hydra overrides of ``configs/distill/<config>.yaml``. Run under torchrun for several
GPUs."""
from __future__ import annotations

import argparse

__all__ = ['HELP', 'DESCRIPTION', 'add_arguments', 'run']

HELP = 'adapt the encoder (sam3 head, last blocks or all) to SAM3 by distillation'
DESCRIPTION = ('Adapt a C-RADIOv4 encoder (its sam3 head, last blocks, or all) to SAM3 by distillation. Settings are '
               'hydra overrides of configs/distill/<config>.yaml, e.g. data.images=photos/ run.out_dir=runs/w12 '
               'student.window_size=12.')


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--config', default='sam3_head', help='config under configs/distill (default: sam3_head)')
    p.add_argument('--print-config', action='store_true', help='print the composed config and exit')
    p.add_argument('overrides', nargs='*', help='hydra overrides, key=value')


def run(a: argparse.Namespace) -> int:
    import json

    import torch
    from omegaconf import OmegaConf

    from ..distill.train import dist_info, load_distill_config, train

    cfg = load_distill_config(a.config, a.overrides)
    if a.print_config:
        print(OmegaConf.to_yaml(cfg))
        return 0
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f'set {", ".join(missing)} (e.g. data.images=photos/ run.out_dir=runs/distill)')
    if cfg.run.get('num_threads'):
        torch.set_num_threads(int(cfg.run.num_threads))
    result = train(cfg)
    if dist_info()[0] == 0:
        print(json.dumps({'step': result.step, 'losses': result.losses, 'eval_before': result.eval_before,
                          'eval_after': result.eval_after, 'student': str(result.student_path)}, indent=2))
    return 0
