"""The speed and memory benchmark (``sam3_cradio.benchmark``, ``eval/bench.py``, ``sam3-cradio bench``) on tiny
configurations: every row is written, with FLOPs, parameters, memory and ratios; the plot is a PNG. Nothing here
asserts a time: only structure, FLOP counts (exact) and memory accounting."""
from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from conftest import CRADIO_TINY
from sam3_cradio import benchmark as bm

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = CRADIO_TINY
SIZES = {192: 12, 96: 6}           # C-RADIO px -> grid (PE tiny: 168 and 84 px)
WINDOWS = [None, 2, 3, 4, 6]
DTYPES = ['fp32', 'bf16']
SDPA_CPU = 'aten._scaled_dot_product_flash_attention_for_cpu'


def _manual_attention(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1) @ v


@pytest.mark.parametrize('q_shape,k_shape,v_shape', [
    ((2, 3, 10, 8), (2, 3, 12, 8), (2, 3, 12, 8)),     # cross-attention, Lq != Lk
    ((4, 2, 16, 32), (4, 2, 16, 32), (4, 2, 16, 16)),  # Dv != D
])
def test_attention_flops_match_counted_matmuls(q_shape, k_shape, v_shape):
    q, k, v = torch.randn(q_shape), torch.randn(k_shape), torch.randn(v_shape)
    with FlopCounterMode(display=False) as manual:
        ref = _manual_attention(q, k, v)
    expected = manual.get_total_flops()
    assert expected > 0 and bm.attention_flops(q_shape, k_shape, v_shape) == expected
    b, h, lq, d = q_shape
    if d == v_shape[-1]:
        assert expected == 4 * b * h * lq * k_shape[-2] * d
    # F.sdpa on CPU: equal head dims go to the flash kernel, which torch alone counts as 0; other shapes go to the
    # math path, whose matmuls torch counts. With our formula both count as the two matmuls, never twice.
    with FlopCounterMode(display=False) as plain:
        out = F.scaled_dot_product_attention(q, k, v)
    with FlopCounterMode(display=False, custom_mapping=bm.attention_flop_mapping()) as ours:
        F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert plain.get_total_flops() == (0 if d == v_shape[-1] else expected)
    assert ours.get_total_flops() == expected


