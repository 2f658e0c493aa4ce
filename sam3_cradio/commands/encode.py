"""``sam3-cradio encode``: C-RADIO summary and spatial features of images, to a .safetensors file."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..registry import DEFAULT_BACKBONE, format_window, get_backbone, list_backbones, parse_model
from .common import add_model_args, say_warning

__all__ = ['HELP', 'add_arguments', 'run']

HELP = 'C-RADIO summary and spatial features of images, to a .safetensors file'


class _OldModelOption(argparse.Action):
    """``--model``, the old name: a backbone is now ``--backbone``, a checkpoint file ``--cradio-checkpoint``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        path = Path(values)
        if path.is_file() or path.suffix in ('.tar', '.safetensors', '.pt', '.pth'):
            say_warning('--model FILE is now --cradio-checkpoint FILE; the old name still works')
            namespace.cradio_checkpoint = path
        else:
            say_warning('--model is now --backbone; the old name still works')
            namespace.backbone = values


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('images', nargs='+', type=Path)
    g = add_model_args(p, cradio_only=True, sam3=False, resolution=False)
    g.add_argument('--model', action=_OldModelOption, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    g.add_argument('--resolution', type=int, nargs='+', default=None, metavar='PX',
                   help="input size: one side (square) or H W (default: the checkpoint's preferred size); a multiple "
                        'of the patch size times the window')
    p.add_argument('--adaptor', action='append', default=[], help='adaptor heads to run, e.g. sam3 (repeatable)')
    p.add_argument('--out', type=Path, default=Path('features.safetensors'))


def _weights(backbone: str, checkpoint: Path | None, random_weights: bool) -> str | Path:
    """What :func:`~sam3_cradio.cradio.load_cradio` loads: the checkpoint, the release, or (random-weight
    backbones) the shipped tiny fixture."""
    b = get_backbone(backbone)
    if random_weights:
        raise ValueError('encode runs trained encoders: drop --random-weights (the tiny fixture is --backbone '
                         'cradio_tiny)')
    if checkpoint is not None:
        return checkpoint
    if not b.pretrained:
        from ..assets import CRADIO_TINY_CHECKPOINT
        return CRADIO_TINY_CHECKPOINT
    return b.release


def run(a: argparse.Namespace) -> int:
    import torch
    from safetensors.torch import save_file

    from ..cradio import load_cradio
    from ..images import image_to_tensor
    from ..registry import GLOBAL, window_tokens

    b, window = parse_model(a.backbone or DEFAULT_BACKBONE)
    if not b.is_cradio:
        raise ValueError(f'encode runs C-RADIO encoders; {b.name} is SAM3\'s own encoder. Use one of '
                         f'{list_backbones(cradio_only=True)} (--backbone), or a C-RADIO checkpoint '
                         '(--cradio-checkpoint)')
    if window is not None and a.window_size is not None and window != a.window_size:
        raise ValueError(f'two windows given: --backbone {a.backbone} and --window-size {a.window_size}; give one')
    window = window if window is not None else a.window_size
    if a.resolution is not None and len(a.resolution) > 2:
        raise ValueError(f'--resolution takes one side or H W, got {a.resolution}')
    model = load_cradio(_weights(b.name, a.cradio_checkpoint, a.random_weights), adaptor_names=a.adaptor,
                        window_size=window_tokens(window), device=a.device or 'cpu')
    h, w = (a.resolution * 2)[:2] if a.resolution else (model.preferred_resolution or (b.image_size,) * 2)
    near = model.nearest_supported_resolution(h, w)
    if tuple(near) != (h, w):
        raise ValueError(f'{h}x{w} px is not supported with window {format_window(window or GLOBAL)} (sides must be '
                         f'multiples of the patch size times the window); nearest: {near[0]}x{near[1]} '
                         f'(--resolution {near[0]} {near[1]})')
    tensors = {}
    with torch.inference_mode():
        for path in a.images:
            x = image_to_tensor(path, (h, w)).to(a.device or 'cpu')
            out = model(x, feature_fmt='NCHW')
            for name, o in out.items():
                tensors[f'{Path(path).name}/{name}/summary'] = o.summary[0].float().cpu().contiguous()
                tensors[f'{Path(path).name}/{name}/features'] = o.features[0].float().cpu().contiguous()
    for k, v in tensors.items():
        print(f'{k:60s} {tuple(v.shape)}')
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(a.out))
    print(f'wrote {len(tensors)} tensors to {a.out}')
    return 0
