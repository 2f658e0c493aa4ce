"""``sam3-cradio eval coco-boxes``: COCO box-prompted mIoU (EfficientViT-SAM's protocol)."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...commands.common import add_model_args, add_run_args, model_options_list, run_options
from ...options import ModelOptions
from ...reporting import Report, markdown_table
from ..datasets import load_coco, read_image
from ..distributed import DistContext
from ..masks import decode_masks, encode_masks, segmentation_to_rle
from ..models import ModelConfig, build_model, model_configs, run_models
from ..runner import EvalSpec

__all__ = ['add_arguments', 'run']

DESCRIPTION = """\
COCO box-prompted mIoU: every ground-truth box (optionally with its centre as a click) prompts one mask.

The protocol EfficientViT-SAM and EfficientSAM report (mit-han-lab/efficientvit
applications/efficientvit_sam/eval_efficientvit_sam_model.py, run_box): each image is encoded once; every
annotation with area >= 1 (crowd regions included, as there) prompts SAM3's interactive predictor with its
box, multimask_output=True, and the mask with the highest predicted IoU is kept; the score is the mean IoU
with the GT mask over all instances, and by GT area (small / medium / large, COCO's ranges).

    sam3-cradio eval coco-boxes --ann coco/annotations/instances_val2017.json --images coco/val2017 \\
        --backbone pe --out runs/coco_boxes/pe
    sam3-cradio eval coco-boxes ... --center-point        # box + its centre as a positive click
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--ann', type=Path, required=True,
                   help='COCO instances json, e.g. annotations/instances_val2017.json')
    p.add_argument('--images', type=Path, required=True, help='its image folder, e.g. val2017/')
    p.add_argument('--center-point', action='store_true', help="also click the box's centre (positive)")
    p.add_argument('--min-area', type=float, default=1.0, help='skip annotations with a smaller COCO area')
    add_model_args(p, several=True, resolution=False)
    add_run_args(p)


def run(a: argparse.Namespace) -> int:
    from ...metrics import BoxPromptMIoUMetric

    run_opts = run_options(a)
    models = model_configs(model_options_list(a), run_opts)  # bad model options fail before the dataset is read
    ds = load_coco(a.ann, a.images)
    prompt = 'box + centre point' if a.center_point else 'box'

    def make_spec(c: ModelConfig) -> EvalSpec:
        fingerprint = {**c.options.fingerprint(), 'ann': str(a.ann.resolve()), 'images': str(a.images.resolve()),
                       'prompt': prompt, 'min_area': a.min_area}
        return EvalSpec('coco_boxes', list(ds.images), fingerprint, lambda ctx: make_worker(c.options, ctx), finalize,
                        'img', f'## COCO box-prompted mIoU: {c.spec.title()}')

    def make_worker(m: ModelOptions, ctx: DistContext) -> Callable[[int], dict[str, Any]]:
        from ...predictor import Sam3ImagePredictor

        predictor = Sam3ImagePredictor(build_model(m, 'image', ctx.device, interactive=True))

        def work(image_id: int) -> dict[str, Any]:
            info = ds.images[image_id]
            anns = sorted(ds.anns_by_image.get(image_id, []), key=lambda x: x['id'])
            out = []
            if not any(x['area'] >= a.min_area for x in anns):
                return {'anns': [{'id': x['id'], 'rle': None} for x in anns]}
            predictor.set_image(read_image(ds.image_path(image_id), info))
            for x in anns:
                if x['area'] < a.min_area:
                    out.append({'id': x['id'], 'rle': None})
                    continue
                x0, y0, w, h = (float(v) for v in x['bbox'])
                box = [x0, y0, x0 + max(w, 1.0), y0 + max(h, 1.0)]  # a degenerate box still prompts one pixel
                points = [[x0 + w / 2, y0 + h / 2]] if a.center_point else None
                r = predictor.predict_points(points, [1] if points else None, box=box, multimask_output=True)
                out.append({'id': x['id'], 'rle': encode_masks(r.masks[:1])[0]})  # best predicted IoU first
            return {'anns': out}

        return work

    def finalize(records: dict, ids: list) -> Report:
        metric = BoxPromptMIoUMetric(min_area=a.min_area)
        for image_id in ids:
            info = ds.images[image_id]
            size = (int(info['height']), int(info['width']))
            by_id = {x['id']: x for x in ds.anns_by_image.get(image_id, [])}
            for rec in records[image_id]['anns']:
                ann = by_id[rec['id']]
                gt = decode_masks([segmentation_to_rle(ann['segmentation'], *size)], size)
                pred = decode_masks([rec['rle']], size) if rec['rle'] is not None else np.zeros_like(gt)
                metric.update(gt, pred, area=[ann['area']])
        res = metric.compute()
        table = markdown_table(
            ['prompt', 'mIoU', 'small', 'medium', 'large', 'instances'],
            [[prompt, 100 * res.miou, 100 * res.miou_small, 100 * res.miou_medium, 100 * res.miou_large,
              res.count]])
        note = (f'\n\nIoU x 100 over {res.count} instances ({res.count_small} small, {res.count_medium} medium, '
                f'{res.count_large} large; {res.num_skipped} skipped for area < {a.min_area:g}).')
        headline = {'mIoU': 100 * res.miou, 'small': 100 * res.miou_small, 'medium': 100 * res.miou_medium,
                    'large': 100 * res.miou_large}
        return Report({**res.to_dict(), 'prompt': prompt}, table + note, str(res), headline)

    run_models(models, make_spec, run_opts, f'Prompt: {prompt}; IoU x 100.', echo=print)
    return 0
