"""Encoder latency benchmark: full-size C-RADIOv4-H / SO400M (random weights, real architecture numbers).

Times the encoder as SAM3 uses it (backbone + `sam3` adaptor features) at each input size, with global attention
and ViTDet windows, interleaving the configurations round by round so machine noise hits all of them alike.
Prints a table (median and spread over repeats, and each window's ratio to global attention at the same size)
and writes JSON.

    python eval/bench.py --variants h so400m --sizes 512 1152 --windows global 8 12 24 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from sam3_cradio.cradio import RELEASES, create_cradio, resolve_release_name


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def bench_encoder(
        variant: str,
        sizes: List[int],
        windows: List[Optional[int]],
        repeats: int = 3,
        warmup: int = 1,
        batch: int = 1,
        device: str = 'cpu',
        dtype: str = 'fp32',
) -> List[Dict]:
    dev = torch.device(device)
    name = resolve_release_name(variant)
    model = create_cradio(name, adaptor_names=('sam3',), device=dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == 'bf16')
    rows = []
    for size in sizes:
        configs = []
        for window in windows:
            model.set_window_size(window)
            res = model.nearest_supported_resolution(size, size)
            configs.append({'window': window, 'resolution': res, 'times': []})
        x = {c['resolution']: torch.rand(batch, 3, *c['resolution'], device=dev) for c in configs}
        with torch.inference_mode(), autocast:
            for round_ in range(warmup + repeats):
                for c in configs:  # interleaved: A, B, C, A, B, C, ...
                    model.set_window_size(c['window'])
                    _sync(dev)
                    t0 = time.perf_counter()
                    model.forward_adaptor_features(x[c['resolution']], 'sam3')
                    _sync(dev)
                    if round_ >= warmup:
                        c['times'].append(time.perf_counter() - t0)
                    print(f'  {name} {size}px W={c["window"]} round {round_}: {time.perf_counter() - t0:.2f}s',
                          file=sys.stderr, flush=True)
        base = statistics.median(configs[0]['times']) if configs[0]['window'] is None else None
        for c in configs:
            med = statistics.median(c['times'])
            rows.append({
                'variant': name, 'size': size, 'window': c['window'], 'resolution': list(c['resolution']),
                'median_s': med, 'min_s': min(c['times']), 'max_s': max(c['times']), 'times_s': c['times'],
                'ratio_to_global': med / base if base else None,
            })
    return rows


def format_table(rows: List[Dict]) -> str:
    lines = ['| model | size | window | input | median (s) | min-max (s) | vs global |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        ratio = f'{r["ratio_to_global"]:.2f}x' if r['ratio_to_global'] is not None else '-'
        lines.append(
            f'| {r["variant"]} | {r["size"]} | {r["window"] or "global"} | {r["resolution"][0]}x{r["resolution"][1]} '
            f'| {r["median_s"]:.2f} | {r["min_s"]:.2f}-{r["max_s"]:.2f} | {ratio} |')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--variants', nargs='+', default=['h', 'so400m'], help='h, so400m or release names')
    p.add_argument('--sizes', nargs='+', type=int, default=[512, 1152])
    p.add_argument('--windows', nargs='+', default=['global', '8', '12', '24'], help="'global' or window sizes")
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--device', default='cpu')
    p.add_argument('--dtype', choices=['fp32', 'bf16'], default='fp32')
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch decides)')
    p.add_argument('--json', type=Path, default=Path('bench_encoder.json'))
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    windows = [None if w == 'global' else int(w) for w in a.windows]
    if windows[0] is not None:
        windows.insert(0, None)  # global first: every ratio is against it
    rows = []
    for v in a.variants:
        name = resolve_release_name(v if v.startswith('c-radio') else f'c-radio_v4-{v}')
        if name is None:
            p.error(f'unknown variant {v!r}; known: {sorted(RELEASES)}')
        rows += bench_encoder(name, a.sizes, windows, a.repeats, a.warmup, a.batch, a.device, a.dtype)
    meta = {'machine': platform.processor() or platform.machine(), 'torch': torch.__version__,
            'threads': torch.get_num_threads(), 'device': a.device, 'dtype': a.dtype, 'batch': a.batch}
    if a.device.startswith('cuda'):
        meta['gpu'] = torch.cuda.get_device_name()
    a.json.write_text(json.dumps({'meta': meta, 'rows': rows}, indent=1))
    print(f'{meta}\n{format_table(rows)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
