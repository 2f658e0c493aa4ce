"""SA-Co/Gold cgF1. ``python eval/saco_gold.py ...`` = ``sam3-cradio eval saco-gold ...``
(options: ``--help``; torchrun works too). The code lives in ``sam3_cradio/evaluation/commands/saco_gold.py``."""
import sys

from sam3_cradio.cli import run_command, setup_logging
from sam3_cradio.evaluation.cli import main

if __name__ == '__main__':
    setup_logging()
    sys.exit(run_command(main, ['saco-gold', *sys.argv[1:]]))
