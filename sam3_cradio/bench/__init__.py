"""Speed and memory benchmark: C-RADIO trunks (global attention and ViTDet windows) against SAM3's Perception
Encoder at the same token grid, with random weights (no download). Design notes and the JSON schema:
``docs/benchmark.md``.

    from sam3_cradio.bench import BenchConfig, run_benchmark, write_outputs

    result = run_benchmark(BenchConfig(tiny=True, dtypes=('fp32', 'bf16'), inference=True))
    write_outputs(result, Path('runs/bench/bench.json'))   # .json, .md table, .png plot

Modules: :mod:`.config` (what to run, command-line options), :mod:`.plan` (the rows before anything is built),
:mod:`.models` (trunks and SAM3 models through the registry and ``build_trunk``), :mod:`.measure` (FLOPs, memory,
timing), :mod:`.fixture` (bf16 check on NVIDIA's fixture), :mod:`.rows` / :mod:`.result` (typed results),
:mod:`.runner` (the run), :mod:`.report` (table, plot, JSON).
"""
from __future__ import annotations

from .._lazy import lazy_getattr

# Imported on first use: the command line reads the options of a command without loading torch.
_LAZY = {
    'DTYPES': 'config',
    'BenchCommand': 'config',
    'BenchConfig': 'config',
    'Deviation': 'fixture',
    'FixtureCase': 'fixture',
    'FixtureCheck': 'fixture',
    'bf16_fixture_check': 'fixture',
    'MatmulPeak': 'measure',
    'PeakMemory': 'measure',
    'TimedCall': 'measure',
    'attention_flop_mapping': 'measure',
    'attention_flops': 'measure',
    'check_real': 'measure',
    'count_flops': 'measure',
    'interleave': 'measure',
    'matmul_throughput': 'measure',
    'op_class': 'measure',
    'op_profile': 'measure',
    'reset_hwm': 'measure',
    'PELayout': 'models',
    'cradio_trunk': 'models',
    'pe_layout': 'models',
    'pe_trunk': 'models',
    'plan_rows': 'plan',
    'format_plan': 'report',
    'format_table': 'report',
    'plot_latency': 'report',
    'write_outputs': 'report',
    'BenchResult': 'result',
    'MatmulReport': 'result',
    'EncoderResult': 'rows',
    'InferenceResult': 'rows',
    'Measurement': 'rows',
    'Ratios': 'rows',
    'Row': 'rows',
    'RowKey': 'rows',
    'RowTable': 'rows',
    'add_ratios': 'rows',
    'run_benchmark': 'runner',
    'run_cli': 'runner',
}

__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = list(_LAZY)
