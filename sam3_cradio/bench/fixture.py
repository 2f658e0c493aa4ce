"""bf16 (what ``--dtype bf16`` runs) against float32 on NVIDIA's C-RADIO tiny fixture: deviation and speed-up."""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .measure import sync

__all__ = ['Deviation', 'FixtureCase', 'FixtureCheck', 'bf16_fixture_check']

PARTS = ('backbone', 'sam3')


@dataclass(kw_only=True)
class Deviation:
    """Features against reference features: max |diff|, relative L2 error, mean cosine over tokens."""
    max_abs: float
    rel_err: float
    cos: float

    @classmethod
    def of(cls, a: torch.Tensor, ref: torch.Tensor) -> Deviation:
        a, ref = a.float(), ref.float()
        return cls(max_abs=float((a - ref).abs().max()),
                   rel_err=float((a - ref).norm() / ref.norm().clamp_min(1e-12)),
                   cos=float(torch.nn.functional.cosine_similarity(a, ref, dim=-1).mean()))


@dataclass(kw_only=True)
class FixtureCase:
    """One fixture case: bf16 deviation of the backbone and ``sam3`` adaptor features, the float32 path against
    NVIDIA's stored features, and the medians of both."""
    window: int | None
    input: list[int]
    backbone: Deviation
    sam3: Deviation
    fp32_vs_reference_max_abs: float
    fp32_median_s: float
    bf16_median_s: float
    speedup: float


@dataclass(kw_only=True)
class FixtureCheck:
    checkpoint: str
    device: str
    cases: dict[str, FixtureCase]
    worst: dict[str, Deviation]       # per part: the largest errors and the smallest cosine over the cases
    speedup_median: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FixtureCheck:
        cases = {k: FixtureCase(**{**c, **{p: Deviation(**c[p]) for p in PARTS}}) for k, c in d['cases'].items()}
        return cls(**{**d, 'cases': cases, 'worst': {p: Deviation(**v) for p, v in d['worst'].items()}})


def bf16_fixture_check(fixture: Path, device: torch.device | str, repeats: int = 5, warmup: int = 1) -> FixtureCheck:
    """bf16 vs float32 on the NVIDIA fixture (``sam3_cradio.assets.CRADIO_TINY_DIR``), per case.

    Loads ``fixture/model.pth.tar`` (with the ``sam3`` adaptor) through ``load_cradio`` and runs each case's input
    from ``fixture/reference.safetensors`` (global and ViTDet windows, as in ``cases.json``) in float32 and as
    ``--dtype bf16`` does (a copy with bf16 weights, under bf16 autocast), interleaved. Deviations are of the bf16 backbone and ``sam3`` adaptor features from the float32
    ones; ``fp32_vs_reference_max_abs`` checks the float32 path against NVIDIA's stored features.
    """
    from safetensors.torch import load_file

    from ..cradio import load_cradio

    device = torch.device(device)
    fixture = Path(fixture)
    ckpt, ref_file, cases_file = (fixture / n for n in ('model.pth.tar', 'reference.safetensors', 'cases.json'))
    missing = [str(p) for p in (ckpt, ref_file, cases_file) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f'bf16 fixture check: missing {missing}; pass the cradio_tiny fixture folder')
    enc = load_cradio(ckpt, adaptor_names=['sam3'], device=device)
    encoders = {'fp32': enc, 'bf16': copy.deepcopy(enc).to(torch.bfloat16)}
    ref = load_file(str(ref_file))
    cases: dict[str, FixtureCase] = {}
    for name, case in json.loads(cases_file.read_text())['cases'].items():
        if f'{name}/input' not in ref or f'{name}/features' not in ref:
            continue
        for e in encoders.values():
            e.set_window_size(case.get('window'))
        x = ref[f'{name}/input'].to(device)
        times: dict[str, list[float]] = {'fp32': [], 'bf16': []}
        outs = {}
        with torch.inference_mode():
            for i in range(warmup + repeats):
                for dt in ('fp32', 'bf16'):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dt == 'bf16'):
                        sync(device)
                        t0 = time.perf_counter()
                        outs[dt] = encoders[dt](x)
                        sync(device)
                    if i >= warmup:
                        times[dt].append(time.perf_counter() - t0)
        fp32_s, bf16_s = float(np.median(times['fp32'])), float(np.median(times['bf16']))
        cases[name] = FixtureCase(
            window=case.get('window'), input=list(x.shape),
            backbone=Deviation.of(outs['bf16']['backbone'].features, outs['fp32']['backbone'].features),
            sam3=Deviation.of(outs['bf16']['sam3'].features, outs['fp32']['sam3'].features),
            fp32_vs_reference_max_abs=float(
                (outs['fp32']['backbone'].features.float().cpu() - ref[f'{name}/features']).abs().max()),
            fp32_median_s=fp32_s, bf16_median_s=bf16_s, speedup=fp32_s / bf16_s)
    if not cases:
        raise ValueError(f'{ref_file} holds no <case>/input with <case>/features; pass the cradio_tiny fixture folder')
    vals = list(cases.values())
    worst = {part: Deviation(max_abs=max(getattr(v, part).max_abs for v in vals),
                             rel_err=max(getattr(v, part).rel_err for v in vals),
                             cos=min(getattr(v, part).cos for v in vals)) for part in PARTS}
    return FixtureCheck(checkpoint=str(ckpt), device=str(device), cases=cases, worst=worst,
                        speedup_median=float(np.median([v.speedup for v in vals])))
