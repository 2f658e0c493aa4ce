"""Speed and memory: C-RADIOv4 (global and ViTDet windows) against SAM3's PE at the same token grid.

The same as ``sam3-cradio bench`` (library: ``sam3_cradio.bench``; design notes: ``docs/benchmark.md``).

    # full size on a GPU: fp32 and bf16, with whole-image inference
    python eval/bench.py --device cuda --dtype fp32 bf16 --inference --repeats 10 --warmup 3 --json runs/bench/gpu.json
    # C-RADIO alone, off-grid windows at the nearest allowed size
    python eval/bench.py --no-pe --variants h so400m --sizes 512 1152 --windows global 8 12 24 --off-grid nearest
    # every row type in seconds (smoke runs)
    python eval/bench.py --tiny --dtype fp32 bf16 --inference --json /tmp/bench_tiny.json
"""
from __future__ import annotations

import sys

from sam3_cradio.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    return cli_main(['bench', *(sys.argv[1:] if argv is None else argv)])


if __name__ == '__main__':
    sys.exit(main())
