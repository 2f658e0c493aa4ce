"""COCO box-prompted mIoU. ``python eval/coco_boxes.py ...`` = ``sam3-cradio eval coco-boxes ...``
(options: ``--help``; torchrun works too). The code lives in ``sam3_cradio/evaluation/commands/coco_boxes.py``."""
import sys

from sam3_cradio.cli import main

if __name__ == '__main__':
    sys.exit(main(['eval', 'coco-boxes', *sys.argv[1:]]))