def test_count_flops_fake_equals_real():
    """Counting on fake tensors (no compute) gives the same FLOPs as a real forward, attention included."""
    from sam3_cradio.cradio import create_cradio
    from sam3_cradio.trunk import CRadioTrunk

    trunk = CRadioTrunk(create_cradio('cradio_test', window_size=2))
    x = torch.rand(1, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        before = trunk(x)[0]
    fake, fake_ops = bm.count_flops(trunk, x, fake=True)
    real, real_ops = bm.count_flops(trunk, x, fake=False)
    assert fake == real > 0 and fake_ops == real_ops and real_ops[SDPA_CPU] > 0
    # the fake pass leaves nothing fake behind (the encoder caches its position embedding)
    with torch.no_grad():
        after = trunk(x)
    bm._check_real(after, bm._Case({'backbone': 'cradio_test'}, 'encoder', lambda: None, lambda: None, 'fp32'))
    torch.testing.assert_close(after[0], before, rtol=0, atol=0)


def test_timings_of_fake_outputs_are_refused():
    from torch._subclasses.fake_tensor import FakeTensorMode

    case = bm._Case({'backbone': 'x'}, 'encoder', lambda: None, lambda: None, 'fp32')
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(torch.zeros(2))
    with pytest.raises(RuntimeError, match='fake tensors'):
        bm._check_real([fake], case)


@pytest.mark.parametrize('method', ['vmhwm', 'sampler'])
def test_peak_memory_sees_an_allocation(method):
    if method == 'vmhwm' and not bm._reset_hwm():
        pytest.skip('VmHWM cannot be reset on this system')
    n = 64 * 2 ** 20
    mem = bm.PeakMemory(torch.device('cpu'), method=method)
    with mem:
        buf = torch.ones(n // 4)  # written, so resident
        time.sleep(0.05)          # long enough for the sampler to see it
        del buf
    assert mem.method == method and mem.peak_bytes >= 0.9 * n


def test_plan_full_size_defaults():
    """The full-size plan (no model built): PE-L+ at 1008 / 504 px, H and SO400M at 1152 / 576 px, global and
    6, 8, 12, 18, 24; 8 and 24 do not divide the 36 grid; PE pads 36 to 48 in its 28 windowed blocks."""
    rows = bm.plan_rows(bm.BenchConfig())
    assert len(rows) == 2 * (1 + 2 * 6)
    pe = [r for r in rows if r['kind'] == 'pe']
    assert [(r['input'], r['grid'], r['window'], r['windowed_grid'], r['windowed_blocks']) for r in pe] == [
        ([1008, 1008], 72, 24, 72, 28), ([504, 504], 36, 24, 48, 28)]
    skipped = {(r['backbone'], r['size'], r['window']) for r in rows if r['status'] == 'skipped'}
    assert skipped == {(b, 576, w) for b in ('cradio_v4_h', 'cradio_v4_so400m') for w in (8, 24)}
    assert all(r['input'] == [1152, 1152] for r in rows if r['kind'] == 'cradio' and r['size'] == 1152)


def test_eval_bench_old_command_plan(capsys):
    """The earlier encoder-only command still parses; with --off-grid nearest, windows 12 / 24 at 512 px move to
    576 / 384 px as they did."""
    spec = importlib.util.spec_from_file_location('eval_bench', ROOT / 'eval' / 'bench.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = ['--variants', 'h', 'so400m', '--sizes', '512', '1152', '--windows', 'global', '8', '12', '24', '--dry-run']
    assert mod.main(argv + ['--no-pe', '--off-grid', 'nearest']) == 0
    out = capsys.readouterr().out
    assert '| C-RADIOv4-H | 576x576 | 36 | 12 | fp32 |' in out and '| C-RADIOv4-SO400M | 384x384 | 24 | 24 |' in out
    assert '16 rows to measure' in out
    assert mod.main(argv) == 0
    out = capsys.readouterr().out
    assert '| PE-L+ | 448x448 | 32 | 24 (own) |' in out and 'skipped: window 12 does not divide the 32x32 grid' in out


@pytest.mark.parametrize('kw,match', [
    ({'sizes': [500]}, 'multiple of the C-RADIO patch size 16; nearest: 496'),
    ({'dtypes': ['fp16']}, 'dtypes must be among'),
    ({'backbones': ['vit_b']}, 'unknown C-RADIO backbone'),
    ({'windows': [0]}, 'positive ints'),
])
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        bm.BenchConfig(**kw).resolved()


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    """``sam3-cradio bench --tiny`` with fp32 and bf16 and whole-image inference (about 15 s on one thread)."""
    from sam3_cradio.cli import main

    out = tmp_path_factory.mktemp('bench') / 'bench.json'
    argv = ['bench', '--tiny', '--dtype', *DTYPES, '--inference', '--repeats', '2', '--warmup', '0',
            '--threads', '1', '--fixture', str(FIXTURE), '--json', str(out)]
    assert main(argv) == 0
    torch.set_num_threads(2)
    return out, json.loads(out.read_text())


def _key(r):
    return r['backbone'], r['size'], r['window'] if r['kind'] == 'cradio' else 'own', r['dtype']


def test_tiny_rows_complete(tiny_run):
    _, result = tiny_run
    rows = result['rows']
    expected = {('pe', s, 'own', d) for s in SIZES for d in DTYPES}
    expected |= {('cradio_tiny', s, w, d) for s in SIZES for w in WINDOWS for d in DTYPES}
    assert sorted(map(str, map(_key, rows))) == sorted(map(str, expected))  # each exactly once
    skipped = {_key(r) for r in rows if r['status'] == 'skipped'}
    assert skipped == {('cradio_tiny', 96, 4, d) for d in DTYPES}
    for r in rows:
        if r['status'] != 'ok':
            assert 'does not divide the 6x6 grid' in r['reason']
            continue
        e = r['encoder']
        assert r['params'] > 0 and r['flops'] > 0 and r['flops_by_op'][SDPA_CPU] > 0
        assert len(e['times_s']) == 2 and e['min_s'] <= e['median_s'] <= e['max_s'] and e['median_s'] > 0
        assert e['peak_mem_bytes'] >= 0 and e['peak_mem_method'] in ('vmhwm', 'sampler')
        assert e['gflops_per_s'] > 0 and e['fraction_of_fp32_mm'] > 0 and e['fraction_of_bf16_mm'] > 0
        assert {'latency', 'peak_mem', 'params', 'flops'} <= set(r['ratio_to_pe'])
        assert all(r['ratio_to_pe'][k] > 0 for k in ('latency', 'params', 'flops'))
        inf = r['inference']
        assert inf['median_s'] > 0 and inf['params'] > r['params'] and inf['ratio_to_pe']['latency'] > 0
        if r['kind'] == 'pe':
            assert r['ratio_to_pe']['latency'] == 1.0 and inf['ratio_to_pe']['latency'] == 1.0
        else:
            assert r['ratio_to_global']['latency'] > 0 and inf['ratio_to_global'] > 0
            if r['window'] is None:
                assert r['ratio_to_global']['latency'] == 1.0
            else:  # windows only remove attention work
                assert r['ratio_to_global']['flops'] < 1.0
        if r['dtype'] == 'bf16':
            assert r['speedup_vs_fp32'] > 0 and inf['speedup_vs_fp32'] > 0
        else:
            assert 'speedup_vs_fp32' not in r


def test_tiny_pe_padding_counted(tiny_run):
    """PE tiny (4-token windows, 4 windowed and 4 global blocks, 3 heads of 64) pads the 6x6 grid to 8x8 in its
    windowed blocks, as PE-L+ pads 36 to 48; its attention FLOPs are those of the padded grid."""
    _, result = tiny_run
    for r in (r for r in result['rows'] if r['kind'] == 'pe'):
        g, pg = r['grid'], r['windowed_grid']
        assert pg == math.ceil(g / 4) * 4 and r['windowed_blocks'] == r['global_blocks'] == 4
        windowed = bm.attention_flops(((pg // 4) ** 2, 3, 16, 64), (1, 3, 16, 64), (1, 3, 16, 64))
        global_ = bm.attention_flops((1, 3, g * g, 64), (1, 3, g * g, 64), (1, 3, g * g, 64))
        assert r['flops_by_op'][SDPA_CPU] == 4 * windowed + 4 * global_
    assert any('pads its 6x6 grid to 8x8' in n for n in result['notes'])


def test_tiny_matmul_fixture_and_meta(tiny_run):
    _, result = tiny_run
    assert set(result['matmul']['peak_gflops']) == {'fp32', 'bf16'}
    assert all(v > 0 for v in result['matmul']['peak_gflops'].values())
    fx = result['bf16_fixture']
    assert set(fx['cases']) == {'g224', 'g256x384', 'w4_256', 'w2_160x224'}
    for case in fx['cases'].values():
        assert case['fp32_vs_reference_max_abs'] < 1e-3  # the float32 path is NVIDIA's
        assert case['speedup'] > 0
        for part in ('backbone', 'sam3'):
            assert 0 < case[part]['rel_err'] < 0.05 and case[part]['cos'] > 0.99  # bf16 rounding, not a bug
    assert result['meta']['device']['type'] == 'cpu' and result['meta']['versions']['sam3'] == '0.1.4'
    assert result['config']['tiny'] is True and result['config']['windows'] == WINDOWS


def test_tiny_outputs_written(tiny_run):
    path, result = tiny_run
    png = path.with_suffix('.png')
    with Image.open(png) as im:
        assert im.format == 'PNG' and im.width > 400 and im.height > 300
        im.verify()
    md = path.with_suffix('.md').read_text()
    assert md.count('\n| ') >= len(result['rows']) and 'skipped: window 4 does not divide the 6x6 grid' in md
    assert 'torch.mm peak' in md and 'bf16 vs fp32 on the fixture' in md


def test_off_grid_nearest_tiny(tmp_path):
    """The old behaviour: a window that does not divide the grid runs at the nearest size it allows, without ratios
    (another grid) and without whole-image inference (the SAM3 model runs at the grid's size)."""
    cfg = bm.BenchConfig(tiny=True, sizes=[96], windows=[4], pe=False, repeats=1, warmup=0, off_grid='nearest',
                         inference=True, mm_size=64)
    result = bm.run_benchmark(cfg)
    rows = {r['window']: r for r in result['rows']}
    assert rows[4]['input'] == [128, 128] and rows[4]['off_grid'] and rows[4]['flops'] > 0
    assert 'ratio_to_global' not in rows[4] and 'skipped' in rows[4]['inference']
    assert rows[None]['inference']['median_s'] > 0 and 'ratio_to_pe' not in rows[None]
    paths = bm.write_outputs(result, tmp_path / 'b.json')
    assert all(p.is_file() for p in paths.values())
