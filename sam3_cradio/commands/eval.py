"""``sam3-cradio eval NAME``: the evaluations, one sub-command each (modules under
:mod:`sam3_cradio.evaluation.commands`, wired like every command: ``add_arguments`` and ``run``)."""
from __future__ import annotations

import argparse
import importlib

__all__ = ['HELP', 'EVALUATIONS', 'add_arguments', 'run']

HELP = 'evaluations: coco, coco-boxes, saco-gold, vos, features (sam3-cradio eval NAME --help)'

#: name -> (module under sam3_cradio.evaluation.commands, one-line summary)
EVALUATIONS: dict[str, tuple[str, str]] = {
    'coco': ('coco', 'COCO instance segmentation from text prompts: mask AP and box AP'),
    'coco-boxes': ('coco_boxes', 'COCO box-prompted mIoU (EfficientViT-SAM protocol), by object size'),
    'saco-gold': ('saco_gold', 'SA-Co/Gold cgF1 per subset and averaged'),
    'vos': ('vos', 'semi-supervised video object segmentation (DAVIS 2017, SA-V): J&F'),
    'features': ('features', "C-RADIO's sam3 adaptor features vs SAM3's PE, per window"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest='evaluation', required=True, metavar='NAME')
    for name, (module, summary) in EVALUATIONS.items():
        m = importlib.import_module(f'sam3_cradio.evaluation.commands.{module}')
        e = sub.add_parser(name, aliases=[module] if module != name else [], help=summary,
                           description=m.DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
        m.add_arguments(e)
        e.set_defaults(_run=m.run, _parser=e)


def run(a: argparse.Namespace) -> int:  # the evaluation's own run replaces this one (set_defaults above)
    return a._run(a)
