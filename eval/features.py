"""C-RADIO vs PE feature fidelity, per window. ``python eval/features.py ...`` = ``sam3-cradio eval features ...``
(options: ``--help``; torchrun works too). The code lives in ``sam3_cradio/evaluation/commands/features.py``."""
import sys

from sam3_cradio.cli import run_command, setup_logging
from sam3_cradio.evaluation.cli import main

if __name__ == '__main__':
    setup_logging()
    sys.exit(run_command(main, ['features', *sys.argv[1:]]))
