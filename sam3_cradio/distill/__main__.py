"""``python -m sam3_cradio.distill ...`` (also ``torchrun --nproc_per_node=N -m sam3_cradio.distill ...``) is
``sam3-cradio distill ...``: it runs the command line as its own ``__main__``."""
import runpy
import sys

if __name__ == '__main__':
    sys.argv[1:1] = ['distill']
    runpy.run_module('sam3_cradio.cli', run_name='__main__', alter_sys=True)
