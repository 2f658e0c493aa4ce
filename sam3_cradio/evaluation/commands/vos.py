"""``sam3-cradio eval vos``: semi-supervised video object segmentation (DAVIS 2017, SA-V), J&F."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...commands.common import add_model_args, add_run_args, model_options_list, run_options
from ...options import ModelOptions
from ...reporting import Report, markdown_table
from ..datasets import load_davis, load_sav
from ..distributed import DistContext
from ..masks import decode_masks, encode_masks
from ..models import ModelConfig, build_model, model_configs, run_models
from ..runner import EvalSpec

__all__ = ['add_arguments', 'run', 'ANCHORS']

DESCRIPTION = """\
Semi-supervised video object segmentation: DAVIS 2017 val and SA-V val/test, J&F per sequence and mean.

Every object's mask on the first frame is given; SAM3's tracker follows it through the video (SAM2's protocol,
tools/vos_inference.py: add_new_mask on frame 0, one forward propagation, mask logits > 0). J&F as the
DAVIS 2017 toolkit defines it (sam3_cradio.metrics.DavisMetric): per object, J and F over the evaluated
frames without the first and last, then means over objects.

- DAVIS 2017: every frame is evaluated; objects are disjoint (a label map per frame), so overlaps are resolved.
- SA-V: frames are read at 24 fps and evaluated where annotated (every 4th frame), first and last annotated frame
  dropped, as SA-V's sav_evaluator.py; objects may overlap (SAM2 runs SA-V with non_overlap_masks=false).

SAM3 reports J&F 92.0 on DAVIS 2017 val and 84.6 on SA-V.

    sam3-cradio eval vos --dataset davis --root DAVIS --backbone cradio_v4_h --out runs/davis17/cradio_h
    sam3-cradio eval vos --dataset sav --root sav_val --split val --backbone pe --out runs/sav_val/pe
    torchrun --nproc_per_node 8 eval/vos.py ...same arguments...     # sequences sharded over ranks
"""
ANCHORS = {'davis': 'SAM3 reports J&F 92.0 on DAVIS 2017 val', 'sav': 'SAM3 reports J&F 84.6 on SA-V'}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--dataset', choices=('davis', 'sav'), required=True)
    p.add_argument('--root', type=Path, required=True, help='DAVIS root (JPEGImages/, Annotations/, ImageSets/) or '
                   'an SA-V split folder (sav_val/ or sav_test/)')
    p.add_argument('--split', default='val', help='DAVIS: ImageSets/2017/<split>.txt; SA-V: sav_<split>.txt')
    p.add_argument('--resolution', default='480p', help='DAVIS resolution folder (480p or Full-Resolution)')
    ov = p.add_mutually_exclusive_group()
    ov.add_argument('--non-overlap', dest='non_overlap', action='store_true', default=None,
                    help='resolve overlaps between objects (default for DAVIS)')
    ov.add_argument('--overlap', dest='non_overlap', action='store_false',
                    help='let objects overlap (default for SA-V)')
    add_model_args(p, several=True, resolution=False)
    add_run_args(p)


def run(a: argparse.Namespace) -> int:
    from ...metrics import DavisMetric

    run_opts = run_options(a)
    models = model_configs(model_options_list(a), run_opts)  # bad model options fail before the dataset is read
    ds = load_davis(a.root, a.split, a.resolution) if a.dataset == 'davis' else load_sav(a.root, a.split)
    non_overlap = (a.dataset == 'davis') if a.non_overlap is None else a.non_overlap
    label = {'davis': 'DAVIS 2017', 'sav': 'SA-V'}[a.dataset]

    def make_spec(c: ModelConfig) -> EvalSpec:
        fingerprint = {**c.options.fingerprint(), 'dataset': a.dataset, 'root': str(a.root.resolve()),
                       'split': a.split, 'resolution': a.resolution if a.dataset == 'davis' else None,
                       'non_overlap': non_overlap, 'protocol': 'first-frame masks'}
        return EvalSpec(f'vos_{a.dataset}', list(ds.sequences), fingerprint, lambda ctx: make_worker(c.options, ctx),
                        finalize, 'seq', f'## {label} {a.split} J&F (first-frame masks): {c.spec.title()}')

    def make_worker(m: ModelOptions, ctx: DistContext) -> Callable[[str], dict[str, Any]]:
        from ..vos import track_from_first_masks

        model = build_model(m, 'video', ctx.device)

        def work(name: str) -> dict[str, Any]:
            seq = ds.sequences[name]
            first = seq.first_masks()
            h, w = next(iter(first.values())).shape
            wanted = {o: set(seq.gt_frames[o]) for o in seq.objects}
            rles: dict[int, dict[int, dict]] = {o: {} for o in seq.objects}
            empty = np.zeros((1, h, w), bool)
            for t, masks in track_from_first_masks(model, seq.frames, first, non_overlap=non_overlap):
                for o in seq.objects:
                    if t in wanted[o]:
                        rles[o][t] = encode_masks(masks[o][None] if o in masks else empty)[0]
            objects = {}
            for o in seq.objects:
                frames = sorted(seq.gt_frames[o])
                lost = [t for t in frames if t not in rles[o]]
                if lost:
                    raise RuntimeError(f'{name}: the tracker returned no output for frames {lost[:5]}')
                objects[str(o)] = {'frames': frames, 'rles': [rles[o][t] for t in frames]}
            return {'size': [int(h), int(w)], 'num_frames': len(seq.frames), 'objects': objects}

        return work

    def finalize(records: dict, ids: list) -> Report:
        metric = DavisMetric()
        for name in ids:
            seq, rec = ds.sequences[name], records[name]
            size = tuple(rec['size'])
            for o in seq.objects:
                pred = rec['objects'][str(o)]
                if pred['frames'] != list(seq.gt_frames[o]):
                    raise RuntimeError(f'{name} object {o}: recorded frames differ from the annotation; rerun '
                                       'with --overwrite')
                metric.update(name, o, decode_masks(pred['rles'], size), seq.gt_masks(o))
        res = metric.compute()
        head = markdown_table(['J&F', 'J', 'F', 'J-Recall', 'F-Recall', 'sequences', 'objects'],
                              [[100 * res.jf_mean, 100 * res.j_mean, 100 * res.f_mean, 100 * res.j_recall,
                                100 * res.f_recall, len(res.per_sequence), res.num_objects]])
        per_seq = markdown_table(['sequence', 'J&F', 'J', 'F'],
                                 [[s, 100 * v['J&F'], 100 * v['J'], 100 * v['F']]
                                  for s, v in sorted(res.per_sequence.items())])
        note = (f'\n\n{res.num_frames} object-frames evaluated (first and last dropped); overlaps '
                f'{"resolved" if non_overlap else "allowed"}. {ANCHORS[a.dataset]}.\n\n')
        headline = {'J&F': 100 * res.jf_mean, 'J': 100 * res.j_mean, 'F': 100 * res.f_mean}
        return Report({**res.to_dict(), 'non_overlap': non_overlap}, head + note + per_seq, str(res), headline)

    run_models(models, make_spec, run_opts, ANCHORS[a.dataset] + '.', echo=print)
    return 0
