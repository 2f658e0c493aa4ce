"""build_sam3: key/shape parity with sam3's own builders, SAM3 checkpoint loading, the trunk adapter, and every
size SAM3 derives from 1008 px following the backbone's resolution."""
from __future__ import annotations

import pytest
import torch

from conftest import CRADIO_TINY, meta_build
from sam3_cradio import load_cradio
from sam3_cradio.build import TRUNK_PREFIX, build_sam3
from sam3_cradio.checkpoint import CheckpointError
from sam3_cradio.registry import resolve


def _layout(model):
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


# Full-size SAM3 models are built on the meta device (shapes only) and shared across the tests of this module:
# one build per (builder, backbone, mode), the slowest part of the suite.
_META: dict = {}


def _meta_model(builder: str, backbone: str, mode: str):
    key = (builder, backbone, mode)
    if key not in _META:
        from sam3_cradio import compat
        compat.apply_cpu_shims()
        with meta_build():
            if builder == 'sam3':
                from sam3.model_builder import build_sam3_image_model, build_sam3_video_model
                kw = dict(bpe_path=compat.bpe_path(), device='meta', checkpoint_path=None, load_from_HF=False)
                _META[key] = (build_sam3_video_model(**kw) if mode == 'video'
                              else build_sam3_image_model(enable_inst_interactivity=True, **kw))
            else:
                _META[key] = build_sam3(backbone, mode=mode, pretrained=False, device='meta')
    return _META[key]


@pytest.fixture(scope='module', autouse=True)
def _free_meta_models():
    yield
    _META.clear()


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['image', 'video'])
def test_pe_build_matches_sam3_builders(mode):
    assert _layout(_meta_model('ours', 'pe', mode)) == _layout(_meta_model('sam3', 'pe', mode))


@pytest.mark.slow
@pytest.mark.parametrize('backbone', ['cradio_v4_h', 'cradio_v4_so400m'])
def test_cradio_build_differs_only_under_trunk(backbone):
    ours = _layout(_meta_model('ours', backbone, 'video'))
    theirs = _layout(_meta_model('sam3', 'pe', 'video'))
    prefix = TRUNK_PREFIX['video']
    outside = lambda layout: {k: v for k, v in layout.items() if not k.startswith(prefix)}
    assert outside(ours) == outside(theirs)
    assert any(k.endswith('attn.freqs_cis') for k in theirs if k.startswith(prefix))  # PE's RoPE buffers go too
    trunk = {k for k in ours if k.startswith(prefix)}
    assert f'{prefix}encoder.model.embeds.pos_embed' in trunk and not trunk & set(theirs)


@pytest.mark.slow
@pytest.mark.parametrize('interactive', [True, False])
def test_image_layouts_follow_the_video_layout(interactive):
    """The image models hold the video model's detector (and, interactive, its tracker) under sam3's image key
    names, whatever the trunk: checked on the tiny C-RADIO and PE builds against the video layout's remap."""
    from sam3_cradio.build import _remap_sam3_keys

    for backbone in ('cradio_tiny', 'pe_tiny'):
        video = build_sam3(backbone, mode='video', pretrained=False, device='cpu').state_dict()
        image = build_sam3(backbone, mode='image', interactive=interactive, pretrained=False, device='cpu')
        mapped, _ = _remap_sam3_keys(video, 'image', interactive)
        assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in image.state_dict().items()}


def _sam3_pt(tmp_path, name='sam3.pt'):
    """A checkpoint in sam3.pt's layout ({'model': {detector.*, tracker.*}}) from the tiny config, with a PE-style
    trunk under detector.backbone.vision_backbone.trunk.* as the released file has."""
    video = build_sam3('cradio_tiny', mode='video', pretrained=False, device='cpu')
    sd = {k: v for k, v in video.state_dict().items() if not k.startswith(TRUNK_PREFIX['video'])}
    trunk = TRUNK_PREFIX['video']
    sd[trunk + 'pos_embed'] = torch.zeros(1, 577, 8)
    sd[trunk + 'blocks.0.attn.freqs_cis'] = torch.zeros(576, 4, dtype=torch.complex64)
    path = tmp_path / name
    torch.save({'model': sd}, path)
    return path, sd


