"""``sam3-cradio eval saco-gold``: SA-Co/Gold cgF1 (SAM3's concept segmentation benchmark), per subset."""
from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...commands.common import add_model_args, add_run_args, model_options_list, run_options
from ...options import ModelOptions
from ...reporting import Report, markdown_table
from ..datasets import GOLD_SUBSETS, load_gold, read_image
from ..distributed import DistContext
from ..masks import encode_masks
from ..models import ModelConfig, build_model, model_configs, run_models
from ..runner import EvalSpec

__all__ = ['add_arguments', 'run', 'SAM3_THRESHOLD', 'FORK_THRESHOLD']

_logger = logging.getLogger(__name__)

DESCRIPTION = """\
SA-Co/Gold cgF1 (SAM3's promptable concept segmentation benchmark) on the released annotation layout.

Each image is encoded once and prompted with each of its noun phrases (text_input); a phrase's detections
scoring >= --score-threshold are its predictions. Per subset, cgF1 = positive micro F1 x image-level MCC, averaged
over IoU 0.50:0.95, each image-phrase pair scored against the most favourable of the three annotators, only
exhaustively annotated pairs counted (sam3's CGF1Evaluator, see sam3_cradio.metrics.cgf1); the headline
number is the plain mean over subsets. SAM3 keeps detections at score >= 0.5 (its definition; the reference
C-RADIO fork used 0.3): the threshold used is printed and recorded. SAM3 reports 54.06 on SA-Co/Gold.

    sam3-cradio eval saco-gold --gt-dir saco_gold/gt-annotations --image-dir saco_gold/metaclip-images \\
        --sa1b-image-dir saco_gold/sa1b-images --backbone cradio_v4_h --out runs/saco_gold/cradio_h
    sam3-cradio eval saco-gold ... --subsets crowded fg_food      # some subsets only
"""
SAM3_THRESHOLD = 0.5
FORK_THRESHOLD = 0.3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--gt-dir', type=Path, required=True,
                   help='folder of gold_<subset>_merged_<a|b|c>[_release]_test.json files')
    p.add_argument('--image-dir', type=Path, default=None, help='MetaCLIP images (all subsets but sa1b)')
    p.add_argument('--sa1b-image-dir', type=Path, default=None, help='SA-1B images (subset sa1b)')
    p.add_argument('--subsets', nargs='+', default=None,
                   help=f'subsets to evaluate (default: every one found; SA-Co/Gold has {", ".join(GOLD_SUBSETS)})')
    p.add_argument('--score-threshold', type=float, default=SAM3_THRESHOLD,
                   help=f'keep detections scoring >= this ({SAM3_THRESHOLD}: SAM3; {FORK_THRESHOLD}: the '
                        'reference fork)')
    add_model_args(p, several=True, resolution=False)
    add_run_args(p)


def _threshold_note(t: float) -> str:
    who = {SAM3_THRESHOLD: "SAM3's definition and threshold", FORK_THRESHOLD: "the reference fork's threshold, not "
           "SAM3's 0.5"}.get(t, f"not SAM3's {SAM3_THRESHOLD}")
    return f'detections kept at score >= {t:g} ({who})'


