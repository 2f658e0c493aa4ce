"""``python -m sam3_cradio.distill ...`` (also ``torchrun --nproc_per_node=N -m sam3_cradio.distill ...``)."""
import sys

from .train import main_distill

if __name__ == '__main__':
    sys.exit(main_distill(sys.argv[1:]))
