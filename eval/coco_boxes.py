"""COCO box-prompted mIoU. ``python eval/coco_boxes.py ...`` = ``sam3-cradio eval coco-boxes ...``
(options: ``--help``; torchrun works too). The code lives in ``sam3_cradio/evaluation/commands/coco_boxes.py``."""
import sys

from sam3_cradio.cli import run_command, setup_logging
from sam3_cradio.evaluation.cli import main

if __name__ == '__main__':
    setup_logging()
    sys.exit(run_command(main, ['coco-boxes', *sys.argv[1:]]))
