"""Thin entry point from a source checkout: ``python demo/app.py [options]`` (or ``python -m demo.app``) is
``sam3-cradio demo [options]``; the demo lives in the package, :mod:`sam3_cradio.demo`."""
import sys

from sam3_cradio.cli import main

if __name__ == '__main__':
    sys.exit(main(['demo', *sys.argv[1:]]))
