"""The speed and memory benchmark (``sam3_cradio.bench``, ``eval/bench.py``, ``sam3-cradio bench``) on tiny
configurations: every row is written, typed, with FLOPs, parameters, memory and ratios; the plot is a PNG. Nothing
here asserts a time: only structure, FLOP counts (exact) and memory accounting."""
from __future__ import annotations

import dataclasses
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
from sam3_cradio import bench
from sam3_cradio.bench import (
    BenchConfig,
    BenchResult,
    EncoderResult,
    InferenceResult,
    Ratios,
    Row,
    RowKey,
    RowTable,
)
from sam3_cradio.registry import GLOBAL, get_backbone, resolve

ROOT = Path(__file__).resolve().parents[1]
SIZES = {192: 12, 96: 6}           # C-RADIO px -> grid (PE tiny: 168 and 84 px)
WINDOWS = [GLOBAL, 2, 3, 4]        # cradio_tiny's window_choices at 192 px
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
    assert expected > 0 and bench.attention_flops(q_shape, k_shape, v_shape) == expected
    b, h, lq, d = q_shape
    if d == v_shape[-1]:
        assert expected == 4 * b * h * lq * k_shape[-2] * d
    # F.sdpa on CPU: equal head dims go to the flash kernel, which torch alone counts as 0; other shapes go to the
    # math path, whose matmuls torch counts. With our formula both count as the two matmuls, never twice.
    with FlopCounterMode(display=False) as plain:
        out = F.scaled_dot_product_attention(q, k, v)
    with FlopCounterMode(display=False, custom_mapping=bench.attention_flop_mapping()) as ours:
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
    fake, fake_ops = bench.count_flops(trunk, x, fake=True)
    real, real_ops = bench.count_flops(trunk, x, fake=False)
    assert fake == real > 0 and fake_ops == real_ops and real_ops[SDPA_CPU] > 0
    # the fake pass leaves nothing fake behind (the encoder caches its position embedding)
    with torch.no_grad():
        after = trunk(x)
    bench.check_real(after, 'cradio_test')
    torch.testing.assert_close(after[0], before, rtol=0, atol=0)


def test_timings_of_fake_outputs_are_refused():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        fake = mode.from_tensor(torch.zeros(2))
    with pytest.raises(RuntimeError, match='fake tensors'):
        bench.check_real([fake], 'x')


