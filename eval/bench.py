"""Speed and memory: C-RADIOv4-H / SO400M (global and ViTDet windows) against SAM3's PE-L+, side by side.

Random weights from the real architecture numbers (no download). One process; within each size level the
configurations are interleaved (A, B, A, B, ...) after warm-up. PE-L+ runs at 14 px per token, C-RADIOv4 at 16,
so each size level is one token grid (C-RADIO 1152 px / PE 1008 px: 72 x 72; 576 / 504: 36 x 36). Per row:
encoder latency (median, p95, min-max), peak memory (CUDA max allocated; CPU peak RSS), parameters, FLOPs,
achieved GFLOP/s and its fraction of this machine's fp32 / bf16 torch.mm throughput, each as a ratio to PE at the
same grid, ViTDet rows also against global attention; with --inference, whole-image latency with a text prompt.
Writes JSON, a markdown table (.md) and a PNG plot (latency vs window, one line per backbone, PE as reference).
The library is ``sam3_cradio.benchmark``; ``sam3-cradio bench`` takes the same options.

    # full size on a GPU: fp32 and bf16, with whole-image inference
    python eval/bench.py --device cuda --dtype fp32 bf16 --inference --repeats 10 --warmup 3 --json runs/bench/gpu.json
    # the earlier C-RADIO-only table (off-grid windows at the nearest allowed size)
    python eval/bench.py --no-pe --variants h so400m --sizes 512 1152 --windows global 8 12 24 --off-grid nearest
    # every row type in seconds (tests, smoke runs)
    python eval/bench.py --tiny --dtype fp32 bf16 --inference --json /tmp/bench_tiny.json
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from sam3_cradio.benchmark import add_arguments, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_arguments(p)


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    a = build_parser().parse_args(argv)
    try:
        print(run_cli(a))
    except (ValueError, FileNotFoundError) as e:  # user errors: one clear line
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
