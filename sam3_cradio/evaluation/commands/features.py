"""``sam3-cradio eval features``: how close C-RADIO's ``sam3`` adaptor features are to SAM3's PE features, per
window and C-RADIO input resolution."""
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

On any image folder, for each window size (and each C-RADIO input resolution of --resolutions): the cosine
similarity (mean over token positions) and the relative error (||C-RADIO - PE|| / ||PE||) of the trunk features
SAM3's neck receives, and of each level of SAM3's neck applied to them, per image and averaged. A window (and
size) that keeps the features close to PE's is a good one to try before a long benchmark run.

PE runs at 1008 px (patch 14), C-RADIOv4 at 1152 px (patch 16): both give 72 x 72 tokens over the whole image,
so the maps compare position by position. If the grids differ (other image sizes, the tiny test models), both maps
are resampled to the smaller grid, bilinear with antialiasing, before comparing (see
sam3_cradio.evaluation.features).

--resolutions sweeps C-RADIO input sizes too (window x resolution, e.g. 768 px: a 48 x 48 grid, compared with
PE's 72 x 72 on the 48 x 48 grid): one trunk serves every size and PE runs once per image. Every pair is checked
by the backbone registry before anything runs (a size must be a multiple of patch x window; the error names the
nearest one); without --windows each size sweeps its own suggested windows. Results are labelled "12 @ 768".

    sam3-cradio eval features --images photos/ --backbone cradio_v4_h --windows global 8 12 24 \\
        --out runs/features/cradio_h
    sam3-cradio eval features --images photos/ --backbone cradio_v4_so400m --windows 12 --resolutions 768 1152 \\
        --out runs/features/so400m_sizes
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
                        "suggested for the backbone's token grid at each resolution; at 72 tokens: 6 8 9 12 18 24)")
    g.add_argument('--resolutions', nargs='+', type=int, default=None, metavar='PX',
                   help="C-RADIO input sides to compare, in px (default: the backbone's, 1152 for C-RADIOv4); "
                        'each window is run at each size, labelled "12 @ 768"; each must be a multiple of patch x '
                        'window (the error names the nearest size). The same as --override backbone.image_size=N '
                        'for one size: give one or the other')
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


def _sweep(spec: ModelSpec, windows: list[Window] | None, resolutions: list[int] | None
           ) -> dict[int, list[Window]]:
    """``{resolution: windows}`` to sweep on a candidate, every pair checked by the registry (its errors name the
    nearest valid size, or the windows a grid takes). Without ``resolutions``: the spec's (native or
    ``backbone.image_size``); without ``windows``: each size's own choices (global and the suggested ones)."""
    out: dict[int, list[Window]] = {}
    for r in dict.fromkeys(resolutions or [spec.resolution]):
        resolve(spec.backbone, None, r)  # the size alone first: not a multiple of the patch -> nearest size
        out[r] = list(dict.fromkeys(windows or spec.backbone.window_choices(r)))
        for w in out[r]:
            resolve(spec.backbone, w, r)  # names the pair: 'window 5 does not divide the 16x16 grid ... at 256 px'
    return out


def _sets_image_size(overrides: list[str]) -> bool:
    return any(o.lstrip('+').partition('=')[0] == 'backbone.image_size' for o in overrides)


