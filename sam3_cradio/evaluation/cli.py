"""``sam3-cradio eval NAME ...``: dispatch to the evaluation commands (:mod:`.commands`)."""
from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

__all__ = ['EVALUATIONS', 'main', 'run_interruptible']

#: name -> (module under sam3_cradio.evaluation.commands, one-line summary)
EVALUATIONS: dict[str, tuple[str, str]] = {
    'coco': ('coco', 'COCO instance segmentation from text prompts: mask AP and box AP'),
    'coco-boxes': ('coco_boxes', 'COCO box-prompted mIoU (EfficientViT-SAM protocol), by object size'),
    'saco-gold': ('saco_gold', 'SA-Co/Gold cgF1 per subset and averaged'),
    'vos': ('vos', 'semi-supervised video object segmentation (DAVIS 2017, SA-V): J&F'),
    'features': ('features', "C-RADIO's sam3 adaptor features vs SAM3's PE, per window"),
}


def _usage() -> str:
    width = max(map(len, EVALUATIONS))
    lines = ['usage: sam3-cradio eval NAME [options]      (sam3-cradio eval NAME --help for its options)', '',
             'evaluations:']
    lines += [f'  {name:{width}s}  {summary}' for name, (_, summary) in EVALUATIONS.items()]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``sam3-cradio eval NAME [options]``; ``argv`` starts with the evaluation's name.

    No name prints the list of evaluations (exit 2; ``--help``: exit 0). User errors raise ``ValueError`` /
    ``FileNotFoundError`` for the caller's :func:`sam3_cradio.cli.run_command` to print in one line. Ctrl-C
    prints one line ("interrupted after N of M ...; run the same command to resume") and exits 130.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (['-h'], ['--help']):
        print(_usage())
        return 0
    if not argv:
        print(_usage(), file=sys.stderr)
        return 2
    name = argv[0].replace('_', '-')  # the script names (coco_boxes) work too
    if name not in EVALUATIONS:
        raise ValueError(f'unknown evaluation {argv[0]!r}; choose one of: {", ".join(EVALUATIONS)} '
                         '(sam3-cradio eval NAME --help)')
    return run_interruptible(lambda: importlib.import_module(f'{__package__}.commands.{EVALUATIONS[name][0]}')
                             .main(argv[1:]))


def run_interruptible(fn: Callable[[], int]) -> int:
    """``fn()``, with Ctrl-C ending in one line on stderr (the runner's "interrupted after N of M ...; run the
    same command to resume", or "interrupted") and exit status 130 instead of a traceback."""
    try:
        return fn()
    except KeyboardInterrupt as e:
        print(f'{e or "interrupted"}', file=sys.stderr)
        return 130
