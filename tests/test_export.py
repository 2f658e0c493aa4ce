"""ONNX export of the trunk and the encoder, the exported trunk in onnxruntime and OpenVINO, and the runtime
benchmark, on the tiny C-RADIO fixture (NVIDIA's checkpoint shipped in sam3_cradio/assets/cradio_tiny)."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from conftest import CRADIO_TINY, IMAGES

pytest.importorskip('onnx', reason='ONNX export needs onnx (pip install "sam3-cradio[export]")')
pytest.importorskip('onnxscript', reason='torch.onnx.export(dynamo=True) needs onnxscript (pip install "sam3-cradio[export]")')

from sam3_cradio.build import build_sam3  # noqa: E402
from sam3_cradio.cli import build_parser, main  # noqa: E402
from sam3_cradio.commands.common import model_options  # noqa: E402
from sam3_cradio.cradio import load_cradio  # noqa: E402
from sam3_cradio.export import (  # noqa: E402
    COMPAT_OPSET,
    DEFAULT_OPSET,
    ExportedModel,
    ExportedTrunk,
    check_info,
    export_encoder,
    export_trunk,
    read_info,
)
from sam3_cradio.trunk import CRadioTrunk  # noqa: E402

CKPT = CRADIO_TINY / 'model.pth.tar'
WINDOW = 4
RUNTIMES = ['onnxruntime', 'openvino']
TRUNK_PREFIX = 'backbone.vision_backbone.trunk.'


def need(runtime: str) -> None:
    pytest.importorskip(runtime, reason=f'{runtime} is not installed (pip install "sam3-cradio[export]")')


@pytest.fixture(scope='module')
def exported(tmp_path_factory) -> dict[int, object]:
    """The fixture's trunk exported at 128 px (through the command line) and 192 px (the Python function), both
    with window 4."""
    out = tmp_path_factory.mktemp('export')
    f128 = out / 'tiny128.onnx'
    rc = main(['export', '--backbone', 'cradio_tiny', '--window-size', str(WINDOW), '--resolution', '128',
               '--cradio-checkpoint', str(CKPT), '--out', str(f128), '--no-verify'])
    assert rc == 0 and f128.is_file()
    f192 = export_trunk(out / 'tiny192.onnx', 'cradio_tiny', WINDOW, 192, cradio_checkpoint=CKPT).path
    return {128: f128, 192: f192}


@pytest.fixture(scope='module')
def torch_trunk() -> CRadioTrunk:
    return CRadioTrunk(load_cradio(CKPT, adaptor_names=['sam3'], window_size=WINDOW)).eval()


def _input(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --------------------------------------------------------------------------------------------------------------
# parity
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('runtime', RUNTIMES)
@pytest.mark.parametrize('size', [128, 192])
def test_exported_trunk_matches_torch_fp32(exported, torch_trunk, runtime, size):
    need(runtime)
    trunk = ExportedTrunk(exported[size], runtime, precision='fp32')
    assert trunk.channel_list == torch_trunk.channel_list and trunk.image_size == size
    for batch in (1, 3):  # exported with an example batch of 2: the batch dimension is dynamic
        x = _input(batch, size, seed=batch)
        with torch.inference_mode():
            ref = torch_trunk(x)[0]
            got = trunk(x)
        assert isinstance(got, list) and len(got) == 1
        assert got[0].shape == ref.shape == (batch, 64, size // 16, size // 16)
        assert float((got[0] - ref).abs().max()) <= 1e-4


@pytest.mark.slow
def test_compat_opset_matches_torch(tmp_path, torch_trunk):
    """Opset 18 (attention as MatMul-Softmax-MatMul, for older runtimes and TensorRT) computes the same."""
    import onnx

    result = export_trunk(tmp_path / 'o18.onnx', 'cradio_tiny', WINDOW, 128, cradio_checkpoint=CKPT,
                          opset=COMPAT_OPSET)
    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert result.info.opset == COMPAT_OPSET and 'Attention' not in ops and 'Softmax' in ops
    x = _input(2, 128)
    with torch.inference_mode():
        ref = torch_trunk(x)[0]
        for runtime in RUNTIMES:
            need(runtime)
            assert float((ExportedTrunk(result.path, runtime)(x)[0] - ref).abs().max()) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize('runtime', RUNTIMES)
def test_sam3_gives_the_same_detections_with_the_exported_trunk(exported, runtime):
    need(runtime)
    from sam3_cradio.build import build_sam3
    from sam3_cradio.predictor import Sam3ImagePredictor

    common = dict(resolution=192, pretrained=False, cradio_checkpoint=CKPT, device='cpu', interactive=False)
    reference = build_sam3('cradio_tiny', WINDOW, **common)
    model = build_sam3('cradio_tiny', WINDOW, **common, trunk_runtime=runtime, trunk_model=exported[192])
    trunk = model.backbone.vision_backbone.trunk
    assert isinstance(trunk, ExportedTrunk) and trunk.runtime == runtime
    assert model.sam3_cradio_cfg['trunk_runtime'] == runtime
    assert not any(k.startswith(TRUNK_PREFIX) for k in model.state_dict())
    # random SAM3 weights: give both models the same ones (everything but the trunk)
    model.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith(TRUNK_PREFIX)},
                          strict=True)
    results = {}
    for name, m in (('torch', reference), (runtime, model)):
        pred = Sam3ImagePredictor(m, confidence_threshold=0.0)  # random weights score low: keep every query
        for image in ('astronaut.jpg', 'coffee.jpg'):
            pred.set_image(IMAGES / image)
            results[name, image] = pred.predict_text('person')
    for image in ('astronaut.jpg', 'coffee.jpg'):
        a, b = results['torch', image], results[runtime, image]
        assert len(a) == len(b) > 0
        assert a.labels == b.labels
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-3)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
    # the boxes follow the image (so the trunk's features): the comparison above is not vacuous
    first, second = results['torch', 'astronaut.jpg'], results['torch', 'coffee.jpg']
    assert not np.allclose(first.boxes, second.boxes, atol=1e-3)


@pytest.mark.slow
def test_video_model_tracks_with_the_exported_trunk(exported, tmp_path):
    need('openvino')
    from PIL import Image

    from sam3_cradio.build import build_sam3
    from sam3_cradio.jobs.track import track_video

    model = build_sam3('cradio_tiny', WINDOW, 'video', resolution=192, pretrained=False, cradio_checkpoint=CKPT,
                       device='cpu', trunk_runtime='openvino', trunk_model=exported[192])
    assert isinstance(model.detector.backbone.vision_backbone.trunk, ExportedTrunk)
    frames = tmp_path / 'frames'
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(frames / f'{i:05d}.jpg')
    summary = track_video(model, frames, text='person', out=tmp_path / 'out.mp4')
    assert summary.frames == 2 and (tmp_path / 'out.mp4').is_file()


@pytest.mark.slow
def test_encoder_export_matches_torch(tmp_path):
    need('onnxruntime')
    adaptors = ('sam3', 'siglip2-g')
    result = export_encoder(tmp_path / 'enc.onnx', 'cradio_tiny', 'global', 128, adaptors=adaptors,
                            cradio_checkpoint=CKPT, verify=['onnxruntime'])
    info = result.info
    assert info.kind == 'encoder' and info.adaptors == adaptors and info.input_range == '[0, 1]'
    assert info.output_names == ('backbone.summary', 'backbone.features', 'sam3.summary', 'sam3.features',
                                 'siglip2-g.summary', 'siglip2-g.features')
    assert result.max_abs['onnxruntime'] <= 1e-4
    encoder = load_cradio(CKPT, adaptor_names=list(adaptors))
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = encoder(x, feature_fmt='NCHW')
    got = ExportedModel(result.path, 'onnxruntime', precision='fp32').run(x)
    for name in ('backbone', *adaptors):
        for part in ('summary', 'features'):
            want = getattr(ref[name], part)
            assert got[f'{name}.{part}'].shape == want.shape
            assert float((got[f'{name}.{part}'] - want).abs().max()) <= 1e-4
    with pytest.raises(ValueError, match='encoder export, this needs a trunk export'):
        ExportedTrunk(result.path, 'onnxruntime')


# --------------------------------------------------------------------------------------------------------------
# metadata and refusals
# --------------------------------------------------------------------------------------------------------------

def test_metadata_records_backbone_size_window_and_weights(exported):
    import onnx

    info = read_info(exported[128])
    assert (info.kind, info.backbone, info.resolution, info.window, info.adaptors) == (
        'trunk', 'cradio_tiny', 128, WINDOW, ('sam3',))
    assert info.weights_sha256 == hashlib.sha256(CKPT.read_bytes()).hexdigest()
    assert (info.channels, info.patch_size, info.input_name, info.output_names) == (64, 16, 'images', ('features',))
    props = {p.key: p.value for p in onnx.load(str(exported[128]), load_external_data=False).metadata_props}
    assert props['sam3_cradio.window'] == str(WINDOW) and props['sam3_cradio.resolution'] == '128'
    assert props['sam3_cradio.input_range'] == '[-1, 1]'
    model = onnx.load(str(exported[128]), load_external_data=False)
    assert {o.domain: o.version for o in model.opset_import}[''] == info.opset == DEFAULT_OPSET
    assert 'Attention' in {n.op_type for n in model.graph.node}  # opset 23: attention is one op
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 128, 128]  # batch dynamic, size fixed


@pytest.mark.parametrize('resolution, match', [
    (200, r'200 px is not a multiple of .* patch size 16; nearest size for window 4: 192'),
    (208, r'window 4 does not divide the 13x13 token grid'),
])
def test_refused_size_is_refused_before_tracing(tmp_path, monkeypatch, capsys, resolution, match):
    import sam3_cradio.export.export as ex

    def traced(*args, **kwargs):
        raise AssertionError('nothing may be loaded or traced for a refused size')

    monkeypatch.setattr(torch.onnx, 'export', traced)
    monkeypatch.setattr(ex, '_load_encoder', traced)
    with pytest.raises(ValueError, match=match):
        export_trunk(tmp_path / 'x.onnx', 'cradio_tiny', WINDOW, resolution, cradio_checkpoint=CKPT)
    rc = main(['export', '--backbone', 'cradio_tiny', '--window-size', str(WINDOW), '--resolution', str(resolution),
               '--cradio-checkpoint', str(CKPT), '--out', str(tmp_path / 'x.onnx')])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith('error: ') and err.count('\n') == 1
    assert not any(tmp_path.iterdir())


def test_file_exported_for_another_window_size_or_backbone_is_refused(exported):
    need('onnxruntime')
    from sam3_cradio.build import build_sam3

    common = dict(pretrained=False, cradio_checkpoint=CKPT, device='cpu', trunk_runtime='onnxruntime',
                  trunk_model=exported[128])
    with pytest.raises(ValueError, match=r'window 4, not 2\. Export the trunk for this model .*--window-size 2'):
        build_sam3('cradio_tiny', 2, resolution=128, **common)
    with pytest.raises(ValueError, match=r'128 px inputs, not 192 px'):
        build_sam3('cradio_tiny', WINDOW, resolution=192, **common)
    with pytest.raises(ValueError, match=r'window 4, not global'):
        build_sam3('cradio_tiny', 'global', resolution=128, **common)
    with pytest.raises(ValueError, match=r'backbone cradio_tiny, not cradio_v4_so400m'):
        build_sam3('cradio_v4_so400m', WINDOW, resolution=128, **{**common, 'cradio_checkpoint': None})


def test_weights_are_checked(exported, tmp_path):
    need('onnxruntime')
    from sam3_cradio.build import build_sam3

    other = tmp_path / 'other.pth.tar'
    other.write_bytes(CKPT.read_bytes() + b'\0')  # another file: another sha256
    with pytest.raises(ValueError, match=r'the weights of model\.pth\.tar .*not the given checkpoint'):
        build_sam3('cradio_tiny', WINDOW, resolution=128, pretrained=False, cradio_checkpoint=other, device='cpu',
                   trunk_runtime='onnxruntime', trunk_model=exported[128])
    info = read_info(exported[128])
    random = dataclasses.replace(info, weights_sha256='random', weights_source='random (seed 0)')
    with pytest.raises(ValueError, match='random weights, while the model loads pretrained SAM3 weights'):
        check_info(random, 'trunk.onnx', weights_required=True)
    check_info(info, 'trunk.onnx', weights_required=True)  # real weights: accepted


def _write_other_onnx(path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 3])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node('Relu', ['x'], ['y'])], 'g', [x], [y])), path)


@pytest.mark.parametrize('damage, match', [
    ('garbage', 'is not a readable ONNX file .*corrupted or truncated: export it again'),
    ('truncated', 'is not a readable ONNX file .*corrupted or truncated: export it again'),
    ('empty', 'is not a readable ONNX model'),
    ('not_ours', 'not one written by sam3-cradio export'),
])
def test_corrupted_or_foreign_file_is_a_clear_error(exported, tmp_path, damage, match):
    path = tmp_path / 'trunk.onnx'
    data = exported[128].read_bytes()
    if damage == 'garbage':
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == 'truncated':
        path.write_bytes(data[:len(data) // 2])
    elif damage == 'empty':
        path.write_bytes(b'')
    else:
        _write_other_onnx(path)
    with pytest.raises(ValueError, match=match):
        read_info(path)
    need('onnxruntime')
    from sam3_cradio.build import build_sam3

    with pytest.raises(ValueError, match=match):
        build_sam3('cradio_tiny', WINDOW, resolution=128, pretrained=False, device='cpu',
                   trunk_runtime='onnxruntime', trunk_model=path)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        read_info(tmp_path / 'missing.onnx')


@pytest.mark.slow
def test_external_data_missing_or_truncated(tmp_path, torch_trunk, monkeypatch):
    """Large models keep their weights in <name>.onnx.data (here forced for the tiny one): both runtimes find it,
    and a missing or cut one is named."""
    import sam3_cradio.export.export as ex

    need('onnxruntime')
    monkeypatch.setattr(ex, 'EXTERNAL_DATA_BYTES', 0)
    path = tmp_path / 'ext.onnx'
    result = export_trunk(path, 'cradio_tiny', WINDOW, 128, cradio_checkpoint=CKPT)
    data = tmp_path / 'ext.onnx.data'
    assert result.files == [path, data] and data.stat().st_size > path.stat().st_size
    x = _input(1, 128)
    with torch.inference_mode():
        ref = torch_trunk(x)[0]
        for runtime in RUNTIMES:
            need(runtime)
            assert float((ExportedTrunk(path, runtime)(x)[0] - ref).abs().max()) <= 1e-4
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r'ext\.onnx\.data is truncated'):
        read_info(path)
    data.unlink()
    with pytest.raises(FileNotFoundError, match=r'keeps its weights in ext\.onnx\.data, which is not beside it'):
        read_info(path)


def test_exported_trunk_refuses_another_input_size(exported):
    need('onnxruntime')
    trunk = ExportedTrunk(exported[128], 'onnxruntime')
    with pytest.raises(ValueError, match=r'exported for 128 x 128 px inputs, got 192 x 192.*resolution=128'):
        trunk(torch.zeros(1, 3, 192, 192))


def test_runtime_arguments_are_checked_before_building(exported):
    from sam3_cradio.build import build_sam3

    common = dict(resolution=128, pretrained=False, cradio_checkpoint=CKPT, device='cpu')
    with pytest.raises(ValueError, match="trunk_model is an exported trunk for trunk_runtime='onnxruntime'"):
        build_sam3('cradio_tiny', WINDOW, **common, trunk_model=exported[128])
    with pytest.raises(ValueError, match=r"trunk_runtime='openvino' runs an exported trunk: pass trunk_model"):
        build_sam3('cradio_tiny', WINDOW, **common, trunk_runtime='openvino')
    with pytest.raises(ValueError, match=r"trunk_runtime must be one of \['torch', 'onnxruntime', 'openvino'\]"):
        build_sam3('cradio_tiny', WINDOW, **common, trunk_runtime='tensorrt', trunk_model=exported[128])
    with pytest.raises(ValueError, match="SAM3's own encoder"):
        build_sam3('pe_tiny', pretrained=False, device='cpu', trunk_runtime='onnxruntime', trunk_model=exported[128])
    with pytest.raises(FileNotFoundError, match='does not exist'):
        build_sam3('cradio_tiny', WINDOW, **common, trunk_runtime='onnxruntime', trunk_model='missing.onnx')


def test_cli_says_its_own_option_names_and_checks_out_first(tmp_path, capsys):
    """Command-line errors name the command line's options (--trunk-model), not the Python arguments; a bad
    --out of export is refused before anything is exported."""
    seg = ['segment', str(IMAGES / 'coffee.jpg'), '--text', 'cup', '--backbone', 'cradio_tiny', '--random-weights']
    assert main([*seg, '--trunk-runtime', 'openvino']) == 2
    assert '--trunk-runtime openvino runs an exported trunk: pass --trunk-model FILE.onnx' in capsys.readouterr().err
    assert main([*seg, '--trunk-model', str(tmp_path / 't.onnx')]) == 2
    err = capsys.readouterr().err
    assert '--trunk-model is an exported trunk for --trunk-runtime' in err and 'trunk_model' not in err
    exp = ['export', '--backbone', 'cradio_tiny', '--random-weights', '--no-verify']
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    for out, message in ((tmp_path, 'is a folder'), (tmp_path / 'x.txt', 'an .onnx file'),
                         (a_file / 't.onnx', 'is a file, not a folder')):
        assert main([*exp, '--out', str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and message in err and err.count('\n') == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file']


def test_cli_model_options_reach_the_build(exported, tmp_path):
    need('openvino')
    a = build_parser().parse_args([
        'segment', str(IMAGES / 'coffee.jpg'), '--text', 'cup', '--backbone', 'cradio_tiny', '--window-size',
        str(WINDOW), '--resolution', '128', '--random-weights', '--cradio-checkpoint', str(CKPT),
        '--trunk-runtime', 'openvino', '--trunk-model', str(exported[128]), '--out', str(tmp_path / 'x.png')])
    model = build_sam3(model_options(a), mode='image')
    trunk = model.backbone.vision_backbone.trunk
    assert isinstance(trunk, ExportedTrunk) and trunk.runtime == 'openvino'
    assert trunk.exported.path == exported[128].resolve()


# --------------------------------------------------------------------------------------------------------------
# runtime options
# --------------------------------------------------------------------------------------------------------------

def test_runtime_options_and_precision(exported):
    need('onnxruntime')
    ort = ExportedModel(exported[128], 'onnxruntime')
    assert ort.options.threads == torch.get_num_threads()
    assert ort.options.settings['graph_optimization_level'] == 'ORT_ENABLE_ALL'
    with pytest.raises(ValueError, match='no bfloat16 kernels'):
        ExportedModel(exported[128], 'onnxruntime', precision='bf16')
    with torch.autocast('cpu', dtype=torch.bfloat16):  # 'auto' follows autocast where it can: not onnxruntime
        assert ort.resolve_precision('cpu') == 'fp32'
    need('openvino')
    from sam3_cradio.export import cpu_has_bf16

    ov = ExportedModel(exported[128], 'openvino')
    assert ov.resolve_precision('cpu') == 'fp32'
    x = _input(1, 128)
    fp32 = ov.run(x, precision='fp32')['features']
    assert ov.options.settings['compiled_fp32']['INFERENCE_PRECISION_HINT'] == 'f32'  # not OpenVINO's bf16 default
    if not cpu_has_bf16():
        with pytest.raises(ValueError, match='no native bf16'):
            ExportedModel(exported[128], 'openvino', precision='bf16')
        return
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert ov.resolve_precision('cpu') == 'bf16'
    bf16 = ov.run(x, precision='bf16')['features']
    assert ov.options.settings['compiled_bf16']['INFERENCE_PRECISION_HINT'] == 'bf16'
    err = float((bf16 - fp32).abs().max())
    assert 0 < err < 0.1 * float(fp32.abs().max())  # bf16 rounding: different, and close


# --------------------------------------------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_bench_runtimes_tiny(tmp_path, capsys):
    need('onnxruntime')
    need('openvino')
    from sam3_cradio.bench.runtimes import RuntimeResult
    from sam3_cradio.export import cpu_has_bf16

    out = tmp_path / 'bench.json'
    # 80 px is a 5x5 grid, which window 3 does not divide: --off-grid nearest runs it at 96 px
    rc = main(['bench', '--tiny', '--runtimes', 'onnxruntime', 'openvino', '--sizes', '96', '80', '--off-grid',
               'nearest', '--repeats', '1', '--warmup', '0', '--dtype', 'fp32', 'bf16', '--json', str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    result = RuntimeResult.from_dict(json.loads((tmp_path / 'bench_runtimes.json').read_text()))
    assert (tmp_path / 'bench_runtimes.md').read_text().strip() in text
    assert result.config['runtimes'] == ['torch', 'onnxruntime', 'openvino']  # torch: always, the reference
    rows = {(r.size, r.dtype, r.runtime): r for r in result.rows}
    assert len(rows) == len(result.rows) == 2 * 2 * 3
    assert all(r.input == 96 and r.off_grid == (r.size == 80) for r in result.rows)
    for size in (96, 80):
        for rt in ('torch', 'onnxruntime', 'openvino'):
            r = rows[size, 'fp32', rt]
            assert r.ok and r.timing is not None and len(r.timing.times_s) == 1
            assert r.max_abs_vs_torch_fp32 <= 1e-4 and r.speedup_vs_torch_fp32 > 0
            assert r.options['threads'] == torch.get_num_threads()
        assert rows[size, 'bf16', 'onnxruntime'].status == 'skipped'
        assert 'no bfloat16 kernels' in rows[size, 'bf16', 'onnxruntime'].reason
        assert rows[size, 'bf16', 'torch'].ok
        assert rows[size, 'bf16', 'openvino'].ok == cpu_has_bf16()
    assert [(e.backbone, e.size, e.window) for e in result.exports] == [('cradio_tiny', 96, 3)] * 2


def test_bench_runtimes_skips_a_size_the_window_does_not_divide(tmp_path, capsys, monkeypatch):
    import sam3_cradio.bench.runtimes as rt

    def built(*args, **kwargs):
        raise AssertionError('a skipped size builds nothing')

    monkeypatch.setattr(rt, '_measure_level', built)
    rc = main(['bench', '--tiny', '--runtimes', 'torch', 'openvino', '--sizes', '80', '--repeats', '1',
               '--json', str(tmp_path / 'bench.json')])
    assert rc == 0
    result = rt.RuntimeResult.from_dict(json.loads((tmp_path / 'bench_runtimes.json').read_text()))
    assert len(result.rows) == 2 and {r.runtime for r in result.rows} == {'torch', 'openvino'}
    assert all(r.status == 'skipped' and 'window 3 does not divide the 5x5 token grid' in r.reason
               and '--off-grid nearest' in r.reason for r in result.rows)
    assert 'skipped: window 3 does not divide' in capsys.readouterr().out


def test_info_describes_with_the_registry_title():
    """ExportInfo (export/info.py, shared by the exporter and the runtimes) words the model as the registry's
    ModelSpec.title does, with the file's fixed input side; the window as the models take it."""
    from sam3_cradio.export.info import RANDOM_WEIGHTS, ExportInfo
    from sam3_cradio.registry import resolve

    def info(backbone, window, resolution, sha=RANDOM_WEIGHTS):
        return ExportInfo('trunk', backbone, resolution, window, ('sam3',), sha, 'c-radio_v4-so400m', 16, 1152,
                          'images', ('features',), DEFAULT_OPSET)

    so400m = info('cradio_v4_so400m', 'global', 1152, 'ab' * 32)
    assert so400m.window_size is None and so400m.spec == resolve('cradio_v4_so400m', 'global')
    assert so400m.describe() == (f'cradio_v4_so400m trunk: {resolve("cradio_v4_so400m").title()} · 1152 px, '
                                 f'adaptor sam3, weights c-radio_v4-so400m (sha256 {"ab" * 6}..)')
    tiny = info('cradio_tiny', WINDOW, 128)
    assert tiny.window_size == WINDOW
    title = resolve('cradio_tiny', WINDOW, 128).title()  # 128 px is not the native size: the title says it
    assert tiny.describe() == f'cradio_tiny trunk: {title}, adaptor sam3, random weights'
    # a backbone this version does not know (a file from a newer one) is still described
    assert info('cradio_v9_x', 12, 1024).describe().startswith('cradio_v9_x trunk: cradio_v9_x · window 12 · 1024 px')
