"""C-RADIO vs PE feature fidelity, per window. ``python eval/features.py ...`` = ``sam3-cradio eval features ...``
(options: ``--help``; torchrun works too). The code lives in ``sam3_cradio/evaluation/commands/features.py``."""
import sys

from sam3_cradio.cli import main

if __name__ == '__main__':
    sys.exit(main(['eval', 'features', *sys.argv[1:]]))
