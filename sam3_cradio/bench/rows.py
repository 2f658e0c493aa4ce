"""Typed results: one :class:`Row` per backbone x window x size level x dtype, and the lookups between rows.

A row is found by its :class:`RowKey` (backbone, window, size, dtype) through a :class:`RowTable`, never by
matching string keys; :meth:`Row.to_dict` / :meth:`Row.from_dict` are the JSON form.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from ..registry import GLOBAL, Window

__all__ = ['Measurement', 'EncoderResult', 'InferenceResult', 'Ratios', 'Row', 'RowKey', 'RowTable', 'add_ratios']

Kind = Literal['pe', 'cradio']
Status = Literal['ok', 'skipped']


@dataclass(kw_only=True)
class Measurement:
    """Latency over the timed rounds and the largest peak memory of one call above what was in use before it."""
    median_s: float
    p95_s: float
    min_s: float
    max_s: float
    iqr_s: float
    times_s: list[float]
    peak_mem_bytes: int
    peak_mem_method: str

    @staticmethod
    def stats(times: Sequence[float], peaks: Sequence[int], method: str) -> dict[str, Any]:
        """The fields of a measurement from per-round times and peaks (for the subclasses' constructors)."""
        if not times:
            raise ValueError('a measurement needs at least one timed round')
        t = np.asarray(times, dtype=np.float64)
        q25, q75 = np.percentile(t, [25, 75])
        return {'median_s': float(np.median(t)), 'p95_s': float(np.percentile(t, 95)), 'min_s': float(t.min()),
                'max_s': float(t.max()), 'iqr_s': float(q75 - q25), 'times_s': [float(x) for x in t],
                'peak_mem_bytes': int(max(peaks)), 'peak_mem_method': method}


@dataclass(kw_only=True)
class Ratios:
    """This row's numbers over another row's (PE at the same grid and dtype, or the same model with global
    attention); None where the other row lacks the number."""
    latency: float | None = None
    peak_mem: float | None = None
    params: float | None = None
    flops: float | None = None


@dataclass(kw_only=True)
class EncoderResult(Measurement):
    """The trunk as SAM3 calls it: latency, memory, achieved GFLOP/s and its fraction of this run's best
    ``torch.mm`` throughput per dtype (``fraction_of_mm['fp32']``)."""
    gflops_per_s: float
    fraction_of_mm: dict[str, float] = field(default_factory=dict)
    # --op-profile: per op class ('linear', 'attention', 'other') of one profiled call: 'seconds', 'share' of the
    # profiled time, 'gflop', 'gflops_per_s' and 'fraction_of_mm' (of this row's dtype's matmul peak)
    ops: dict[str, dict[str, float]] | None = None


@dataclass(kw_only=True)
class InferenceResult(Measurement):
    """Whole-image inference with a text prompt (``set_image`` + ``predict_text``) on the full SAM3 model."""
    params: int
    text: str
    image_hw: tuple[int, int]
    confidence_threshold: float
    batch: int = 1
    ratio_to_pe: Ratios | None = None
    ratio_to_global: float | None = None    # latency only
    speedup_vs_fp32: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InferenceResult:
        ratio = d.get('ratio_to_pe')
        return cls(**{**d, 'image_hw': tuple(d['image_hw']), 'ratio_to_pe': Ratios(**ratio) if ratio else None})


class RowKey(NamedTuple):
    """What makes a row: at most one per key in a run."""
    backbone: str
    window: Window
    size: int
    dtype: str


@dataclass(kw_only=True)
class Row:
    """One measured (or skipped) configuration.

    ``size`` names the size level by its C-RADIO side in px and ``grid`` its token grid; ``input`` is what this
    backbone ran at (PE: ``grid * 14``; an off-grid C-RADIO window: the nearest size it allows, another grid).
    ``window`` is 'global' or the window in tokens (PE: its own fixed window). ``windowed_grid`` is the grid PE
    pads to in its windowed blocks (the grid itself for C-RADIO).
    """
    backbone: str
    label: str
    kind: Kind
    size: int
    grid: int
    dtype: str
    batch: int
    window: Window
    input: tuple[int, int] | None
    windowed_grid: int
    windowed_blocks: int | None = None
    global_blocks: int | None = None
    status: Status = 'ok'
    reason: str | None = None
    off_grid: bool = False
    params: int | None = None
    flops: int | None = None
    flops_by_op: dict[str, int] = field(default_factory=dict)
    encoder: EncoderResult | None = None
    inference: InferenceResult | None = None
    inference_skipped: str | None = None
    ratio_to_pe: Ratios | None = None
    ratio_to_global: Ratios | None = None
    speedup_vs_fp32: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == 'ok'

    @property
    def key(self) -> RowKey:
        return RowKey(self.backbone, self.window, self.size, self.dtype)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d['input'] = list(self.input) if self.input is not None else None
        if self.inference is not None:
            d['inference']['image_hw'] = list(self.inference.image_hw)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Row:
        def ratios(x: dict[str, Any] | None) -> Ratios | None:
            return Ratios(**x) if x else None

        return cls(**{
            **d,
            'input': tuple(d['input']) if d.get('input') is not None else None,
            'encoder': EncoderResult(**d['encoder']) if d.get('encoder') else None,
            'inference': InferenceResult.from_dict(d['inference']) if d.get('inference') else None,
            'ratio_to_pe': ratios(d.get('ratio_to_pe')),
            'ratio_to_global': ratios(d.get('ratio_to_global')),
        })


class RowTable:
    """The measured rows of a run by key, and each size level's PE row (the reference of its ratios)."""

    def __init__(self, rows: Iterable[Row]) -> None:
        self._rows: dict[RowKey, Row] = {}
        self._pe: dict[tuple[int, str], Row] = {}
        for r in rows:
            if not r.ok:
                continue
            if r.key in self._rows:
                raise ValueError(f'two rows for {r.key}')
            self._rows[r.key] = r
            if r.kind == 'pe':
                self._pe[(r.size, r.dtype)] = r

    def get(self, backbone: str, window: Window, size: int, dtype: str) -> Row | None:
        return self._rows.get(RowKey(backbone, window, size, dtype))

    def pe(self, size: int, dtype: str) -> Row | None:
        return self._pe.get((size, dtype))

    def global_of(self, row: Row) -> Row | None:
        """The same C-RADIO model at the same size and dtype with global attention."""
        return self.get(row.backbone, GLOBAL, row.size, row.dtype) if row.kind == 'cradio' else None

    def fp32_of(self, row: Row) -> Row | None:
        return self.get(row.backbone, row.window, row.size, 'fp32')


def _ratio(a: float | None, b: float | None) -> float | None:
    return float(a) / float(b) if a is not None and b else None


def add_ratios(rows: Sequence[Row]) -> None:
    """Fill ``ratio_to_pe``, ``ratio_to_global`` and ``speedup_vs_fp32`` (encoder and inference) of measured rows.

    Off-grid rows (another grid) get no ratio to PE or to global attention; their bf16 speed-up is against the
    same off-grid fp32 row.
    """
    table = RowTable(rows)
    for r in rows:
        if not r.ok or r.encoder is None:
            continue
        enc, inf = r.encoder, r.inference
        pe = table.pe(r.size, r.dtype)
        if pe is not None and pe.encoder is not None and not r.off_grid:
            r.ratio_to_pe = Ratios(latency=_ratio(enc.median_s, pe.encoder.median_s),
                                   peak_mem=_ratio(enc.peak_mem_bytes, pe.encoder.peak_mem_bytes),
                                   params=_ratio(r.params, pe.params), flops=_ratio(r.flops, pe.flops))
            if inf is not None and pe.inference is not None:
                inf.ratio_to_pe = Ratios(latency=_ratio(inf.median_s, pe.inference.median_s),
                                         peak_mem=_ratio(inf.peak_mem_bytes, pe.inference.peak_mem_bytes),
                                         params=_ratio(inf.params, pe.inference.params))
        glob = table.global_of(r)
        if glob is not None and glob.encoder is not None and not r.off_grid:
            r.ratio_to_global = Ratios(latency=_ratio(enc.median_s, glob.encoder.median_s),
                                       peak_mem=_ratio(enc.peak_mem_bytes, glob.encoder.peak_mem_bytes),
                                       flops=_ratio(r.flops, glob.flops))
            if inf is not None and glob.inference is not None:
                inf.ratio_to_global = _ratio(inf.median_s, glob.inference.median_s)
        fp32 = table.fp32_of(r) if r.dtype != 'fp32' else None
        if fp32 is not None and fp32.encoder is not None:
            r.speedup_vs_fp32 = _ratio(fp32.encoder.median_s, enc.median_s)
            if inf is not None and fp32.inference is not None:
                inf.speedup_vs_fp32 = _ratio(fp32.inference.median_s, inf.median_s)
