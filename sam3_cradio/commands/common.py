"""What the command modules share: the model options (declared once, made into
:class:`~sam3_cradio.options.ModelOptions` once), the run options of folder jobs and evaluations, old option
spellings kept as aliases, and the check that refuses an option the chosen mode does not use.

Only command modules import this; the library below them takes data (``ModelOptions``, ``RunOptions``), never an
``argparse.Namespace``.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..options import DTYPES, TRUNK_RUNTIMES, ModelOptions
from ..registry import DEFAULT_BACKBONE, Window, list_backbones, parse_model, parse_window

__all__ = ['window_arg', 'check_trunk_args', 'add_model_args', 'model_options', 'model_options_list', 'add_run_args', 'run_options',
           'alias', 'refuse_unused', 'say_warning']


def window_arg(value: str) -> Window:
    """argparse type for ``--window-size``: 'global' or a positive number of tokens."""
    try:
        return parse_window(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def say_warning(message: str) -> None:
    """A command's warning: one ``warning: ...`` line on stderr."""
    print(f'warning: {message}', file=sys.stderr)


class _Alias(argparse.Action):
    """An old spelling of an option: stores under the new one's dest and says the new name once."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: str = '', **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        say_warning(f'{option_string} is now {self.new}; the old name still works')
        setattr(namespace, self.dest, values)


def alias(p: argparse.ArgumentParser | argparse._ArgumentGroup, old: str, new: str, dest: str, **kwargs: Any) -> None:
    """Accept ``old`` as ``new`` (same ``dest``), hidden from ``--help``, with a one-line note when used."""
    p.add_argument(old, dest=dest, action=_Alias, new=new, help=argparse.SUPPRESS, default=argparse.SUPPRESS,
                   **kwargs)


def add_model_args(
        p: argparse.ArgumentParser,
        *,
        several: bool = False,
        cradio_only: bool = False,
        sam3: bool = True,
        resolution: bool = True,
        device: bool = True,
) -> argparse._ArgumentGroup:
    """The model options, one spelling for every command.

    Args:
        several: ``--backbone`` takes several models (evaluations: run one after the other, compared).
        cradio_only: C-RADIO encoders only (encode, export).
        sam3: the SAM3 options (weights, ``--dtype``, trunk runtime, hydra ``--override``); False for commands
            that run the C-RADIO encoder alone.
        resolution: ``--resolution PX``.
        device: ``--device``.
    """
    g = p.add_argument_group('model')
    names = list_backbones(cradio_only=cradio_only)
    several_help = (' (one or several: each is run in turn into --out/<name>[-w<window>] and compared in '
                    '--out/comparison.md)') if several else ''
    g.add_argument('--backbone', nargs='+' if several else None,
                   default=[DEFAULT_BACKBONE] if several else DEFAULT_BACKBONE,
                   metavar='NAME[:WINDOW]',
                   help=f'one of {", ".join(names)}; NAME:WINDOW also sets the window (cradio_v4_h:8){several_help}. '
                        f'Default: {DEFAULT_BACKBONE}')
    g.add_argument('--window-size', type=window_arg, default=None, metavar='global|N',
                   help="C-RADIO ViTDet window in tokens, or 'global'; it must divide the token grid (72 at 1152 px: "
                        "6, 8, 9, 12, 18, 24). Default: global for C-RADIO; PE's window is fixed (24)")
    if resolution:
        g.add_argument('--resolution', dest='model_resolution', type=int, default=None, metavar='PX',
                       help="input side in px (default: the backbone's, 1152 for C-RADIOv4); a multiple of the "
                            'patch size times the window')
    g.add_argument('--cradio-checkpoint', type=Path, default=None, metavar='FILE',
                   help='local C-RADIO .pth.tar / .safetensors (default: the release, from the Hugging Face cache)')
    g.add_argument('--random-weights', action='store_true',
                   help='random weights: no downloads, meaningless outputs (to try the tool, tests, timing)')
    if device:
        g.add_argument('--device', default=None, help='cpu, cuda or cuda:N (default: cuda if available)')
    if sam3:
        g.add_argument('--sam3-checkpoint', type=Path, default=None, metavar='FILE',
                       help='local sam3.pt (default: HF facebook/sam3, from the Hugging Face cache)')
        g.add_argument('--dtype', choices=DTYPES, default='fp32',
                       help="bf16: the trunk's weights in bfloat16 and the model under bf16 autocast (CPU and CUDA)")
        g.add_argument('--trunk-runtime', choices=TRUNK_RUNTIMES, default=None,
                       help='run the trunk in torch (default) or, from --trunk-model, in onnxruntime / OpenVINO '
                            '(pip install "sam3-cradio[export]")')
        g.add_argument('--trunk-model', type=Path, default=None, metavar='FILE.onnx',
                       help='the trunk exported by "sam3-cradio export" for this backbone, window and resolution')
        g.add_argument('--override', action='append', default=[], metavar='KEY=VALUE',
                       help='hydra override of the model config (repeatable), e.g. dims=tiny')
        g.add_argument('--seed', type=int, default=0, help='torch seed set before building (random weights)')
    return g


def check_trunk_args(runtime: str | None, model: Path | str | None) -> None:
    """``--trunk-runtime`` and ``--trunk-model`` go together, said in the command line's words (the library's
    own checks name its arguments)."""
    if runtime not in (None, 'torch') and model is None:
        raise ValueError(f'--trunk-runtime {runtime} runs an exported trunk: pass --trunk-model FILE.onnx (made by '
                         'sam3-cradio export)')
    if model is not None and runtime in (None, 'torch'):
        raise ValueError('--trunk-model is an exported trunk for --trunk-runtime onnxruntime or openvino; the torch '
                         'trunk is built from weights (drop --trunk-model, or add --trunk-runtime)')


def _options(a: argparse.Namespace, backbone: str, window: Window | None, cradio_checkpoint: Path | None
             ) -> ModelOptions:
    check_trunk_args(getattr(a, 'trunk_runtime', None), getattr(a, 'trunk_model', None))
    return ModelOptions.make(
        backbone, window, getattr(a, 'model_resolution', None), getattr(a, 'override', ()),
        pretrained=not a.random_weights, sam3_checkpoint=getattr(a, 'sam3_checkpoint', None),
        cradio_checkpoint=cradio_checkpoint, device=getattr(a, 'device', None), dtype=getattr(a, 'dtype', 'fp32'),
        trunk_runtime=getattr(a, 'trunk_runtime', None), trunk_model=getattr(a, 'trunk_model', None),
        seed=getattr(a, 'seed', None))


def model_options(a: argparse.Namespace) -> ModelOptions:
    """The checked :class:`ModelOptions` of :func:`add_model_args` options (one ``--backbone``)."""
    return _options(a, a.backbone, a.window_size, a.cradio_checkpoint)


def model_options_list(a: argparse.Namespace) -> list[ModelOptions]:
    """The models of ``--backbone`` given several times (:func:`add_model_args` with ``several``).

    ``--window-size`` applies to the C-RADIO backbones named without a window, and ``--cradio-checkpoint`` to the
    C-RADIO backbones; given when no backbone takes them, they are an error (PE's window is fixed; PE takes its
    weights from sam3.pt)."""
    named = [parse_model(t) for t in a.backbone]
    if a.cradio_checkpoint is not None and not any(b.is_cradio for b, _ in named):
        raise ValueError(f'--cradio-checkpoint applies to C-RADIO backbones; {", ".join(b.name for b, _ in named)} '
                         'take their weights from sam3.pt (--sam3-checkpoint)')
    open_cradio = any(b.is_cradio and w is None for b, w in named)  # what --window-size applies to
    out = []
    for b, w in named:
        if w is None and a.window_size is not None and (b.is_cradio or not open_cradio):
            w = a.window_size
        out.append(_options(a, b.name, w, a.cradio_checkpoint if b.is_cradio else None))
    return out


def add_run_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """``--out``, ``--limit``, ``--overwrite``, ``--no-progress``, ``--threads`` of a resumable run
    (:class:`~sam3_cradio.evaluation.runner.RunOptions`); ``--device`` comes with the model options."""
    g = p.add_argument_group('run')
    g.add_argument('--out', type=Path, required=True,
                   help='output folder: records/ (streamed predictions), run.json, metrics.json, metrics.md; '
                        'rerunning the same command resumes')
    g.add_argument('--limit', type=int, default=None, help='only the first N units (sorted ids), for quick runs')
    g.add_argument('--overwrite', action='store_true', help='discard records already in --out')
    g.add_argument('--no-progress', dest='progress', action='store_false', help='no progress bar')
    g.add_argument('--threads', type=int, default=None, help='torch CPU threads per process (default: torch decides)')
    return g


def run_options(a: argparse.Namespace) -> Any:
    """The :class:`~sam3_cradio.evaluation.runner.RunOptions` of :func:`add_run_args` options."""
    from ..evaluation.runner import RunOptions

    config = {k: v for k, v in vars(a).items() if not k.startswith('_')}  # recorded in the report JSON
    return RunOptions(out=Path(a.out), limit=a.limit,
                      overwrite=a.overwrite, device=a.device, progress=a.progress, threads=a.threads, config=config)


def refuse_unused(a: argparse.Namespace, unused: Iterable[str], mode: str) -> None:
    """An option that ``mode`` does not use, given anyway, is an error naming it (not silently ignored).

    ``unused``: the dests of the command's options that the mode does not read. An option counts as given when its
    value differs from its default. ``a._parser`` is the command's parser (:mod:`sam3_cradio.cli` sets it)."""
    unused = set(unused)
    given = []
    for action in a._parser._actions:
        if action.dest not in unused or action.default is argparse.SUPPRESS:
            continue
        if getattr(a, action.dest, action.default) != action.default:
            given.append(action.option_strings[0] if action.option_strings else action.dest)
    if given:
        raise ValueError(f'{", ".join(given)} {"does" if len(given) == 1 else "do"} not apply to {mode}; drop '
                         f'{"it" if len(given) == 1 else "them"}')