def test_sam3_checkpoint_loads_through_the_user_loader(tmp_path):
    path, sd = _sam3_pt(tmp_path)
    kw = dict(pretrained=True, sam3_checkpoint=path, cradio_checkpoint=CRADIO_TINY / 'model.pth.tar', device='cpu')
    video = build_sam3('cradio_tiny', mode='video', **kw)
    image = build_sam3('cradio_tiny', mode='image', interactive=True, **kw)
    plain = build_sam3('cradio_tiny', mode='image', interactive=False, **kw)
    vsd, isd, psd = video.state_dict(), image.state_dict(), plain.state_dict()
    assert video.sam3_cradio_cfg['trunk_dropped'] == 2 and video.sam3_cradio_cfg['ignored_by_design'] == 0
    n_tracker = sum(k.startswith('tracker.') for k in sd)
    assert plain.sam3_cradio_cfg['ignored_by_design'] == n_tracker + sum('.sam2_convs.' in k for k in sd)
    for k, v in sd.items():
        if k.startswith(TRUNK_PREFIX['video']):
            continue
        assert torch.equal(vsd[k], v), k
        if k.startswith('detector.'):
            mapped = k[len('detector.'):]
            assert torch.equal(isd[mapped], v), k
            if '.sam2_convs.' not in k:
                assert torch.equal(psd[mapped], v), k
        else:
            assert torch.equal(isd['inst_interactive_predictor.model.' + k[len('tracker.'):]], v), k
    # the trunk stays C-RADIO's own weights
    enc = load_cradio(CRADIO_TINY / 'model.pth.tar', adaptor_names=['sam3'])
    assert torch.equal(isd['backbone.vision_backbone.trunk.encoder.model.blocks.0.attn.qkv.weight'],
                       enc.state_dict()['model.blocks.0.attn.qkv.weight'])


@pytest.mark.parametrize('defect,match', [
    ('truncated', 'truncated or corrupted'),
    ('radio', 'not a SAM3 checkpoint.*RADIO'),
    ('missing', r'1 missing: .*detector\.transformer\.decoder\.query_embed\.weight'),
    ('unexpected', r'1 unexpected: .*detector\.mystery\.weight'),
    ('shape', r'wrong shape.*detector\.transformer\.decoder\.query_embed\.weight'),
])
def test_bad_sam3_checkpoints(tmp_path, defect, match):
    path, sd = _sam3_pt(tmp_path)
    key = 'detector.transformer.decoder.query_embed.weight'
    if defect == 'truncated':
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif defect == 'radio':
        path = CRADIO_TINY / 'model.pth.tar'
    else:
        if defect == 'missing':
            del sd[key]
        elif defect == 'unexpected':
            sd['detector.mystery.weight'] = torch.zeros(1)
        else:
            sd[key] = torch.zeros(3, 3)
        torch.save({'model': sd}, path)
    with pytest.raises(CheckpointError, match=match):
        build_sam3('cradio_tiny', mode='video', sam3_checkpoint=path, cradio_checkpoint=CRADIO_TINY / 'model.pth.tar',
                   device='cpu')


