"""DAVIS 2017 / SA-V J&F from first-frame masks. ``python eval/vos.py ...`` = ``sam3-cradio eval vos ...``
(options: ``--help``; torchrun works too). The code lives in ``sam3_cradio/evaluation/commands/vos.py``."""
import sys

from sam3_cradio.cli import main

if __name__ == '__main__':
    sys.exit(main(['eval', 'vos', *sys.argv[1:]]))