def main(argv: list[str] | None = None) -> int:
    import torch

    from ...build import build_trunk, resolve_build
    from ..features import FeatureComparer, summarize, sweep_label

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
    if a.resolutions is not None and _sets_image_size(a.override):
        raise ValueError('--resolutions and --override backbone.image_size=N both set the C-RADIO input size; give '
                         'one (--resolutions takes one size or several)')
    models = model_configs(a)
    sweeps = {c.label: _sweep(c.spec, a.windows, a.resolutions) for c in models}  # all checked before any run
    ref_spec, ref_overrides = resolve_build(a.reference, None, None, a.reference_override)
    check_model_config(ref_spec, ref_overrides)  # a typo fails here, before anything is written
    root = a.images
    files = {str(p.relative_to(root)): p for p in list_images(root)}

    def make_spec(c: ModelConfig) -> EvalSpec:
        m = c.args
        sweep = sweeps[c.label]
        several = len(sweep) > 1
        # (label, window, resolution), resolution-major: each size's windows run together, as the worker runs them
        points = [(sweep_label(w, r, several), w, r) for r, ws in sweep.items() for w in ws]
        labels = [p[0] for p in points]
        patch = c.spec.backbone.patch_size

        def make_worker(ctx: DistContext) -> Callable[[str], dict[str, Any]]:
            ref_args = argparse.Namespace(**{**vars(m), 'backbone': a.reference, 'override': a.reference_override,
                                             'cradio_checkpoint': None})
            reference = build_model(ref_args, 'image', ctx.device, interactive=False)
            spec, overrides = resolve_model(m)
            overrides = [*overrides, f'pretrained={not m.random_weights}']
            if m.cradio_checkpoint:
                overrides.append(f'backbone.checkpoint={Path(m.cradio_checkpoint).resolve()}')
            torch.manual_seed(m.seed)
            # one trunk for every size (build_trunk's trunk takes any input side); one comparer per size around it
            trunk = build_trunk(spec, overrides, ctx.device)
            comparers = {r: FeatureComparer(reference, trunk, r, ctx.device) for r in sweep}
            first = next(iter(comparers.values()))

            def work(name: str) -> dict[str, Any]:
                image = read_image(files[name])
                ref = first.reference_maps(image)  # PE once per image, whatever the number of sizes
                out: dict[str, Any] = {}
                for r, comparer in comparers.items():
                    result = comparer.compare(image, sweep[r], ref)  # keyed by the plain window label
                    out.update({sweep_label(w, r, several): result[format_window(w)] for w in sweep[r]})
                return out

            return work

        def finalize(records: dict, ids: list) -> Report:
            summary = summarize([records[i] for i in ids])
            maps = list(summary[labels[0]])
            header = ['window'] + [f'{k} {v}' for k in maps for v in ('cos', 'rel.err')]
            rows = [[format_window(w)] + [summary[label][k][v] for k in maps for v in ('cos', 'rel_err')]
                    for label, w, _ in points]
            if several:  # one size: the table of runs made before --resolutions
                header[1:1] = ['px', 'grid']
                for row, (_, _, r) in zip(rows, points):
                    row[1:1] = [r, f'{r // patch}x{r // patch}']
            table = markdown_table(header, rows, '{:.3f}')
            best_label, best_w, best_r = max(points, key=lambda p: summary[p[0]]['trunk']['cos'])
            sizes = ', '.join(str(r) for r in sweep)
            if several:
                closest = (f'window {format_window(best_w)} at {best_r} px ({best_r // patch}x{best_r // patch} '
                           'tokens)')
            else:
                closest = f'window {best_label}'
            note = (f'\n\n{len(ids)} images; {c.spec.backbone.label} ({sizes} px) vs {ref_spec.title()} '
                    f'({ref_spec.resolution} px); cosine similarity (mean over token positions) and relative error, '
                    f'averaged over images. Closest trunk features: {closest}.')
            headline = {f'trunk cos {label}': summary[label]['trunk']['cos'] for label in labels}
            metrics: dict[str, Any] = {'summary': summary, 'per_image': {i: records[i] for i in ids},
                                       'windows': labels, 'best_window': best_label}
            if several:  # only then: a one-size run keeps the layout of runs made before --resolutions
                metrics['resolutions'] = list(sweep)
                metrics['points'] = {label: {'window': w, 'resolution': r, 'grid': r // patch}
                                     for label, w, r in points}
                metrics['best'] = {'window': best_w, 'resolution': best_r}
            return Report(metrics, table + note, '', headline)

        fingerprint = {k: v for k, v in model_fingerprint(m).items() if k != 'window_size'}
        if several:
            del fingerprint['resolution']
            fingerprint['resolutions'] = list(sweep)
        else:
            # one size, however it was given (default, --resolutions R, backbone.image_size=R): the same records
            fingerprint['resolution'] = next(iter(sweep))
        fingerprint.update({'reference': ref_spec.name, 'reference_resolution': ref_spec.resolution,
                            'reference_overrides': ref_overrides, 'images': str(root.resolve()), 'windows': labels})
        return EvalSpec('features', list(files), fingerprint, make_worker, finalize, 'img',
                        f'## Feature fidelity: {c.spec.backbone.label} `sam3` adaptor vs {ref_spec.title()}')

    run_models(a, make_spec, f"Cosine similarity of the trunk features with {ref_spec.title()}'s, per window"
               + (' and resolution.' if a.resolutions and len(set(a.resolutions)) > 1 else '.'), models, echo=print)
    return 0
