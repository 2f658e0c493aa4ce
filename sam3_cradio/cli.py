"""Command line: ``sam3-cradio <command>``."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .registry import (
    BACKBONES,
    GLOBAL,
    ModelSpec,
    Window,
    format_window,
    get_backbone,
    list_backbones,
    parse_window,
    resolve,
)

if TYPE_CHECKING:
    import torch

__all__ = ['main', 'add_model_args', 'model_spec', 'build_from_args', 'window_arg', 'setup_logging', 'run_command']


def _encoder_source(model: str) -> str | Path:
    """``--model``: a C-RADIO backbone name (its release; the tiny one is the shipped fixture) or a file path."""
    try:
        b = get_backbone(model)
    except ValueError:
        return model  # a path or a release name: load_cradio says what is wrong with it
    if not b.is_cradio:
        raise ValueError(f'encode runs C-RADIO encoders; {b.name} is SAM3\'s own encoder. Use one of '
                         f'{[n for n, x in BACKBONES.items() if x.is_cradio]} or a C-RADIO checkpoint path')
    if not b.pretrained:
        from .assets import CRADIO_TINY_CHECKPOINT
        return CRADIO_TINY_CHECKPOINT
    return b.release


def _encode(a: argparse.Namespace) -> int:
    import torch
    from safetensors.torch import save_file

    from .cradio import load_cradio
    from .images import image_to_tensor

    window = None if a.window_size in (None, GLOBAL) else a.window_size
    model = load_cradio(_encoder_source(a.model), adaptor_names=a.adaptor, window_size=window, device=a.device)
    if a.resolution:
        h, w = (a.resolution * 2)[:2]
    else:
        h, w = model.preferred_resolution or (512, 512)
    res = model.nearest_supported_resolution(h, w)
    if res != (h, w):
        print(f'{h}x{w} is not supported with window {format_window(a.window_size or GLOBAL)}; '
              f'using {res[0]}x{res[1]}')
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


def window_arg(value: str) -> Window:
    """argparse type for ``--window-size``: 'global' or a positive number of tokens."""
    try:
        return parse_window(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_model_args(p: argparse.ArgumentParser, default_backbone: str = 'cradio_v4_h') -> None:
    """``--backbone NAME[:WINDOW]``, ``--window-size``, ``--resolution``, checkpoints, ``--random-weights``,
    ``--device``: the model options of every command that builds SAM3."""
    p.add_argument('--backbone', default=default_backbone, metavar='NAME[:WINDOW]',
                   help=f'one of {list_backbones()}; NAME:WINDOW also sets the window (cradio_v4_h:8)')
    p.add_argument('--window-size', type=window_arg, default=None, metavar='global|N',
                   help="C-RADIO ViTDet window in tokens, or 'global'; it must divide the token grid (72 at "
                        "1152 px). Default: global for C-RADIO; PE's window is fixed (24)")
    p.add_argument('--resolution', type=int, default=None, metavar='PX',
                   help='input side in px (default: the backbone\'s, 1152 for C-RADIOv4); a multiple of '
                        'patch x window')
    p.add_argument('--sam3-checkpoint', default=None, help='local sam3.pt (default: HF facebook/sam3)')
    p.add_argument('--cradio-checkpoint', default=None, help='local C-RADIO .pth.tar (default: the release)')
    p.add_argument('--random-weights', action='store_true', help='no downloads: random SAM3 weights, to try the tool')
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda if available)')
    p.add_argument('--dtype', choices=('fp32', 'bf16'), default='fp32',
                   help='bf16: the trunk\'s weights in bfloat16 and the model under bf16 autocast, on CPU and '
                        'CUDA (about 2x faster where the CPU has bf16 matmul units; deviation in sam3-cradio bench)')
    p.add_argument('--trunk-runtime', choices=('torch', 'onnxruntime', 'openvino'), default=None,
                   help='run the trunk in torch (default) or, from an exported file (--trunk-model), in '
                        'onnxruntime / OpenVINO on the CPU; pip install "sam3-cradio[export]"')
    p.add_argument('--trunk-model', type=Path, default=None, metavar='FILE.onnx',
                   help='the trunk exported by "sam3-cradio export" for this backbone, window and resolution')


def model_spec(a: argparse.Namespace) -> ModelSpec:
    """The checked backbone choice of :func:`add_model_args` options (fails before anything is built)."""
    return resolve(a.backbone, a.window_size, a.resolution)


def build_from_args(a: argparse.Namespace, mode: str, **kwargs: Any) -> torch.nn.Module:
    from .build import build_sam3

    return build_sam3(model_spec(a), mode=mode, pretrained=not a.random_weights,
                      sam3_checkpoint=a.sam3_checkpoint, cradio_checkpoint=a.cradio_checkpoint, device=a.device,
                      dtype=a.dtype, trunk_runtime=getattr(a, 'trunk_runtime', None),
                      trunk_model=getattr(a, 'trunk_model', None), **kwargs)


def _segment(a: argparse.Namespace) -> int:
    from .jobs.command import run

    return run(a)  # one image: the annotated image; else files in --out (sam3_cradio/jobs)


def _track(a: argparse.Namespace) -> int:
    import warnings

    from .predictor import TextTruncatedWarning, check_box, check_text, text_overflow
    from .video import probe_video, track_video

    if a.text is None and a.box is None:
        raise ValueError('give a prompt: --text and/or --box X0 Y0 X1 Y1')
    if a.text is not None:
        check_text(a.text)
    model_spec(a)
    info = probe_video(a.video)  # fail on bad options or a bad video before building the model
    if a.box is not None:
        check_box(a.box, info.height, info.width)
    overflow = text_overflow(a.text.strip()) if a.text is not None else None
    if overflow is not None:  # said once, as a line of its own, before the model is built
        print(f'warning: {overflow.message()}', file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', TextTruncatedWarning)  # (the predictor's own warning: said above)
        model = build_from_args(a, 'video')
        summary = track_video(model, a.video, text=a.text, box=a.box, out=a.out, progress=True, fps=a.fps,
                              masks_dir=a.masks_dir, vos_root=a.vos_root, json_path=a.json,
                              mask_layout=a.mask_layout, sequence=a.sequence)
    print(f'wrote {summary.frames} frames ({summary.width}x{summary.height}, {summary.fps:g} fps) to {summary.out}; '
          f'objects: {summary.object_ids or "none"} ({summary.seconds:.1f}s)')
    if summary.masks:
        print(f'masks ({a.mask_layout} layout): {summary.masks}')
    if summary.vos_root:
        print(f'VOS root: {summary.vos_root} (sequence {a.sequence or Path(a.video).stem}); score it with '
              f'sam3-cradio eval vos --dataset {a.mask_layout} --root {summary.vos_root}')
    if summary.json:
        print(f'boxes and scores: {summary.json}')
    return 0


def _export(a: argparse.Namespace) -> int:
    from .export.command import run_cli

    print(run_cli(a))
    return 0


def _bench(a: argparse.Namespace) -> int:
    from .bench import run_cli

    print(run_cli(a))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sam3-cradio', description='C-RADIOv4 as the image backbone of SAM3.')
    sub = p.add_subparsers(dest='command', required=True)

    enc = sub.add_parser('encode', help='C-RADIO summary and spatial features of images, to a .safetensors file')
    enc.add_argument('images', nargs='+', type=Path)
    enc.add_argument('--model', default='cradio_v4_h',
                     help="a C-RADIO backbone (cradio_v4_h, cradio_v4_so400m: their releases; cradio_tiny: the shipped "
                          "test fixture), a release name (c-radio_v4-h) or a local .pth.tar / .safetensors")
    enc.add_argument('--adaptor', action='append', default=[], help="adaptor heads to run, e.g. sam3 (repeatable)")
    enc.add_argument('--window-size', type=window_arg, default=None, metavar='global|N',
                     help="ViTDet window in patches, or 'global' (default)")
    enc.add_argument('--resolution', type=int, nargs='+', default=None, metavar='PX',
                     help='input size: one side (square) or H W; rounded to what the window size allows')
    enc.add_argument('--device', default='cpu')
    enc.add_argument('--out', type=Path, default=Path('features.safetensors'))
    enc.set_defaults(func=_encode)

    from .jobs.command import EPILOG
    from .jobs.command import add_arguments as add_segment_arguments

    seg = sub.add_parser('segment', help='segment images (a file, folders, globs, lists of paths) from a text, box or '
                                         'point prompt; writes an annotated image, or COCO / JSON / PNG / YOLO / VOC '
                                         'files', epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_segment_arguments(seg)
    seg.set_defaults(func=_segment)

    trk = sub.add_parser('track', help='track objects through a video from a text prompt or a first-frame box')
    trk.add_argument('video', type=Path, help='a video file (mp4, ...) or a folder of frames')
    trk.add_argument('--text', default=None, help='noun phrase, e.g. "person"')
    trk.add_argument('--box', type=float, nargs=4, default=None, metavar=('X0', 'Y0', 'X1', 'Y1'),
                     help='box of one object on the first frame, in pixels')
    trk.add_argument('--fps', type=float, default=None, help='output frame rate (default: the input\'s, else 25)')
    trk.add_argument('--out', type=Path, default=Path('tracked.mp4'), help='the annotated video')
    trk.add_argument('--masks-dir', type=Path, default=None, metavar='DIR',
                     help='also write per-frame masks there, named after the frames (--mask-layout)')
    trk.add_argument('--mask-layout', choices=('davis', 'sav'), default='davis',
                     help='davis: one palette PNG per frame, 0 background, 1..n objects in order of appearance; '
                          'sav: DIR/<object id>/<frame>.png, a binary PNG per object (overlaps kept)')
    trk.add_argument('--vos-root', type=Path, default=None, metavar='DIR',
                     help='also write a VOS dataset root (frames, masks, sequence list in the --mask-layout) that '
                          '"sam3-cradio eval vos --dataset davis|sav --root DIR" reads')
    trk.add_argument('--sequence', default=None, metavar='NAME',
                     help='the sequence name in --vos-root (default: the video\'s file or folder name)')
    trk.add_argument('--json', type=Path, default=None, metavar='PATH',
                     help='also write per-frame object ids, boxes (xyxy px), scores and mask areas as JSON')
    add_model_args(trk)
    trk.set_defaults(func=_track)

    sub.add_parser('demo', add_help=False, help='Gradio web demo (sam3-cradio demo --help; pip install "sam3-cradio[demo]")')
    sub.add_parser('eval', add_help=False,
                   help='evaluations: coco, coco-boxes, saco-gold, vos, features (sam3-cradio eval NAME --help)')
    sub.add_parser('distill', add_help=False,
                   help='adapt the encoder (sam3 head, last blocks or all) to SAM3 by distillation '
                        '(sam3-cradio distill --help)')

    from .export.command import add_arguments as add_export_arguments

    exp = sub.add_parser('export', help='export the trunk (or the encoder) to ONNX for onnxruntime / OpenVINO / '
                                        'TensorRT (pip install "sam3-cradio[export]")',
                         description='ONNX export of C-RADIO + the sam3 head at a fixed size and window '
                                     '(docs/deploy.md).')
    add_export_arguments(exp)
    exp.set_defaults(func=_export)

    from .bench import add_arguments

    bench = sub.add_parser('bench', help='speed and memory: C-RADIOv4 (global, ViTDet windows) vs SAM3\'s PE',
                           description='Speed and memory benchmark (sam3_cradio/bench).')
    add_arguments(bench)
    bench.set_defaults(func=_bench)
    return p


def setup_logging() -> None:
    """The command-line log format (library modules only log; entry points call this once)."""
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')


def run_command(fn: Callable[..., int], *args: Any) -> int:
    """Run a command: user errors (bad input, missing files or weights) end as one line on stderr and exit 2,
    without a traceback."""
    try:
        return fn(*args)
    except (ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # commands with work to keep (segment, eval) say more themselves
        print('interrupted', file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    setup_logging()
    argv = sys.argv[1:] if argv is None else list(argv)
    # these parse their own options
    if argv[:1] == ['demo']:
        from .demo.app import main as demo_main
        return run_command(demo_main, argv[1:])
    if argv[:1] == ['eval']:
        from .evaluation.cli import main as eval_main
        return run_command(eval_main, argv[1:])
    if argv[:1] == ['distill']:  # hydra overrides
        from .distill import main_distill
        return run_command(main_distill, argv[1:])
    a = build_parser().parse_args(argv)
    return run_command(a.func, a)

if __name__ == '__main__':
    sys.exit(main())