@pytest.mark.parametrize('case,window', [('g224', None), ('w2_160x224', 2)])
def test_trunk_adapter_is_the_sam3_adaptor(tiny_ref, case, window):
    """The trunk returns exactly the encoder's `sam3` adaptor features as NCHW, from SAM3-normalised input; checked
    against NVIDIA's stored outputs (batch 2, ViTDet included)."""
    model = build_sam3('cradio_tiny', window_size=window, mode='image', pretrained=False,
                       cradio_checkpoint=CRADIO_TINY / 'model.pth.tar', device='cpu')
    trunk = model.backbone.vision_backbone.trunk
    assert trunk.image_size == 256
    trunk.image_size = None  # used alone here, at the fixture's own sizes
    rgb = tiny_ref[f'{case}/input']
    b, _, h, w = rgb.shape
    with torch.no_grad():
        (feats,) = trunk((rgb - 0.5) / 0.5)  # what Sam3Processor feeds: Normalize(mean=0.5, std=0.5)
        direct = load_cradio(CRADIO_TINY / 'model.pth.tar', ['sam3'], window_size=window)(rgb, 'NCHW')['sam3'].features
    assert trunk.channel_list == [64] and feats.shape == (b, 64, h // 16, w // 16)
    assert torch.allclose(feats, direct, atol=1e-5)  # only the float rounding of 2p - 1 differs
    reference = tiny_ref[f'{case}/adaptor/sam3/features'].transpose(1, 2).reshape(b, 64, h // 16, w // 16)
    assert (feats - reference).abs().max() <= 1e-4


def _sizes(model, mode):
    """Every size sam3 derives from 1008 px / patch 14, read off a built model."""
    from sam3.model.decoder import TransformerDecoder
    from sam3.model.memory import SimpleMaskDownSampler
    from sam3.sam.transformer import RoPEAttention

    tracker = model.tracker if mode == 'video' else model.inst_interactive_predictor.model
    detector = model.detector if mode == 'video' else model
    neck_pe = detector.backbone.vision_backbone.position_encoding
    out = {
        'tracker.image_size': tracker.image_size,
        'tracker.sam_image_embedding_size': tracker.sam_image_embedding_size,
        'tracker.low_res_mask_size': tracker.low_res_mask_size,
        'tracker.input_mask_size': tracker.input_mask_size,
        'prompt_encoder.input_image_size': tuple(tracker.sam_prompt_encoder.input_image_size),
        'prompt_encoder.image_embedding_size': tuple(tracker.sam_prompt_encoder.image_embedding_size),
        'neck_pos_cache': sorted(neck_pe.cache),
        'mask_downsampler.interpol_size': [tuple(m.interpol_size) for m in model.modules()
                                           if isinstance(m, SimpleMaskDownSampler)],
        'rope.tokens': sorted({m.freqs_cis.shape[0] for m in model.modules() if isinstance(m, RoPEAttention)}),
        'decoder.coords': [m.compilable_stored_size for m in model.modules() if isinstance(m, TransformerDecoder)],
        'maskmem_pos_cache': sorted(tracker.maskmem_backbone.position_encoding.cache),
    }
    if mode == 'video':
        out['video.image_size'] = model.image_size
    else:
        out['inst._bb_feat_sizes'] = model.inst_interactive_predictor._bb_feat_sizes
        out['inst.transforms.resolution'] = model.inst_interactive_predictor._transforms.resolution
    return out


def _expected(image_size, f, mode):
    e = {
        'tracker.image_size': image_size, 'tracker.sam_image_embedding_size': f,
        'tracker.low_res_mask_size': 4 * f, 'tracker.input_mask_size': 16 * f,
        'prompt_encoder.input_image_size': (image_size, image_size),
        'prompt_encoder.image_embedding_size': (f, f),
        'neck_pos_cache': sorted((image_size // s, image_size // s) for s in (4, 8, 16, 32)),
        'mask_downsampler.interpol_size': [(16 * f, 16 * f)],
        'rope.tokens': [f * f],
        'decoder.coords': [(f, f)],
        'maskmem_pos_cache': sorted((image_size // s, image_size // s) for s in (4, 8, 16, 32)),
    }
    if mode == 'video':
        e['video.image_size'] = image_size
    else:
        e['inst._bb_feat_sizes'] = [(4 * f, 4 * f), (2 * f, 2 * f), (f, f)]
        e['inst.transforms.resolution'] = image_size
    return e


@pytest.mark.parametrize('mode', ['image', 'video'])
def test_sizes_follow_the_backbone_tiny(mode):
    model = build_sam3('cradio_tiny', mode=mode, pretrained=False, device='cpu')
    assert _sizes(model, mode) == _expected(256, 16, mode)
    model = build_sam3('cradio_tiny', mode=mode, pretrained=False, device='cpu',
                       overrides=['backbone.image_size=320'])
    assert _sizes(model, mode) == _expected(320, 20, mode)


@pytest.mark.slow
@pytest.mark.parametrize('backbone,image_size,mode', [('cradio_v4_so400m', 1152, 'video'), ('pe', 1008, 'video'),
                                                      ('pe', 1008, 'image')])
def test_sizes_follow_the_backbone_full(backbone, image_size, mode):
    assert _sizes(_meta_model('ours', backbone, mode), mode) == _expected(image_size, 72, mode)


def test_sizes_follow_the_resolution_argument():
    model = build_sam3('cradio_tiny', 4, mode='image', resolution=192, pretrained=False, device='cpu')
    assert _sizes(model, 'image') == _expected(192, 12, 'image')
    assert model.sam3_cradio_cfg['window_size'] == 4 and model.sam3_cradio_spec == resolve('cradio_tiny', 4, 192)


def test_predictor_resizes_once_to_the_backbone_resolution(tiny_image_model):
    from sam3_cradio.predictor import Sam3ImagePredictor
    predictor = Sam3ImagePredictor(tiny_image_model)
    assert predictor.processor.resolution == 256
    resize = [t for t in predictor.processor.transform.transforms if type(t).__name__ == 'Resize']
    assert len(resize) == 1 and list(resize[0].size) == [256, 256]


def test_build_errors():
    with pytest.raises(ValueError, match="unknown backbone 'cradio_v9'.*cradio_v4_h"):
        build_sam3('cradio_v9', pretrained=False)
    with pytest.raises(ValueError, match=r'window 5 does not divide the 16x16.*\[1, 2, 4, 8\]'):
        build_sam3('cradio_tiny', window_size=5, pretrained=False)
    with pytest.raises(ValueError, match='mode'):
        build_sam3('cradio_tiny', mode='audio', pretrained=False)
    with pytest.raises(ValueError, match='no released weights'):
        build_sam3('cradio_tiny', pretrained=True, sam3_checkpoint=__file__)


@pytest.mark.parametrize('kwargs', [dict(window_size=12), dict(window_size='global'), dict(window_size=None,
                                    overrides=['backbone.window_size=12']), dict(backbone='pe:24')])
def test_pe_window_is_fixed(kwargs):
    kwargs = {'backbone': 'pe', **kwargs}
    with pytest.raises(ValueError, match="pe's attention window is fixed at 24"):
        build_sam3(pretrained=False, device='meta', **kwargs)


def test_fact_overrides_are_checked_like_arguments():
    with pytest.raises(ValueError, match='nearest size for window 4: 192'):
        build_sam3('cradio_tiny', overrides=['backbone.window_size=4', 'backbone.image_size=200'], pretrained=False)
    with pytest.raises(ValueError, match='window given twice'):
        build_sam3('cradio_tiny', 4, overrides=['backbone.window_size=2'], pretrained=False)
    with pytest.raises(ValueError, match='whole number of pixels'):
        build_sam3('cradio_tiny', overrides=['backbone.image_size=19x2'], pretrained=False)
    with pytest.raises(ValueError, match='cradio_checkpoint'):
        build_sam3('pe', cradio_checkpoint=CRADIO_TINY / 'model.pth.tar', pretrained=False)


@pytest.mark.parametrize('override,match', [
    ('backbone.imagesize=192', "has no key 'backbone.imagesize'; did you mean backbone.image_size"),
    ('dims.ffn_dim=abc', "dims.ffn_dim takes an integer \\(default 2048\\), got 'abc'"),
    ('dims.ffn_dim=1.5', 'dims.ffn_dim takes an integer'),
    ('pretrained=maybe', 'pretrained takes true or false'),
    ('dims=tny', "Could not find 'dims/tny'"),
    ('dims', 'is not KEY=VALUE'),
])
def test_bad_overrides_are_one_line_errors_before_building(override, match):
    with pytest.raises(ValueError, match=match):
        build_sam3('cradio_tiny', overrides=[override], pretrained=False, device='cpu')