def run(a: argparse.Namespace) -> int:
    from ...metrics import CgF1Metric, average_cgf1

    if not 0.0 <= a.score_threshold <= 1.0:
        raise ValueError(f'--score-threshold must be in [0, 1], got {a.score_threshold}')
    run_opts = run_options(a)
    models = model_configs(model_options_list(a), run_opts)  # bad model options fail before the dataset is read
    subsets = {s.name: s for s in load_gold(a.gt_dir, a.image_dir, a.sa1b_image_dir, a.subsets)}
    units = {f'{name}/{file_name}': (name, pair_ids) for name, s in subsets.items()
             for file_name, pair_ids in s.units().items()}
    _logger.info(_threshold_note(a.score_threshold))

    def make_spec(c: ModelConfig) -> EvalSpec:
        fingerprint = {**c.options.fingerprint(), 'gt_dir': str(a.gt_dir.resolve()), 'subsets': sorted(subsets),
                       'score_threshold': a.score_threshold,
                       'image_dir': str(a.image_dir.resolve()) if a.image_dir else None,
                       'sa1b_image_dir': str(a.sa1b_image_dir.resolve()) if a.sa1b_image_dir else None}
        return EvalSpec('saco_gold', list(units), fingerprint, lambda ctx: make_worker(c.options, ctx), finalize, 'img',
                        f'## SA-Co/Gold cgF1: {c.spec.title()}')

    def make_worker(m: ModelOptions, ctx: DistContext) -> Callable[[str], dict[str, Any]]:
        from ...predictor import Sam3ImagePredictor

        # the predictor keeps scores > its threshold; the metric applies >= score_threshold
        predictor = Sam3ImagePredictor(build_model(m, 'image', ctx.device, interactive=False),
                                       confidence_threshold=max(0.0, a.score_threshold - 1e-6))

        def work(unit: str) -> dict[str, Any]:
            name, pair_ids = units[unit]
            subset = subsets[name]
            first = subset.pairs[pair_ids[0]]
            predictor.set_image(read_image(subset.image_dir / first.file_name,
                                           {'height': first.height, 'width': first.width}))
            out = {}
            for pid in pair_ids:
                r = predictor.predict_text([subset.pairs[pid].text])
                out[str(pid)] = {'scores': [float(s) for s in r.scores], 'rles': encode_masks(r.masks)}
            return {'pairs': out}

        return work

    def finalize(records: dict, ids: list) -> Report:
        metrics = {name: CgF1Metric(score_threshold=a.score_threshold) for name in subsets}
        for unit in ids:
            name, _ = units[unit]
            for pid, pred in records[unit]['pairs'].items():
                pair = subsets[name].pairs[int(pid)]
                metrics[name].update(f'{name}/{pid}', pair.gts[0], pred['rles'], pred['scores'],
                                     gt_iscrowd=pair.iscrowd[0], extra_gts=pair.gts[1:],
                                     extra_gt_iscrowd=pair.iscrowd[1:], exhaustive=pair.exhaustive)
        results = {}
        for name, metric in metrics.items():
            try:
                results[name] = metric.compute()
            except RuntimeError:  # no exhaustive pair of this subset among the selected images (--limit)
                _logger.warning('subset %s: no exhaustive pair to evaluate', name)
        if not results:
            raise ValueError('no exhaustively annotated image-phrase pair among the selected images; raise --limit')
        rows = [[name, r.cgf1, r.il_mcc, r.pmf1, r.cgf1_50, r.cgf1_75, r.num_pairs] for name, r in results.items()]
        avg = average_cgf1(results)
        complete = set(results) == set(GOLD_SUBSETS)
        rows.append(['**average**' + ('' if complete else f' ({len(results)} of {len(GOLD_SUBSETS)} subsets)'),
                     avg['cgf1'], avg['il_mcc'], avg['pmf1'], float('nan'), float('nan'),
                     sum(r.num_pairs for r in results.values())])
        table = markdown_table(['subset', 'cgF1', 'IL_MCC', 'pmF1', 'cgF1@50', 'cgF1@75', 'pairs'], rows, '{:.2f}')
        note = f'\n\n{_threshold_note(a.score_threshold)}. SAM3 reports cgF1 54.06 on SA-Co/Gold (7 subsets).'
        text = '\n\n'.join(f'[{name}]\n{r}' for name, r in results.items())
        headline = {'cgF1': avg['cgf1'], 'IL_MCC': avg['il_mcc'], 'pmF1': avg['pmf1'],
                    **{f'cgF1 {name}': r.cgf1 for name, r in results.items()}}
        return Report({'score_threshold': a.score_threshold, 'average': avg, 'all_subsets': complete,
                       'subsets': {name: r.to_dict() for name, r in results.items()}}, table + note, text, headline)

    run_models(models, make_spec, run_opts,
               f'{_threshold_note(a.score_threshold)}. SAM3 reports cgF1 54.06 on SA-Co/Gold.', echo=print)
    return 0
