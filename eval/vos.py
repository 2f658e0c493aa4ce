"""DAVIS 2017 / SA-V J&F from first-frame masks. ``python eval/vos.py ...`` = ``sam3-cradio eval vos ...``
(options: ``--help``; torchrun works too). The code lives in ``sam3_cradio/evaluation/commands/vos.py``."""
import sys

from sam3_cradio.cli import run_command, setup_logging
from sam3_cradio.evaluation.cli import main

if __name__ == '__main__':
    setup_logging()
    sys.exit(run_command(main, ['vos', *sys.argv[1:]]))