@pytest.mark.parametrize('method', ['vmhwm', 'sampler'])
def test_peak_memory_sees_an_allocation(method):
    if method == 'vmhwm' and not bench.reset_hwm():
        pytest.skip('VmHWM cannot be reset on this system')
    n = 64 * 2 ** 20
    mem = bench.PeakMemory(torch.device('cpu'), method=method)
    with mem:
        buf = torch.ones(n // 4)  # written, so resident
        time.sleep(0.05)          # long enough for the sampler to see it
        del buf
    assert mem.method == method and mem.peak_bytes >= 0.9 * n


def test_plan_full_size_defaults():
    """The full-size plan (no model built): PE-L+ at 1008 / 504 px, H and SO400M at 1152 / 576 px, global and
    the registry's suggested windows at 1152 px (6, 8, 9, 12, 18, 24); 8 and 24 do not divide the 36 grid; PE pads
    36 to 48 in its 28 windowed blocks."""
    cfg = BenchConfig().resolved()
    assert cfg.backbones == ('cradio_v4_h', 'cradio_v4_so400m') and cfg.reference == 'pe'
    assert cfg.sizes == (1152, 576)
    assert list(cfg.windows) == get_backbone('cradio_v4_h').window_choices(1152) == [GLOBAL, 6, 8, 9, 12, 18, 24]
    rows = bench.plan_rows(BenchConfig())
    assert all(type(r) is Row for r in rows)
    assert len(rows) == 2 * (1 + 2 * 7)
    pe = [r for r in rows if r.kind == 'pe']
    assert [(r.label, r.input, r.grid, r.window, r.windowed_grid, r.windowed_blocks) for r in pe] == [
        ('SAM3 PE (Meta)', (1008, 1008), 72, 24, 72, 28), ('SAM3 PE (Meta)', (504, 504), 36, 24, 48, 28)]
    skipped = {(r.backbone, r.size, r.window) for r in rows if not r.ok}
    assert skipped == {(b, 576, w) for b in ('cradio_v4_h', 'cradio_v4_so400m') for w in (8, 24)}
    assert all(r.input == (1152, 1152) for r in rows if r.kind == 'cradio' and r.size == 1152)
    assert {r.label for r in rows if r.kind == 'cradio'} == {'C-RADIOv4-H', 'C-RADIOv4-SO400M'}


def test_tiny_defaults_come_from_the_registry():
    cfg = BenchConfig(tiny=True).resolved()
    assert cfg.backbones == ('cradio_tiny',) and cfg.reference == 'pe_tiny'
    assert cfg.sizes == tuple(SIZES) and list(cfg.windows) == WINDOWS == get_backbone('tiny').window_choices(192)
    assert cfg.pe_backbone() is get_backbone('pe_tiny')
    # aliases resolve to registry names
    assert BenchConfig(backbones=['h', 'so400m', 'cradio_v4_h']).resolved().backbones == (
        'cradio_v4_h', 'cradio_v4_so400m')


def test_default_fixture_is_the_packaged_one():
    import argparse

    from sam3_cradio.assets import CRADIO_TINY_DIR
    from sam3_cradio.commands.bench import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert BenchConfig().fixture == CRADIO_TINY_DIR == parser.parse_args([]).fixture
    assert 'tests' not in CRADIO_TINY_DIR.relative_to(Path(bench.__file__).parents[1]).parts
    assert (CRADIO_TINY_DIR / 'model.pth.tar').is_file()


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
    assert '| SAM3 PE (Meta) | 448x448 | 32 | 24 (own) |' in out
    assert 'skipped: window 12 does not divide the 32x32 grid' in out
    # user errors end as one line, exit 2
    assert mod.main(['--sizes', '500', '--dry-run']) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: 500 px is not a multiple of cradio_v4_h's patch size 16; nearest: 496"]


@pytest.mark.parametrize('kw,match', [
    ({'sizes': [500]}, 'multiple of .* patch size 16; nearest: 496'),
    ({'sizes': [0]}, 'positive numbers of pixels'),
    ({'dtypes': ['fp16']}, 'dtypes must be among'),
    ({'backbones': ['vit_b']}, "unknown backbone 'vit_b'"),
    ({'backbones': ['pe']}, 'reference every row is compared with'),
    ({'reference': 'cradio_v4_h'}, 'reference must be a PE backbone'),
    ({'windows': [0]}, "'global' or a positive number of tokens"),
    ({'windows': [None]}, "'global' or positive numbers of tokens, got None"),
    ({'off_grid': 'round'}, "off_grid must be 'skip' or 'nearest'"),
    ({'repeats': 0}, 'need repeats >= 1'),
])
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        BenchConfig(**kw).resolved()


def _row(backbone, window, dtype, median, *, kind='cradio', flops=100, params=10, mem=1000, inference=None):
    r = Row(backbone=backbone, label=backbone, kind=kind, size=192, grid=12, dtype=dtype, batch=1, window=window,
            input=(192, 192), windowed_grid=12, params=params, flops=flops)
    stats = bench.Measurement.stats([median], [mem], 'vmhwm')
    r.encoder = EncoderResult(**stats, gflops_per_s=flops / median / 1e9)
    if inference is not None:
        r.inference = InferenceResult(**bench.Measurement.stats([inference], [2 * mem], 'vmhwm'), params=5 * params,
                                      text='cat', image_hw=(8, 8), confidence_threshold=1.0)
    return r


def test_rows_are_typed_and_ratios_use_typed_lookups():
    """Rows are dataclasses found by (backbone, window, size, dtype); ratios are exact quotients of the matching
    rows, and an off-grid row gets none against PE or global attention."""
    pe = _row('pe', 4, 'fp32', 2.0, kind='pe', flops=400, params=40, mem=4000, inference=4.0)
    glob = _row('t', GLOBAL, 'fp32', 4.0, flops=200, params=20, mem=1000, inference=8.0)
    w2 = _row('t', 2, 'fp32', 1.0, flops=100, params=20, mem=500, inference=2.0)
    w2_bf16 = _row('t', 2, 'bf16', 0.5, flops=100, params=20, mem=500, inference=1.0)
    off = _row('t', 3, 'fp32', 3.0)
    off.off_grid = True
    skipped = Row(backbone='t', label='t', kind='cradio', size=192, grid=12, dtype='fp32', batch=1, window=5,
                  input=None, windowed_grid=12, status='skipped', reason='window 5 does not divide the 12x12 grid')
    rows = [pe, glob, w2, w2_bf16, off, skipped]
    assert all(dataclasses.is_dataclass(r) and isinstance(r, Row) for r in rows)
    table = RowTable(rows)
    assert table.get('t', 2, 192, 'bf16') is w2_bf16 and table.get('t', 5, 192, 'fp32') is None
    assert table.pe(192, 'fp32') is pe and table.global_of(w2) is glob and table.fp32_of(w2_bf16) is w2
    assert w2.key == RowKey('t', 2, 192, 'fp32')
    with pytest.raises(ValueError, match='two rows'):
        RowTable([w2, w2])

    bench.add_ratios(rows)
    assert w2.ratio_to_pe == Ratios(latency=0.5, peak_mem=0.125, params=0.5, flops=0.25)
    assert w2.ratio_to_global == Ratios(latency=0.25, peak_mem=0.5, params=None, flops=0.5)
    assert w2.inference.ratio_to_pe == Ratios(latency=0.5, peak_mem=0.125, params=0.5)
    assert w2.inference.ratio_to_global == 0.25 and w2.speedup_vs_fp32 is None
    assert pe.ratio_to_pe.latency == 1.0 and pe.ratio_to_global is None
    assert w2_bf16.speedup_vs_fp32 == 2.0 and w2_bf16.inference.speedup_vs_fp32 == 2.0
    assert w2_bf16.ratio_to_pe is None  # no bf16 PE row
    assert off.ratio_to_pe is None and off.ratio_to_global is None
    assert skipped.ratio_to_pe is None and skipped.encoder is None
    # JSON form round-trips
    for r in rows:
        assert Row.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_pe_trunk_shared_with_distillation_teacher(monkeypatch):
    """Bench and the distillation teacher build PE through build.build_trunk, with the same spec: same class,
    same parameters (and the same values from the same seed)."""
    from sam3_cradio import build
    from sam3_cradio.distill import PETeacher

    specs = []
    real = build.build_trunk

    def spy(spec, overrides=(), device=None):
        specs.append((spec, tuple(overrides)))
        return real(spec, overrides, device)

    monkeypatch.setattr(build, 'build_trunk', spy)
    torch.manual_seed(0)
    a = bench.pe_trunk(get_backbone('pe_tiny'), 12, 'cpu')
    torch.manual_seed(0)
    b = PETeacher.from_config('pe_tiny', 168).trunk
    assert specs == [(resolve('pe_tiny', resolution=168), ())] * 2
    assert type(a) is type(b) and a.state_dict().keys() == b.state_dict().keys()
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert [blk.window_size for blk in a.blocks] == [4, 0] * 4  # pe_tiny: window 4 (registry), global every 2nd


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    """``sam3-cradio bench --tiny`` with fp32 and bf16 and whole-image inference (about 15 s on one thread); the
    bf16 fixture check uses the default (packaged) fixture."""
    from sam3_cradio.cli import main

    out = tmp_path_factory.mktemp('bench') / 'bench.json'
    argv = ['bench', '--tiny', '--dtype', *DTYPES, '--inference', '--repeats', '2', '--warmup', '0',
            '--threads', '1', '--json', str(out)]
    assert main(argv) == 0
    torch.set_num_threads(2)
    raw = json.loads(out.read_text())
    return out, BenchResult.from_dict(raw), raw


def _key(r: Row):
    return r.backbone, r.size, r.window if r.kind == 'cradio' else 'own', r.dtype


@pytest.mark.slow
def test_tiny_rows_complete(tiny_run):
    _, result, _ = tiny_run
    rows = result.rows
    assert all(type(r) is Row for r in rows)
    expected = {('pe_tiny', s, 'own', d) for s in SIZES for d in DTYPES}
    expected |= {('cradio_tiny', s, w, d) for s in SIZES for w in WINDOWS for d in DTYPES}
    assert sorted(map(str, map(_key, rows))) == sorted(map(str, expected))  # each exactly once
    skipped = {_key(r) for r in rows if not r.ok}
    assert skipped == {('cradio_tiny', 96, 4, d) for d in DTYPES}
    for r in rows:
        if not r.ok:
            assert 'does not divide the 6x6 grid' in r.reason and r.encoder is None and r.input is None
            continue
        e = r.encoder
        assert isinstance(e, EncoderResult)
        assert r.params > 0 and r.flops > 0 and r.flops_by_op[SDPA_CPU] > 0
        assert len(e.times_s) == 2 and e.min_s <= e.median_s <= e.max_s and e.median_s > 0
        assert e.peak_mem_bytes >= 0 and e.peak_mem_method in ('vmhwm', 'sampler')
        assert e.gflops_per_s > 0 and e.fraction_of_mm['fp32'] > 0 and e.fraction_of_mm['bf16'] > 0
        pe = r.ratio_to_pe
        assert pe.latency > 0 and pe.params > 0 and pe.flops > 0 and (pe.peak_mem is None or pe.peak_mem >= 0)
        inf = r.inference
        assert isinstance(inf, InferenceResult)
        assert inf.median_s > 0 and inf.params > r.params and inf.ratio_to_pe.latency > 0
        if r.kind == 'pe':
            assert r.label == 'PE tiny (random weights)' and r.window == 4
            assert r.ratio_to_pe.latency == 1.0 and inf.ratio_to_pe.latency == 1.0 and r.ratio_to_global is None
        else:
            assert r.label == 'C-RADIO tiny (random weights)'
            assert r.ratio_to_global.latency > 0 and inf.ratio_to_global > 0
            if r.window == GLOBAL:
                assert r.ratio_to_global.latency == 1.0
            else:  # windows only remove attention work
                assert r.ratio_to_global.flops < 1.0
        if r.dtype == 'bf16':
            assert r.speedup_vs_fp32 > 0 and inf.speedup_vs_fp32 > 0
        else:
            assert r.speedup_vs_fp32 is None and inf.speedup_vs_fp32 is None


@pytest.mark.slow
def test_tiny_pe_padding_counted(tiny_run):
    """PE tiny (4-token windows, 4 windowed and 4 global blocks, 3 heads of 64) pads the 6x6 grid to 8x8 in its
    windowed blocks, as PE-L+ pads 36 to 48; its attention FLOPs are those of the padded grid."""
    _, result, _ = tiny_run
    pe_rows = [r for r in result.rows if r.kind == 'pe']
    assert len(pe_rows) == len(SIZES) * len(DTYPES)
    for r in pe_rows:
        g, pg = r.grid, r.windowed_grid
        assert pg == math.ceil(g / 4) * 4 and r.windowed_blocks == r.global_blocks == 4
        windowed = bench.attention_flops(((pg // 4) ** 2, 3, 16, 64), (1, 3, 16, 64), (1, 3, 16, 64))
        global_ = bench.attention_flops((1, 3, g * g, 64), (1, 3, g * g, 64), (1, 3, g * g, 64))
        assert r.flops_by_op[SDPA_CPU] == 4 * windowed + 4 * global_
    assert any('pads its 6x6 grid to 8x8' in n for n in result.notes)


@pytest.mark.slow
def test_tiny_matmul_fixture_and_meta(tiny_run):
    from sam3_cradio.assets import CRADIO_TINY_DIR

    _, result, raw = tiny_run
    assert set(result.matmul.peak_gflops) == {'fp32', 'bf16'} == set(raw['matmul']['peak_gflops'])
    assert all(v > 0 for v in result.matmul.peak_gflops.values())
    fx = result.bf16_fixture
    assert result.bf16_fixture_skipped is None and Path(fx.checkpoint).parent == CRADIO_TINY_DIR == CRADIO_TINY
    assert set(fx.cases) == {'g224', 'g256x384', 'w4_256', 'w2_160x224'}
    for case in fx.cases.values():
        assert case.fp32_vs_reference_max_abs < 1e-3  # the float32 path is NVIDIA's
        assert case.speedup > 0
        for part in (case.backbone, case.sam3):
            assert 0 < part.rel_err < 0.05 and part.cos > 0.99  # bf16 rounding, not a bug
    assert result.meta['device']['type'] == 'cpu' and result.meta['versions']['sam3'] == '0.1.4'
    assert result.config.tiny is True and raw['config']['windows'] == WINDOWS
    assert result.config.fixture == CRADIO_TINY_DIR


@pytest.mark.slow
def test_tiny_outputs_written(tiny_run):
    path, result, raw = tiny_run
    png = path.with_suffix('.png')
    with Image.open(png) as im:
        assert im.format == 'PNG' and im.width > 400 and im.height > 300
        im.verify()
    md = path.with_suffix('.md').read_text()
    assert md.count('\n| ') >= len(result.rows) and 'skipped: window 4 does not divide the 6x6 grid' in md
    assert 'torch.mm peak' in md and 'bf16 vs fp32 on the fixture' in md
    # the JSON reads back into the same typed result, which renders the same table
    assert result.to_dict() == raw
    assert bench.format_table(result) + '\n' == md
    windows = {r['window'] for r in raw['rows']}
    assert windows == {GLOBAL, 2, 3, 4}  # 'global' or tokens, never null


@pytest.mark.slow
def test_off_grid_nearest_tiny(tmp_path):
    """A window that does not divide the grid runs at the nearest size it allows, without ratios (another grid) and
    without whole-image inference (the SAM3 model runs at the grid's size)."""
    cfg = BenchConfig(tiny=True, sizes=[96], windows=[4], pe=False, repeats=1, warmup=0, off_grid='nearest',
                      inference=True, mm_size=64)
    result = bench.run_benchmark(cfg)
    rows = {r.window: r for r in result.rows}
    assert set(rows) == {GLOBAL, 4}
    assert rows[4].input == (128, 128) and rows[4].off_grid and rows[4].flops > 0
    assert rows[4].ratio_to_global is None and rows[4].inference is None and rows[4].inference_skipped
    assert rows[GLOBAL].inference.median_s > 0 and rows[GLOBAL].ratio_to_pe is None
    paths = bench.write_outputs(result, tmp_path / 'b.json')
    assert all(p.is_file() for p in paths.values())


# ---------------------------------------------------------------------------------------------------------------
# Whole folders: `bench --pipeline`
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_pipeline_times_the_segment_job_end_to_end(tmp_path):
    from sam3_cradio.bench.pipeline import PipelineResult, format_pipeline, make_photo_folder, run_pipeline

    photos = make_photo_folder(tmp_path / 'photos', 3, (90, 120))
    assert len(photos) == 3 and all(Image.open(p).size == (120, 90) for p in photos)
    assert len({p.read_bytes() for p in photos}) == 3  # distinct photos, not copies
    saved = []
    result = run_pipeline(BenchConfig(tiny=True, sizes=(96,)), batches=(1, 2), folder=tmp_path / 'photos',
                          on_progress=lambda r: saved.append(format_pipeline(r)))
    # PE and C-RADIO at batch 1 and 2: the table so far after every job
    assert [t.count('not run yet') for t in saved] == [3, 2, 1, 0]
    rows = result.rows
    assert [(r.backbone, r.batch, r.input, r.grid) for r in rows] == [
        ('pe_tiny', 1, 84, 6), ('cradio_tiny', 1, 96, 6), ('pe_tiny', 2, 84, 6), ('cradio_tiny', 2, 96, 6)]
    for r in rows:
        assert r.ok and r.images == 3 and r.images_per_s == pytest.approx(3 / r.seconds, rel=1e-3)
        assert 0 < r.model_seconds < r.seconds and 0 < r.writing_seconds < r.seconds
        assert r.outside_model_share == pytest.approx(1 - r.model_seconds / r.seconds, abs=1e-3)
        assert r.detections_per_image is not None
    pe, cr = rows[2], rows[3]
    assert pe.ratio_to_pe == 1 and cr.ratio_to_pe == pytest.approx(cr.images_per_s / pe.images_per_s)
    assert cr.speedup_vs_batch1 == pytest.approx(cr.images_per_s / rows[1].images_per_s)
    assert rows[0].speedup_vs_batch1 is None and cr.window == 3 and pe.window == 4
    again = PipelineResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.rows == rows and again.config['images'] == 3 and again.config['folder'] == str(tmp_path / 'photos')
    table = format_pipeline(again)
    assert table.count('\n| ') == 5 and 'images/s' in table


def test_pipeline_cli_writes_files_and_skips_windows_off_the_grid(tmp_path, capsys):
    from sam3_cradio.cli import main

    out = tmp_path / 'b.json'
    assert main(['bench', '--pipeline', '--tiny', '--sizes', '64', '--pipeline-models', 'cradio_tiny:3',
                 'cradio_tiny:2', '--no-pe', '--pipeline-batches', '1', '--pipeline-images', '2',
                 '--pipeline-image-size', '48', '64', '--json', str(out)]) == 0
    text = capsys.readouterr().out
    d = json.loads((tmp_path / 'b_pipeline.json').read_text())
    assert (tmp_path / 'b_pipeline.md').is_file() and (tmp_path / 'b_pipeline.png').stat().st_size > 0
    skipped, ran = d['rows']  # a 4 x 4 grid: window 3 does not divide it, 2 does
    assert skipped['status'] == 'skipped' and 'window' in skipped['reason'] and skipped['images_per_s'] is None
    assert ran['status'] == 'ok' and ran['images'] == 2 and ran['ratio_to_pe'] is None
    assert d['config']['folder'].startswith('2 photos of 64x48 px') and 'skipped:' in text


@pytest.mark.slow
def test_op_profile_splits_the_encoder_time():
    from sam3_cradio.bench import op_class
    from sam3_cradio.bench.report import format_table

    assert [op_class(n) for n in ('aten::addmm', 'aten.mm', 'aten._scaled_dot_product_flash_attention_for_cpu',
                                  'aten::gelu')] == ['linear', 'linear', 'attention', 'other']
    result = bench.run_benchmark(BenchConfig(tiny=True, sizes=(96,), windows=('global', 3), dtypes=('fp32', 'bf16'),
                                       repeats=1, warmup=0, op_profile=True, fixture=None))
    rows = [r for r in result.rows if r.ok]
    assert len(rows) == 6  # PE, C-RADIO global and window 3, in fp32 and bf16
    for r in rows:
        ops = r.encoder.ops
        assert set(ops) == {'linear', 'attention', 'other'} and sum(o['share'] for o in ops.values()) == \
            pytest.approx(1)
        # the FLOP counter's linear and attention FLOPs land in their classes, and nothing is lost
        assert ops['linear']['gflop'] > 0 and ops['attention']['gflop'] > 0
        assert sum(o['gflop'] for o in ops.values()) * 1e9 == pytest.approx(r.flops, rel=1e-6)
        assert ops['linear']['fraction_of_mm'] == pytest.approx(
            ops['linear']['gflops_per_s'] / result.matmul.peak_gflops[r.dtype])
    assert 'Where the encoder time goes' in format_table(result)
    again = bench.BenchResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.rows[0].encoder.ops == rows[0].encoder.ops


@pytest.mark.slow
def test_pipeline_runs_exported_trunks(tmp_path):
    pytest.importorskip('onnxruntime')
    from sam3_cradio.bench.pipeline import make_photo_folder, run_pipeline

    make_photo_folder(tmp_path / 'photos', 2, (60, 80))
    result = run_pipeline(BenchConfig(tiny=True, sizes=(96,), dtypes=('fp32',), pe=False), batches=(1,),
                          runtimes=('torch', 'onnxruntime'), folder=tmp_path / 'photos')
    torch_row, ort_row = result.rows
    assert (torch_row.runtime, ort_row.runtime) == ('torch', 'onnxruntime') and result.row(
        'cradio_tiny', 96, 'fp32', 1, 'onnxruntime') is ort_row
    assert ort_row.ok and ort_row.images == 2 and ort_row.model_seconds > 0 and ort_row.ratio_to_pe is None
    assert result.config['runtimes'] == ['torch', 'onnxruntime']


def test_pipeline_row_takes_the_median_round():
    from sam3_cradio.bench.pipeline import PipelineRow, _fill

    def metrics(rate: float, detections: int) -> dict:
        t = {'images': 4, 'images_per_s': rate, 'seconds': 4 / rate, 'model_seconds': 3 / rate,
             'encoder_seconds': 2 / rate, 'decoder_seconds': 1 / rate, 'writing_seconds': 0.1,
             'outside_model_share': 0.25}
        return {'timing': t, 'num_detections': detections, 'num_segmented': 4}

    row = PipelineRow(backbone='cradio_tiny', label='tiny', window=3, size=96, input=96, grid=6, dtype='fp32', batch=1)
    _fill(row, [metrics(2.0, 8), metrics(1.0, 4), metrics(3.0, 12)])  # the median round is the first one
    assert row.rounds_images_per_s == [2.0, 1.0, 3.0] and row.images_per_s == 2.0
    assert row.seconds == 2.0 and row.detections_per_image == 2.0
