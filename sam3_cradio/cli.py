"""Command line: ``sam3-cradio <command>``."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

import torch

__all__ = ['main']


def _encode(a: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from .cradio import load_cradio
    from .images import image_to_tensor

    model = load_cradio(a.model, adaptor_names=a.adaptor, window_size=a.window_size, device=a.device)
    if a.resolution:
        h, w = (a.resolution * 2)[:2]
    else:
        h, w = model.preferred_resolution or (512, 512)
    res = model.nearest_supported_resolution(h, w)
    if res != (h, w):
        print(f'{h}x{w} is not supported with window_size={a.window_size}; using {res[0]}x{res[1]}')
    tensors = {}
    with torch.inference_mode():
        for path in a.images:
            x = image_to_tensor(path, res).to(a.device)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sam3-cradio', description='C-RADIOv4 as the image backbone of SAM3.')
    sub = p.add_subparsers(dest='command', required=True)

    enc = sub.add_parser('encode', help='C-RADIO summary and spatial features of images, to a .safetensors file')
    enc.add_argument('images', nargs='+', type=Path)
    enc.add_argument('--model', default='c-radio_v4-h',
                     help="release name (c-radio_v4-h, c-radio_v4-so400m) or a local .pth.tar / .safetensors")
    enc.add_argument('--adaptor', action='append', default=[], help="adaptor heads to run, e.g. sam3 (repeatable)")
    enc.add_argument('--window-size', type=int, default=None, help='ViTDet window in patches (default: global)')
    enc.add_argument('--resolution', type=int, nargs='+', default=None, metavar='PX',
                     help='input size: one side (square) or H W; rounded to what the window size allows')
    enc.add_argument('--device', default='cpu')
    enc.add_argument('--out', type=Path, default=Path('features.safetensors'))
    enc.set_defaults(func=_encode)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    a = build_parser().parse_args(argv)
    try:
        return a.func(a)
    except (ValueError, FileNotFoundError) as e:  # user errors: one clear line, no traceback
        print(f'error: {e}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
