"""build_sam3: key/shape parity with sam3's own builders, SAM3 checkpoint loading, the trunk adapter, and every
size SAM3 derives from 1008 px following the backbone's resolution."""
from __future__ import annotations

import pytest
import torch

from sam3_cradio import load_cradio
from sam3_cradio.build import TRUNK_PREFIX, build_sam3
from sam3_cradio.checkpoint import CheckpointError

from conftest import CRADIO_TINY, meta_build


def _layout(model):
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


@pytest.fixture(scope='module')
def sam3_layouts():
    """state_dict layouts of sam3's own three builders (built on the meta device: no weights allocated)."""
    from sam3.model_builder import build_sam3_image_model, build_sam3_video_model
    from sam3_cradio import compat
    compat.apply_cpu_shims()
    kw = dict(bpe_path=compat.bpe_path(), device='meta', checkpoint_path=None, load_from_HF=False)
    out = {}
    with meta_build():
        out['image'] = _layout(build_sam3_image_model(**kw))
        out['image_inst'] = _layout(build_sam3_image_model(enable_inst_interactivity=True, **kw))
        out['video'] = _layout(build_sam3_video_model(**kw))
    return out


CASES = [('image', False, 'image'), ('image', True, 'image_inst'), ('video', True, 'video')]


@pytest.mark.parametrize('mode,interactive,ref', CASES)
def test_pe_build_matches_sam3_builders(sam3_layouts, mode, interactive, ref):
    with meta_build():
        ours = build_sam3('pe', mode=mode, interactive=interactive, pretrained=False, device='meta')
    assert _layout(ours) == sam3_layouts[ref]


@pytest.mark.parametrize('backbone', ['cradio_v4_h', 'cradio_v4_so400m'])
@pytest.mark.parametrize('mode,interactive,ref', CASES)
def test_cradio_build_differs_only_under_trunk(sam3_layouts, backbone, mode, interactive, ref):
    with meta_build():
        ours = build_sam3(backbone, window_size=8, mode=mode, interactive=interactive, pretrained=False, device='meta')
    prefix = TRUNK_PREFIX[mode]
    theirs = sam3_layouts[ref]
    ours_layout = _layout(ours)
    outside = lambda layout: {k: v for k, v in layout.items() if not k.startswith(prefix)}
    assert outside(ours_layout) == outside(theirs)
    assert any(k.endswith('attn.freqs_cis') for k in theirs if k.startswith(prefix))  # PE's RoPE buffers go too
    trunk = {k for k in ours_layout if k.startswith(prefix)}
    assert f'{prefix}encoder.model.embeds.pos_embed' in trunk and not trunk & set(theirs)


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


@pytest.mark.parametrize('backbone,image_size', [('cradio_v4_so400m', 1152), ('pe', 1008)])
@pytest.mark.parametrize('mode', ['image', 'video'])
def test_sizes_follow_the_backbone_full(backbone, image_size, mode):
    with meta_build():
        model = build_sam3(backbone, mode=mode, pretrained=False, device='meta')
    assert _sizes(model, mode) == _expected(image_size, 72, mode)


def test_predictor_resizes_once_to_the_backbone_resolution(tiny_image_model):
    from sam3_cradio.predictor import Sam3ImagePredictor
    predictor = Sam3ImagePredictor(tiny_image_model)
    assert predictor.processor.resolution == 256
    resize = [t for t in predictor.processor.transform.transforms if type(t).__name__ == 'Resize']
    assert len(resize) == 1 and list(resize[0].size) == [256, 256]


def test_build_errors():
    with pytest.raises(ValueError, match='unknown config or backbone.*cradio_v4_h'):
        build_sam3('cradio_v9', pretrained=False)
    with pytest.raises(ValueError, match=r'window_size=5 does not divide the 16x16.*\[2, 4, 8\]'):
        build_sam3('cradio_tiny', window_size=5, pretrained=False)
    with pytest.raises(ValueError, match='mode'):
        build_sam3('cradio_tiny', mode='audio', pretrained=False)
    with pytest.raises(ValueError, match='no released weights'):
        build_sam3('cradio_tiny', pretrained=True, sam3_checkpoint=__file__)
