"""``sam3-cradio export``: the trunk (or the encoder) to ONNX for onnxruntime / OpenVINO / TensorRT."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..export.info import COMPAT_OPSET, DEFAULT_OPSET
from ..files import check_writable
from ..options import TRUNK_RUNTIMES
from .common import add_model_args, model_options

if TYPE_CHECKING:
    from ..export.export import ExportResult

__all__ = ['HELP', 'DESCRIPTION', 'add_arguments', 'run', 'format_result']

HELP = 'export the trunk (or the encoder) to ONNX for onnxruntime / OpenVINO / TensorRT (pip install "sam3-cradio[export]")'
DESCRIPTION = 'ONNX export of C-RADIO + the sam3 head at a fixed size and window (docs/deploy.md).'


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p, cradio_only=True, sam3=False, device=False)  # the window and size are fixed in the file
    p.add_argument('--encoder', action='store_true',
                   help='export the encoder alone: RGB in [0, 1] -> summary and features of the backbone and of '
                        'each --adaptor (default: the SAM3 trunk, SAM3\'s input in, the sam3 adaptor\'s map out)')
    p.add_argument('--adaptor', action='append', default=None, metavar='NAME',
                   help='adaptor heads (repeatable): the trunk\'s head (default sam3), or with --encoder the heads '
                        'to include (sam3, siglip2-g, dino_v3_7b; default sam3)')
    p.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                   help=f'ONNX opset (default {DEFAULT_OPSET}: attention as one op; {COMPAT_OPSET} for older runtimes '
                        'and TensorRT)')
    p.add_argument('--verify', nargs='+', choices=TRUNK_RUNTIMES[1:], default=None, metavar='RUNTIME',
                   help='run the written file in these runtimes against torch once and print the largest '
                        'difference (default: onnxruntime when installed)')
    p.add_argument('--no-verify', action='store_true', help='skip that check (it costs one forward per runtime)')
    p.add_argument('--seed', type=int, default=0, help='random weights (--random-weights) and the example input')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch decides)')
    p.add_argument('--out', type=Path, default=Path('trunk.onnx'),
                   help='the .onnx file; large models also write <out>.data beside it (keep them together)')


def format_result(result: ExportResult) -> str:
    info = result.info
    lines = [f'exported {info.describe()} in {result.seconds:.1f}s (opset {info.opset}, dynamic batch)',
             *(f'  {f} ({f.stat().st_size / 2 ** 20:.1f} MiB)' for f in result.files)]
    lines += [f'  {rt} vs torch fp32: max |diff| {d:.3g}' for rt, d in result.max_abs.items()]
    if info.kind == 'trunk':
        w = info.window if info.window == 'global' else int(info.window)
        lines.append(f"use it: build_sam3('{info.backbone}', {w!r}, resolution={info.resolution}, "
                     f"trunk_runtime='onnxruntime' or 'openvino', trunk_model='{result.path}'), or "
                     f'--trunk-runtime openvino --trunk-model {result.path} on segment / track / eval / demo')
    else:
        lines.append(f'inputs: {info.input_name} (B, 3, {info.resolution}, {info.resolution}) RGB in [0, 1]; '
                     f'outputs: {", ".join(info.output_names)}')
    return '\n'.join(lines)


def run(a: argparse.Namespace) -> int:
    """Export what the options describe and print what was written."""
    import torch

    from ..export.export import export_encoder, export_trunk
    from ..export.runtimes import runtime_unavailable

    # the exporter's optimiser logs every pass at INFO: keep the command's output to what it did
    for name in ('onnx_ir', 'onnxscript'):
        logging.getLogger(name).setLevel(logging.WARNING)
    if a.threads:
        torch.set_num_threads(a.threads)
    check_writable(a.out, 'exported model --out')
    if a.out.suffix != '.onnx':
        raise ValueError(f'--out {a.out}: an exported model is an .onnx file (e.g. --out trunk.onnx)')
    if a.random_weights and a.cradio_checkpoint is not None:
        raise ValueError('--random-weights and --cradio-checkpoint both name the weights; give one')
    spec = model_options(a).spec  # refused here, before any weights are read
    if a.no_verify:
        verify: list[str] = []
    elif a.verify is not None:
        for rt in a.verify:
            reason = runtime_unavailable(rt)
            if reason:
                raise ValueError(f'--verify {rt}: {reason}')
        verify = list(a.verify)
    else:
        verify = [] if runtime_unavailable('onnxruntime') else ['onnxruntime']
    common = dict(cradio_checkpoint=a.cradio_checkpoint, pretrained=not a.random_weights, opset=a.opset,
                  verify=verify, seed=a.seed)
    if a.encoder:
        result = export_encoder(a.out, spec, adaptors=a.adaptor or ['sam3'], **common)
    else:
        adaptors = a.adaptor or ['sam3']
        if len(adaptors) != 1:
            raise ValueError(f'the trunk has one adaptor head (the one SAM3 reads), got {adaptors}; use --encoder '
                             f'for several')
        result = export_trunk(a.out, spec, adaptor=adaptors[0], **common)
    print(format_result(result))
    return 0
