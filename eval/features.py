"""Feature fidelity: how close C-RADIO's ``sam3`` adaptor features are to SAM3's own Perception Encoder features.

On any image folder, for each window size: the cosine similarity (mean over token positions) and the relative
error (||C-RADIO - PE|| / ||PE||) of the trunk features SAM3's neck receives, and of each level of SAM3's neck
applied to them, per image and averaged. A window that keeps the features close to PE's is a good one to try
before a long benchmark run.

PE runs at 1008 px (patch 14), C-RADIOv4 at 1152 px (patch 16): both give 72 x 72 tokens over the whole image,
so the maps compare position by position. If the grids differ (other image sizes, the tiny test models), both maps
are resampled to the smaller grid, bilinear with antialiasing, before comparing (see
``sam3_cradio.evaluation.features``).

    python eval/features.py --images photos/ --backbone cradio_v4_h --windows global 8 12 24 \\
        --out runs/features/cradio_h
    python eval/features.py --images photos/ --backbone cradio_v4_so400m --out runs/features/so400m
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from sam3_cradio.evaluation.datasets import list_images, read_image
from sam3_cradio.evaluation.runner import (EvalSpec, Report, add_run_args, build_model, cli, markdown_table,
                                           model_fingerprint, parse_window, run_models)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--images', type=Path, required=True, help='a folder of images (searched recursively)')
    g = p.add_argument_group('models')
    g.add_argument('--backbone', nargs='+', default=['cradio_v4_h'],
                   help='C-RADIO config(s): cradio_v4_h, cradio_v4_so400m, cradio_tiny; several are compared one '
                        'after the other into --out/<name> and side by side in --out/comparison.md')
    g.add_argument('--windows', nargs='+', type=parse_window, default=None,
                   help='window sizes to compare, "global" for global attention (default: global and every window '
                        'between grid/12 and grid/2 that divides the grid; at 72: 6 8 9 12 18 24 36)')
    g.add_argument('--reference', default='pe', help="the reference config (SAM3's own PE encoder)")
    g.add_argument('--override', action='append', default=[], metavar='KEY=VALUE',
                   help='hydra override of the C-RADIO config (repeatable)')
    g.add_argument('--reference-override', action='append', default=[], metavar='KEY=VALUE',
                   help='hydra override of the reference config (repeatable)')
    g.add_argument('--sam3-checkpoint', default=None, help='local sam3.pt (PE and neck weights; default: HF)')
    g.add_argument('--cradio-checkpoint', default=None, help='local C-RADIO .pth.tar (default: the release)')
    g.add_argument('--random-weights', action='store_true', help='random weights (tests; no downloads)')
    g.add_argument('--seed', type=int, default=0, help='torch seed set before building (random weights)')
    add_run_args(p)
    return p


@dataclass
class _Candidate:
    cfg: Any
    size: int
    windows: List  # 'global' or ints, validated against the token grid


def _candidate(a: argparse.Namespace, backbone: str) -> _Candidate:
    from sam3_cradio.build import compose_config

    cfg = compose_config(backbone, list(a.override))
    if cfg.backbone.get('variant') is None:
        raise ValueError(f'--backbone {backbone!r} is not a C-RADIO config; candidates are C-RADIO configs '
                         '(cradio_v4_h, cradio_v4_so400m, cradio_tiny); PE is the --reference')
    size = int(cfg.backbone.image_size)
    grid = size // int(cfg.backbone.patch_size)
    windows = list(dict.fromkeys(a.windows or _default_windows(grid)))
    bad = [w for w in windows if w != 'global' and grid % w]
    if bad:
        useful = [w for w in range(2, grid) if grid % w == 0]
        raise ValueError(f'windows {bad} do not divide the {grid}x{grid} token grid of {backbone} at {size} px; '
                         f'use "global" or some of {useful}')
    return _Candidate(cfg, size, windows)


def _default_windows(grid: int) -> List:
    """'global' and every window between grid/12 and grid/2 that divides the grid (72: 6 8 9 12 18 24 36)."""
    return ['global'] + [w for w in range(max(2, grid // 12), grid // 2 + 1) if grid % w == 0]


def main(argv: Optional[List[str]] = None) -> int:
    import torch

    from sam3_cradio.evaluation.features import FeatureComparer, summarize

    a = build_parser().parse_args(argv)
    a.window_size = None  # windows are swept with --windows
    root = a.images
    files = {str(p.relative_to(root)): p for p in list_images(root)}
    candidates = {name: _candidate(a, name) for name in a.backbone}  # every config checked before any run

    def make_spec(m: argparse.Namespace) -> EvalSpec:
        c = candidates[m.backbone]
        labels = [str(w) for w in c.windows]

        def make_worker(ctx):
            from sam3_cradio.trunk import create_cradio_trunk

            ref_args = argparse.Namespace(**{**vars(m), 'backbone': a.reference, 'override': a.reference_override,
                                             'cradio_checkpoint': None})
            reference = build_model(ref_args, 'image', ctx.device, interactive=False)
            torch.manual_seed(m.seed)
            trunk = create_cradio_trunk(c.cfg.backbone.variant, m.cradio_checkpoint or c.cfg.backbone.checkpoint,
                                        window_size=None, adaptor=c.cfg.backbone.adaptor,
                                        pretrained=not m.random_weights)
            comparer = FeatureComparer(reference, trunk.to(ctx.device).eval(), c.size, ctx.device)
            ws = [None if w == 'global' else w for w in c.windows]

            def work(name: str) -> Dict:
                return comparer.compare(read_image(files[name]), ws)

            return work

        def finalize(records: Dict, ids: List) -> Report:
            summary = summarize([records[i] for i in ids])
            maps = list(summary[labels[0]])
            header = ['window'] + [f'{k} {v}' for k in maps for v in ('cos', 'rel.err')]
            rows = [[w] + [summary[w][k][v] for k in maps for v in ('cos', 'rel_err')] for w in labels]
            table = markdown_table(header, rows, '{:.3f}')
            best = max(labels, key=lambda w: summary[w]['trunk']['cos'])
            note = (f'\n\n{len(ids)} images; {m.backbone} ({c.size} px) vs {a.reference}; cosine similarity (mean '
                    'over token positions) and relative error, averaged over images. Closest trunk features: '
                    f'window {best}.')
            headline = {f'trunk cos {w}': summary[w]['trunk']['cos'] for w in labels}
            return Report({'summary': summary, 'per_image': {i: records[i] for i in ids}, 'windows': labels,
                           'best_window': best}, table + note, '', headline)

        fingerprint = {**model_fingerprint(m), 'reference': a.reference,
                       'reference_overrides': list(a.reference_override), 'images': str(root.resolve()),
                       'windows': labels}
        return EvalSpec('features', list(files), fingerprint, make_worker, finalize, 'img',
                        f'## Feature fidelity: {m.backbone} `sam3` adaptor vs {a.reference}')

    run_models(a, make_spec, f'Cosine similarity of the trunk features with {a.reference}\'s, per window.')
    return 0


if __name__ == '__main__':
    sys.exit(cli(main))
