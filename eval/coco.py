"""COCO text prompts: mask AP and box AP. ``python eval/coco.py ...`` = ``sam3-cradio eval coco ...``
(options: ``--help``; torchrun works too). The code lives in ``sam3_cradio/evaluation/commands/coco.py``."""
import sys

from sam3_cradio.cli import main

if __name__ == '__main__':
    sys.exit(main(['eval', 'coco', *sys.argv[1:]]))
