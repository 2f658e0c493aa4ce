"""``sam3-cradio demo``: the Gradio demo (image and video tabs); its options become
:class:`~sam3_cradio.demo.options.DemoOptions`."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..demo.options import DEFAULT_BACKBONE, TINY_BACKBONE, DemoOptions, demo_backbones
from ..options import DTYPES, TRUNK_RUNTIMES
from ..registry import Backbone, get_backbone, list_backbones, parse_model, resolve
from .common import check_trunk_args, window_arg

__all__ = ['HELP', 'add_arguments', 'run', 'demo_options', 'parse_args']

HELP = 'Gradio web demo (pip install "sam3-cradio[demo]")'
DESCRIPTION = 'Gradio demo: SAM3 with a C-RADIOv4 (or PE) vision backbone; image and video prompts.'


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument('--tiny', action='store_true',
                   help='run on the tiny C-RADIO of the test fixtures with random SAM3 weights: no downloads, '
                        'meaningless detections; for trying the interface')
    p.add_argument('--backbone', default=None, metavar='NAME[:WINDOW]',
                   help=f'backbone selected when the page opens, one of {list_backbones(pretrained_only=True)} '
                        f'(default: {DEFAULT_BACKBONE}; {TINY_BACKBONE} with --tiny); NAME:WINDOW also sets the window')
    p.add_argument('--window-size', type=window_arg, default=None, metavar='global|N',
                   help="C-RADIO ViTDet window selected when the page opens, in tokens, or 'global' (default); "
                        "PE's window is fixed")
    p.add_argument('--sam3-checkpoint', default=None,
                   help='local sam3.pt (default: facebook/sam3 from the Hugging Face cache, downloaded if missing)')
    p.add_argument('--cradio-checkpoint', action='append', default=[], metavar='[BACKBONE=]PATH',
                   help='local C-RADIO .pth.tar / .safetensors for a backbone, e.g. '
                        'cradio_v4_so400m=/models/c-radio_v4-so400m_half.pth.tar (repeatable; a bare PATH is for '
                        '--backbone). Default: the NVIDIA release from the Hugging Face cache')
    p.add_argument('--device', default=None, help='cpu or cuda (default: cuda if available)')
    p.add_argument('--dtype', choices=DTYPES, default='fp32',
                   help='bf16: the trunks\' weights in bfloat16 and the models under bf16 autocast (CPU and CUDA)')
    p.add_argument('--trunk-runtime', choices=TRUNK_RUNTIMES, default=None,
                   help='run the --backbone model\'s trunk from --trunk-model in onnxruntime / OpenVINO (CPU)')
    p.add_argument('--trunk-model', default=None, metavar='FILE.onnx',
                   help='the trunk exported by "sam3-cradio export" for --backbone, its window and resolution')
    p.add_argument('--host', default='127.0.0.1', help='address to serve on (0.0.0.0: every interface)')
    p.add_argument('--port', type=int, default=7860)
    p.add_argument('--share', action='store_true', default=False, help='also open a public gradio.live link')
    p.add_argument('--threshold', type=float, default=None,
                   help='initial confidence threshold (default 0.5; 0.2 with --tiny)')
    p.add_argument('--max-image-side', type=int, default=2048,
                   help='larger images are downscaled to this many pixels on their long side')
    p.add_argument('--max-image-megapixels', type=float, default=100.0,
                   help='images with more pixels are refused (before decoding)')
    p.add_argument('--max-video-frames', type=int, default=240, help='longer videos are refused')
    p.add_argument('--max-video-side', type=int, default=1280,
                   help='video frames are downscaled to this many pixels on their long side')
    p.add_argument('--max-file-size', default='500mb', help='upload limit, e.g. 200mb')
    p.add_argument('--max-models', type=int, default=3,
                   help='models kept in memory (one per backbone, window size and image/video mode)')
    p.add_argument('--feature-cache', type=int, default=4, help='encoded images kept (per model and image)')
    p.add_argument('--concurrency', type=int, default=2,
                   help='image requests processed at once (inference on one model is serialised anyway)')
    p.add_argument('--no-preload', dest='preload', action='store_false',
                   help='do not build the default model at start-up (it is built on the first request)')


def _cradio_checkpoints(items: Sequence[str], default: Backbone) -> dict[str, str]:
    """``[BACKBONE=]PATH`` items -> {backbone name: path}; a bare path is for the default backbone."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition('=')
        # a path may hold '=', a backbone name never holds a path separator
        if sep and '/' not in name and '\\' not in name:
            out[get_backbone(name).name] = path
        else:
            out[default.name] = item
    return out


def parse_args(argv: Sequence[str] | None = None) -> DemoOptions:
    """:class:`DemoOptions` from ``sam3-cradio demo`` arguments (errors exit 2 with the parser's usage)."""
    parser = argparse.ArgumentParser(prog='sam3-cradio demo', description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return demo_options(args)
    except ValueError as e:
        parser.error(str(e))


def demo_options(args: argparse.Namespace) -> DemoOptions:
    """The checked :class:`DemoOptions` of the parsed arguments; a ValueError says what is wrong."""
    backbone, window = parse_model(args.backbone or (TINY_BACKBONE if args.tiny else DEFAULT_BACKBONE))
    if window is not None and args.window_size is not None and window != args.window_size:
        raise ValueError(f'two windows given: --backbone {args.backbone} and --window-size '
                         f'{args.window_size}; give one')
    offered = demo_backbones(args.tiny)
    if backbone not in offered:
        hint = ': use --tiny' if backbone.name == TINY_BACKBONE else ''
        raise ValueError(f'{backbone.name} has no released weights{hint}; the demo offers '
                         f'{[b.name for b in offered]}')
    spec = resolve(backbone, args.window_size if window is None else window)
    checkpoints = _cradio_checkpoints(args.cradio_checkpoint, backbone)
    check_trunk_args(args.trunk_runtime, args.trunk_model)
    pe = [n for n in checkpoints if not get_backbone(n).is_cradio]
    if pe:
        raise ValueError(f'the {pe[0]} backbone takes its weights from sam3.pt (--sam3-checkpoint), '
                         'not --cradio-checkpoint')
    threshold = args.threshold if args.threshold is not None else 0.2 if args.tiny else 0.5
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f'--threshold must be in [0, 1], got {threshold}')
    for name in ('max_image_side', 'max_video_frames', 'max_video_side', 'max_models', 'feature_cache',
                 'concurrency'):
        if getattr(args, name) < 1:
            raise ValueError(f'--{name.replace("_", "-")} must be at least 1')
    if args.max_image_megapixels <= 0:
        raise ValueError(f'--max-image-megapixels must be positive, got {args.max_image_megapixels}')
    return DemoOptions(
        spec, [b.name for b in offered], args.tiny, args.sam3_checkpoint, checkpoints, args.device, args.dtype,
        args.trunk_runtime, args.trunk_model, args.host, args.port, args.share, threshold, args.max_image_side,
        args.max_image_megapixels, args.max_video_frames, args.max_video_side, args.max_file_size, args.max_models,
        args.feature_cache, args.concurrency, args.preload)


def run(a: argparse.Namespace) -> int:
    """Serve the demo until interrupted."""
    from ..demo.app import serve

    return serve(demo_options(a))
