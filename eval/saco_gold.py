"""SA-Co/Gold cgF1. ``python eval/saco_gold.py ...`` = ``sam3-cradio eval saco-gold ...``
(options: ``--help``; torchrun works too). The code lives in ``sam3_cradio/evaluation/commands/saco_gold.py``."""
import sys

from sam3_cradio.cli import main

if __name__ == '__main__':
    sys.exit(main(['eval', 'saco-gold', *sys.argv[1:]]))
