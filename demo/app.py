"""Thin entry point from a source checkout: ``python -m demo.app [options]`` is ``sam3-cradio demo [options]``
(the demo lives in the package: :mod:`sam3_cradio.demo.app`)."""
import sys

from sam3_cradio.demo.app import main

if __name__ == '__main__':
    sys.exit(main())
