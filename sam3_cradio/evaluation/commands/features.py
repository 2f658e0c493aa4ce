"""``sam3-cradio eval features``: how close C-RADIO's ``sam3`` adaptor features are to SAM3's PE features, per
window and C-RADIO input resolution."""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...commands.common import add_model_args, add_run_args, model_options_list, refuse_unused, run_options, window_arg
from ...options import ModelOptions
from ...registry import ModelSpec, Window, format_window, list_backbones, resolve
from ...reporting import Report, markdown_table
from ..datasets import list_images, read_image
from ..distributed import DistContext
from ..models import ModelConfig, build_model, check_model_config, model_configs, run_models
from ..runner import EvalSpec

__all__ = ['add_arguments', 'run']

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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--images', type=Path, required=True, help='a folder of images (searched recursively)')
    g = add_model_args(p, several=True, cradio_only=True, resolution=False)
    g.add_argument('--windows', nargs='+', type=window_arg, default=None, metavar='global|N',
                   help='window sizes to compare, "global" for global attention (default: global and the windows '
                        "suggested for the backbone's token grid at each resolution; at 72 tokens: 6 8 9 12 18 24)")
    g.add_argument('--resolutions', nargs='+', type=int, default=None, metavar='PX',
                   help="C-RADIO input sides to compare, in px (default: the backbone's, 1152 for C-RADIOv4); "
                        'each window is run at each size, labelled "12 @ 768"; each must be a multiple of patch x '
                        'window (the error names the nearest size). The same as --override backbone.image_size=N '
                        'for one size: give one or the other')
    g.add_argument('--reference', default='pe', help="the reference backbone (SAM3's own PE encoder)")
    g.add_argument('--reference-override', action='append', default=[], metavar='KEY=VALUE',
                   help='hydra override of the reference config (repeatable)')
    add_run_args(p)


# model options the comparison has no use for: it sweeps windows itself and compares float32 torch trunks
_UNUSED = ('window_size', 'dtype', 'trunk_runtime', 'trunk_model')


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


def run(a: argparse.Namespace) -> int:
    import torch

    from ...build import build_trunk
    from ..features import FeatureComparer, summarize, sweep_label

    refuse_unused(a, _UNUSED, 'eval features (it sweeps --windows, in float32 torch)')
    for name in a.backbone:
        if ':' in name:
            raise ValueError(f'--backbone {name!r}: the feature comparison sweeps windows (--windows); name '
                             'backbones without one')
    options = model_options_list(a)
    for m in options:
        if not m.spec.backbone.is_cradio:
            raise ValueError(f'--backbone {m.name!r} is not a C-RADIO backbone; candidates are '
                             f'{list_backbones(cradio_only=True)}, and PE is '
                             'the --reference')
    if a.resolutions is not None and _sets_image_size(a.override):
        raise ValueError('--resolutions and --override backbone.image_size=N both set the C-RADIO input size; give '
                         'one (--resolutions takes one size or several)')
    run_opts = run_options(a)
    models = model_configs(options, run_opts)
    sweeps = {c.label: _sweep(c.spec, a.windows, a.resolutions) for c in models}  # all checked before any run
    reference = ModelOptions.make(a.reference, overrides=a.reference_override, pretrained=not a.random_weights,
                                  sam3_checkpoint=a.sam3_checkpoint, seed=a.seed)
    ref_spec, ref_overrides = reference.spec, list(reference.overrides)
    check_model_config(ref_spec, ref_overrides)  # a typo fails here, before anything is written
    root = a.images
    files = {str(p.relative_to(root)): p for p in list_images(root)}

    def make_spec(c: ModelConfig) -> EvalSpec:
        m = c.options
        sweep = sweeps[c.label]
        several = len(sweep) > 1
        # (label, window, resolution), resolution-major: each size's windows run together, as the worker runs them
        points = [(sweep_label(w, r, several), w, r) for r, ws in sweep.items() for w in ws]
        labels = [p[0] for p in points]
        patch = c.spec.backbone.patch_size

        def make_worker(ctx: DistContext) -> Callable[[str], dict[str, Any]]:
            ref_model = build_model(reference, 'image', ctx.device, interactive=False)
            overrides = [*m.overrides, f'pretrained={m.pretrained}']
            if m.cradio_checkpoint:
                overrides.append(f'backbone.checkpoint={m.cradio_checkpoint.resolve()}')
            torch.manual_seed(m.seed or 0)
            # one trunk for every size (build_trunk's trunk takes any input side); one comparer per size around it
            trunk = build_trunk(m.spec, overrides, ctx.device)
            comparers = {r: FeatureComparer(ref_model, trunk, r, ctx.device) for r in sweep}
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

        fingerprint = {k: v for k, v in m.fingerprint().items() if k != 'window_size'}
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

    run_models(models, make_spec, run_opts, f"Cosine similarity of the trunk features with {ref_spec.title()}'s, "
               'per window' + (' and resolution.' if a.resolutions and len(set(a.resolutions)) > 1 else '.'),
               echo=print)
    return 0
