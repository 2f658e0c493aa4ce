"""``sam3-cradio eval coco``: COCO instance segmentation from text prompts, mask AP and box AP."""
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
from ..masks import encode_masks
from ..models import ModelConfig, build_model, model_configs, run_models
from ..runner import EvalSpec

__all__ = ['add_arguments', 'run', 'ANCHOR']

DESCRIPTION = """\
COCO instance segmentation from text prompts (SAM3's open-vocabulary protocol): mask AP and box AP.

Each image is encoded once and prompted with every category name, one phrase at a time; every detection of a
phrase gets that category. Detections scoring >= --min-score are kept, at most --max-dets per image (the
highest-scoring, over all categories), and scored by pycocotools' COCOeval (AP, AP50, AP75, APs/m/l for masks and
boxes). SAM3 reports COCO box AP 56.4 with its own encoder.

    sam3-cradio eval coco --ann coco/annotations/instances_val2017.json --images coco/val2017 \\
        --backbone cradio_v4_h --window-size 12 --out runs/coco/cradio_h_w12
    torchrun --nproc_per_node 8 eval/coco.py ...same arguments...     # sharded; rerun to resume
"""
_ROWS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl')
ANCHOR = 'SAM3 (PE) reports COCO box AP 56.4.'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--ann', type=Path, required=True,
                   help='COCO instances json, e.g. annotations/instances_val2017.json')
    p.add_argument('--images', type=Path, required=True, help='its image folder, e.g. val2017/')
    p.add_argument('--min-score', type=float, default=0.05, help='keep detections scoring at least this')
    p.add_argument('--max-dets', type=int, default=100, help='keep at most this many detections per image')
    add_model_args(p, several=True, resolution=False)
    add_run_args(p)


def run(a: argparse.Namespace) -> int:
    from ...metrics import CocoMetric

    if not 0.0 <= a.min_score <= 1.0 or a.max_dets < 1:
        raise ValueError(f'--min-score must be in [0, 1] and --max-dets >= 1, got {a.min_score}, {a.max_dets}')
    run_opts = run_options(a)
    models = model_configs(model_options_list(a), run_opts)  # bad model options fail before the dataset is read
    ds = load_coco(a.ann, a.images)
    cats = sorted(ds.categories, key=lambda c: c['id'])

    def make_spec(c: ModelConfig) -> EvalSpec:
        fingerprint = {**c.options.fingerprint(), 'ann': str(a.ann.resolve()), 'images': str(a.images.resolve()),
                       'min_score': a.min_score, 'max_dets': a.max_dets, 'protocol': 'text prompt per category'}
        return EvalSpec('coco', list(ds.images), fingerprint, lambda ctx: make_worker(c.options, ctx), finalize, 'img',
                        f'## COCO text prompts: {c.spec.title()}')

    def make_worker(m: ModelOptions, ctx: DistContext) -> Callable[[int], dict[str, Any]]:
        from ...predictor import Sam3ImagePredictor

        predictor = Sam3ImagePredictor(build_model(m, 'image', ctx.device, interactive=False),
                                       confidence_threshold=a.min_score)

        def work(image_id: int) -> dict[str, Any]:
            rgb = read_image(ds.image_path(image_id), ds.images[image_id])
            predictor.set_image(rgb)
            cat_ids: list[int] = []
            scores, boxes = np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
            masks = np.zeros((0, *rgb.shape[:2]), bool)
            for cat in cats:
                r = predictor.predict_text([cat['name']]).filter(a.min_score)
                cat_ids += [cat['id']] * len(r)
                scores, boxes = np.concatenate([scores, r.scores]), np.concatenate([boxes, r.boxes])
                masks = np.concatenate([masks, r.masks])
                if len(scores) > a.max_dets:  # running top-k, kept in prompt order (same as one final sort)
                    keep = np.sort(np.argsort(-scores, kind='stable')[:a.max_dets])
                    cat_ids = [cat_ids[i] for i in keep]
                    scores, boxes, masks = scores[keep], boxes[keep], masks[keep]
            order = np.argsort(-scores, kind='stable')
            rles = encode_masks(masks[order])
            return {'dets': [{'category_id': cat_ids[i], 'score': float(scores[i]),
                              'box': [float(v) for v in boxes[i]], 'rle': rles[k]} for k, i in enumerate(order)]}

        return work

    def finalize(records: dict, ids: list) -> Report:
        metric = CocoMetric(ds.gt, only_updated_images=True)
        for image_id in ids:
            dets = records[image_id]['dets']
            metric.update(image_id, [d['category_id'] for d in dets], [d['rle'] for d in dets],
                          np.array([d['box'] for d in dets], np.float64).reshape(-1, 4), [d['score'] for d in dets])
        res = metric.compute()
        rows = [[kind] + [100 * stats[k] if stats[k] >= 0 else float('nan') for k in _ROWS]
                for kind, stats in (('mask', res.segm), ('box', res.bbox))]
        table = markdown_table(['', *_ROWS], rows)
        note = f'\n\n{res.num_images} images, {res.num_predictions} detections. {ANCHOR}'
        headline = {'mask AP': 100 * res.segm['AP'], 'box AP': 100 * res.bbox['AP'],
                    'mask AP50': 100 * res.segm['AP50'], 'box AP50': 100 * res.bbox['AP50']}
        return Report(res.to_dict(), table + note, str(res), headline)

    run_models(models, make_spec, run_opts, ANCHOR, echo=print)
    return 0
