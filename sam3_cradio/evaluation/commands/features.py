"""``sam3-cradio eval features``: how close C-RADIO's ``sam3`` adaptor features are to SAM3's PE features, per
window."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...cli import window_arg
from ...registry import BACKBONES, ModelSpec, Window, format_window, get_backbone, resolve
from ..datasets import list_images, read_image
from ..runner import (
    DistContext,
    EvalSpec,
    ModelConfig,
    Report,
    add_run_args,
    build_model,
    check_model_config,
    markdown_table,
    model_configs,
    model_fingerprint,
    resolve_model,
    run_models,
)

__all__ = ['build_parser', 'main']

DESCRIPTION = """\
Feature fidelity: how close C-RADIO's sam3 adaptor features are to SAM3's own Perception Encoder features.

On any image folder, for each window size: the cosine similarity (mean over token positions) and the relative
error (||C-RADIO - PE|| / ||PE||) of the trunk features SAM3's neck receives, and of each level of SAM3's neck
applied to them, per image and averaged. A window that keeps the features close to PE's is a good one to try
before a long benchmark run.

PE runs at 1008 px (patch 14), C-RADIOv4 at 1152 px (patch 16): both give 72 x 72 tokens over the whole image,
so the maps compare position by position. If the grids differ (other image sizes, the tiny test models), both maps
are resampled to the smaller grid, bilinear with antialiasing, before comparing (see
sam3_cradio.evaluation.features).

    sam3-cradio eval features --images photos/ --backbone cradio_v4_h --windows global 8 12 24 \\
        --out runs/features/cradio_h
    sam3-cradio eval features --images photos/ --backbone cradio_v4_so400m --out runs/features/so400m
"""


def build_parser() -> argparse.ArgumentParser:
    cradio = [n for n, b in BACKBONES.items() if b.is_cradio]
    p = argparse.ArgumentParser(prog='sam3-cradio eval features', description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--images', type=Path, required=True, help='a folder of images (searched recursively)')
    g = p.add_argument_group('models')
    g.add_argument('--backbone', nargs='+', default=['cradio_v4_h'],
                   help=f'C-RADIO backbone(s): {", ".join(cradio)}; several are compared one after the other into '
                        '--out/<name> and side by side in --out/comparison.md')
    g.add_argument('--windows', nargs='+', type=window_arg, default=None, metavar='global|N',
                   help='window sizes to compare, "global" for global attention (default: global and the windows '
                        "suggested for the backbone's token grid; at 72 tokens: 6 8 9 12 18 24)")
    g.add_argument('--reference', default='pe', help="the reference backbone (SAM3's own PE encoder)")
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


def _windows(spec: ModelSpec, asked: list[Window] | None) -> list[Window]:
    """The windows to sweep on a candidate: ``asked`` or the registry's choices, each checked by the registry."""
    windows = list(dict.fromkeys(asked or spec.backbone.window_choices(spec.resolution)))
    for w in windows:
        resolve(spec.backbone, w, spec.resolution)  # its error names the windows the grid takes
    return windows


def main(argv: list[str] | None = None) -> int:
    import torch

    from ...build import build_trunk, resolve_build
    from ..features import FeatureComparer, summarize

    a = build_parser().parse_args(argv)
    a.window_size = None  # windows are swept with --windows
    for name in a.backbone:
        if ':' in name:
            raise ValueError(f'--backbone {name!r}: the feature comparison sweeps windows (--windows); name '
                             'backbones without one')
        if not get_backbone(name).is_cradio:
            cradio = [n for n, b in BACKBONES.items() if b.is_cradio]
            raise ValueError(f'--backbone {name!r} is not a C-RADIO backbone; candidates are {cradio}, and PE is '
                             'the --reference')
    models = model_configs(a)
    windows = {c.label: _windows(c.spec, a.windows) for c in models}  # every choice checked before any run
    ref_spec, ref_overrides = resolve_build(a.reference, None, None, a.reference_override)
    check_model_config(ref_spec, ref_overrides)  # a typo fails here, before anything is written
    root = a.images
    files = {str(p.relative_to(root)): p for p in list_images(root)}

    def make_spec(c: ModelConfig) -> EvalSpec:
        m = c.args
        labels = [format_window(w) for w in windows[c.label]]

        def make_worker(ctx: DistContext) -> Callable[[str], dict[str, Any]]:
            ref_args = argparse.Namespace(**{**vars(m), 'backbone': a.reference, 'override': a.reference_override,
                                             'cradio_checkpoint': None})
            reference = build_model(ref_args, 'image', ctx.device, interactive=False)
            spec, overrides = resolve_model(m)
            overrides = [*overrides, f'pretrained={not m.random_weights}']
            if m.cradio_checkpoint:
                overrides.append(f'backbone.checkpoint={Path(m.cradio_checkpoint).resolve()}')
            torch.manual_seed(m.seed)
            trunk = build_trunk(spec, overrides, ctx.device)
            comparer = FeatureComparer(reference, trunk, spec.resolution, ctx.device)

            def work(name: str) -> dict[str, Any]:
                return comparer.compare(read_image(files[name]), windows[c.label])

            return work

        def finalize(records: dict, ids: list) -> Report:
            summary = summarize([records[i] for i in ids])
            maps = list(summary[labels[0]])
            header = ['window'] + [f'{k} {v}' for k in maps for v in ('cos', 'rel.err')]
            rows = [[w] + [summary[w][k][v] for k in maps for v in ('cos', 'rel_err')] for w in labels]
            table = markdown_table(header, rows, '{:.3f}')
            best = max(labels, key=lambda w: summary[w]['trunk']['cos'])
            note = (f'\n\n{len(ids)} images; {c.spec.backbone.label} ({c.spec.resolution} px) vs {ref_spec.title()} '
                    f'({ref_spec.resolution} px); cosine similarity (mean over token positions) and relative error, '
                    f'averaged over images. Closest trunk features: window {best}.')
            headline = {f'trunk cos {w}': summary[w]['trunk']['cos'] for w in labels}
            return Report({'summary': summary, 'per_image': {i: records[i] for i in ids}, 'windows': labels,
                           'best_window': best}, table + note, '', headline)

        fingerprint = {k: v for k, v in model_fingerprint(m).items() if k != 'window_size'}
        fingerprint.update({'reference': ref_spec.name, 'reference_resolution': ref_spec.resolution,
                            'reference_overrides': ref_overrides, 'images': str(root.resolve()), 'windows': labels})
        return EvalSpec('features', list(files), fingerprint, make_worker, finalize, 'img',
                        f'## Feature fidelity: {c.spec.backbone.label} `sam3` adaptor vs {ref_spec.title()}')

    run_models(a, make_spec, f"Cosine similarity of the trunk features with {ref_spec.title()}'s, per window.",
               models, echo=print)
    return 0
