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

from .config import DTYPES, BenchCommand, BenchConfig
from .fixture import Deviation, FixtureCase, FixtureCheck, bf16_fixture_check
from .measure import (
    MatmulPeak,
    PeakMemory,
    TimedCall,
    attention_flop_mapping,
    attention_flops,
    check_real,
    count_flops,
    interleave,
    matmul_throughput,
    op_class,
    op_profile,
    reset_hwm,
)
from .models import PELayout, cradio_trunk, pe_layout, pe_trunk
from .plan import plan_rows
from .report import format_plan, format_table, plot_latency, write_outputs
from .result import BenchResult, MatmulReport
from .rows import EncoderResult, InferenceResult, Measurement, Ratios, Row, RowKey, RowTable, add_ratios
from .runner import run_benchmark, run_cli

__all__ = [
    'BenchConfig', 'BenchCommand', 'DTYPES', 'run_cli', 'run_benchmark', 'plan_rows',
    'Row', 'RowKey', 'RowTable', 'Measurement', 'EncoderResult', 'InferenceResult', 'Ratios', 'add_ratios',
    'BenchResult', 'MatmulReport', 'MatmulPeak', 'FixtureCheck', 'FixtureCase', 'Deviation', 'bf16_fixture_check',
    'attention_flops', 'attention_flop_mapping', 'count_flops', 'PeakMemory', 'reset_hwm', 'matmul_throughput',
    'TimedCall', 'check_real', 'interleave', 'op_class', 'op_profile', 'PELayout', 'pe_layout', 'pe_trunk', 'cradio_trunk',
    'format_table', 'format_plan', 'plot_latency', 'write_outputs',
]
