"""Encoder behaviour beyond the fixture: other sizes, ViTDet against a naive reference, formats, round trips."""
from __future__ import annotations

import pytest
import torch

from sam3_cradio import create_cradio, load_cradio, save_cradio
from sam3_cradio.adaptors import HeadSpec, pixel_shuffle_tokens
from sam3_cradio.cradio import (
    CRadioArch,
    TeacherSpec,
    global_block_indexes,
    nearest_supported_resolution,
    window_partition,
    window_unpartition,
)


def _arch(**kw) -> CRadioArch:
    """A model unlike the fixture: other width, depth, heads, prefix tokens, head sizes, an upsampling head."""
    dim = kw.pop('embed_dim', 96)
    teachers = (
        TeacherSpec('clip', 'open_clip', True, 0, HeadSpec('v2', dim, 48, 40, 2), HeadSpec('attn', dim, 48, 40)),
        TeacherSpec('sam3', 'sam3', False, 1, HeadSpec('v2', dim, 32, 24, 0), HeadSpec('v2', dim, 64, 4 * 24, 1, 2)),
    )
    base = dict(embed_dim=dim, depth=12, num_heads=6, mlp_hidden_dim=200, num_cls_tokens=2, num_registers=5,
                summary_idxs=(0,), teachers=teachers, pos_embed_grid=32)
    base.update(kw)
    return CRadioArch(**base)


def _reference_forward(model, x):
    """Naive ViTDet: every windowed block loops over windows one by one; prefix tokens skip windowed blocks."""
    tokens, (h, w) = model._embed(x)
    P, W = model.num_summary_tokens, model.window_size
    states = []
    for i, block in enumerate(model.model.blocks):
        if i in model.global_blocks:
            tokens = block(tokens)
        else:
            prefix, grid = tokens[:, :P], tokens[:, P:].reshape(x.shape[0], h, w, -1).clone()
            for r in range(0, h, W):
                for c in range(0, w, W):
                    win = grid[:, r:r + W, c:c + W].reshape(x.shape[0], W * W, -1)
                    grid[:, r:r + W, c:c + W] = block(win).reshape(x.shape[0], W, W, -1)
            tokens = torch.cat([prefix, grid.reshape(x.shape[0], h * w, -1)], dim=1)
        states.append(tokens)
    return states


@pytest.mark.parametrize('size', [(64, 96), (128, 64), (512, 512), (640, 576)])
def test_embed_matches_timm_embeddings(size):
    """Our embedding path (with the cached resize) equals timm's NaFlexEmbeds, including beyond the table's size."""
    model = create_cradio(arch=_arch(), adaptor_names=()).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        ours, grid = model._embed(x)
        theirs, _ = model.model.embeds((x - model.input_mean) / model.input_std)
    assert grid == (size[0] // 16, size[1] // 16)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_pos_embed_cache_is_reused_and_invalidated():
    model = create_cradio(arch=_arch(), adaptor_names=()).eval()
    table = model.model.embeds.pos_embed
    with torch.no_grad():
        first = model.pos_embed((4, 6))
        assert model.pos_embed((4, 6)) is first                  # same grid: no second resize
        assert model.pos_embed((6, 4)) is not first              # another grid: recomputed
        other = model.pos_embed((4, 6))
        torch.testing.assert_close(other, first, rtol=0, atol=0)
        table.add_(1.0)                                          # an in-place update (optimiser step, copy_)
        torch.testing.assert_close(model.pos_embed((4, 6)), first + 1.0)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state['model.embeds.pos_embed'].zero_()
        model.load_state_dict(state)
        assert model.pos_embed((4, 6)).abs().max() == 0
    # a forward on fake tensors (FLOP counting) must not leave a fake embedding behind for real forwards
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)['backbone'].features
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            model(mode.from_tensor(torch.rand(1, 3, 80, 96)))
        out = model(torch.rand(1, 3, 80, 96))['backbone'].features
        assert not isinstance(out, FakeTensor)
        torch.testing.assert_close(model(x)['backbone'].features, expected, rtol=0, atol=0)
    # with autograd on nothing is cached and the gradient reaches the table
    table.requires_grad_(True)
    pos = model.pos_embed((4, 6))
    assert pos is not model.pos_embed((4, 6))
    pos.sum().backward()
    assert table.grad is not None and table.grad.abs().sum() > 0


def test_global_block_schedule():
    assert global_block_indexes(32) == (7, 15, 23, 31)          # C-RADIOv4-H
    assert global_block_indexes(27) == (5, 11, 17, 23, 26)      # C-RADIOv4-SO400M
    assert global_block_indexes(8) == (1, 3, 5, 7)              # cradio_tiny
    assert global_block_indexes(12, num_windowed=5) == (5, 11)  # RADIOv2 style
    assert global_block_indexes(12, num_global=8) == tuple(range(12))


@pytest.mark.parametrize('window,size', [(2, (64, 96)), (4, (128, 64)), (3, (96, 144))])
def test_vitdet_matches_naive_reference(window, size):
    model = create_cradio(arch=_arch(), adaptor_names=(), window_size=window)
    assert sorted(model.global_blocks) == [2, 5, 8, 11]
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        reference = _reference_forward(model, x)
        final, inter = model.forward_intermediates(x, indices=None, output_fmt='NLC')
    P = model.num_summary_tokens
    assert len(inter) == 12
    for i, (state, out) in enumerate(zip(reference, inter)):
        assert torch.allclose(out.features, state[:, P:], atol=1e-5), i
        assert torch.allclose(out.summary, state[:, list(model.summary_idxs)].flatten(1), atol=1e-5), i
    assert torch.allclose(final['backbone'].features, reference[-1][:, P:], atol=1e-5)


def test_windowed_intermediates_only_stops_early():
    model = create_cradio(arch=_arch(), adaptor_names=(), window_size=2)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        outs = model.forward_intermediates(x, indices=[0, 4], output_fmt='NCHW', intermediates_only=True)
        reference = _reference_forward(model, x)
    assert [tuple(o.features.shape) for o in outs] == [(1, 96, 4, 4)] * 2
    want = reference[4][:, model.num_summary_tokens:].transpose(1, 2).reshape(1, 96, 4, 4)
    assert torch.allclose(outs[1].features, want, atol=1e-5)
    with pytest.raises(AssertionError, match='out of range'):
        model.forward_intermediates(x, indices=[12])


def test_one_window_covering_the_grid_differs_only_by_prefix_isolation():
    # With one window over the whole grid, windowed blocks equal global ones except that prefix tokens sit out.
    model = create_cradio(arch=_arch(num_cls_tokens=1, num_registers=0, summary_idxs=(0,),
                                     teachers=_arch().teachers[:1]), adaptor_names=(), window_size=4)
    x = torch.rand(1, 3, 64, 64)
    P = model.num_summary_tokens
    with torch.no_grad():
        windowed = model(x)['backbone']
        # by hand: windowed blocks see the 16 patch tokens alone (one 4 x 4 window), the prefix token waits
        tokens, _ = model._embed(x)
        for i, block in enumerate(model.model.blocks):
            tokens = block(tokens) if i in model.global_blocks else torch.cat([tokens[:, :P], block(tokens[:, P:])], 1)
        model.set_window_size(None)
        global_ = model(x)['backbone']
    torch.testing.assert_close(windowed.features, tokens[:, P:], rtol=0, atol=1e-5)
    assert (windowed.features - global_.features).abs().max() > 1e-3  # isolating the prefix token does matter


def test_shapes_formats_and_upsampling_head():
    model = create_cradio(arch=_arch(), adaptor_names=('clip', 'sam3'))
    x = torch.rand(2, 3, 48, 80)
    with torch.no_grad():
        nlc = model(x, feature_fmt='NLC')
        nchw = model(x, feature_fmt='NCHW')
    assert nlc['backbone'].summary.shape == (2, 96)
    assert nlc['backbone'].features.shape == (2, 15, 96)
    assert nchw['backbone'].features.shape == (2, 96, 3, 5)
    assert torch.equal(nchw['backbone'].features.flatten(2).transpose(1, 2), nlc['backbone'].features)
    assert nlc['clip'].summary.shape == (2, 40) and nlc['clip'].features.shape == (2, 15, 40)
    # the sam3 head here upsamples x2 by pixel shuffle: 24 channels on a 6 x 10 grid
    assert nlc['sam3'].summary.shape == (2, 24)
    assert nlc['sam3'].features.shape == (2, 60, 24)
    assert nchw['sam3'].features.shape == (2, 24, 6, 10)
    assert torch.equal(model.forward_adaptor_features(x, 'sam3'), nchw['sam3'].features)
    with pytest.raises(ValueError, match='not loaded'):
        model.forward_adaptor_features(x, 'dino')


def test_pixel_shuffle_by_hand():
    # one token on a 1x1 grid holding a 2x2 block of 1-channel sub-patches in (u1, u2, c) order
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    assert pixel_shuffle_tokens(x, (1, 1), 2).flatten().tolist() == [1.0, 2.0, 3.0, 4.0]
    # two tokens side by side: rows of the upsampled grid interleave them
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]])
    assert pixel_shuffle_tokens(x, (1, 2), 2).flatten().tolist() == [1, 2, 5, 6, 3, 4, 7, 8]


def test_window_partition_round_trip():
    x = torch.arange(2 * 6 * 4 * 3, dtype=torch.float32).reshape(2, 24, 3)
    windows = window_partition(x, (6, 4), 2)
    assert windows.shape == (12, 4, 3)
    # first window holds patches (0,0), (0,1), (1,0), (1,1) of image 0
    assert windows[0, :, 0].tolist() == [x[0, i, 0].item() for i in (0, 1, 4, 5)]
    assert torch.equal(window_unpartition(windows, (6, 4), 2), x)


@pytest.mark.parametrize('window', [None, 2])
def test_save_and_load_round_trip(tmp_path, window):
    model = create_cradio(arch=_arch(), adaptor_names=('clip', 'sam3'), window_size=window)
    path = tmp_path / 'student.pth.tar'
    save_cradio(model, path, half=False)
    loaded = load_cradio(path, adaptor_names=['clip', 'sam3'], window_size=window)
    assert loaded.arch == model.arch
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for key in a:
        assert torch.equal(a[key].summary, b[key].summary) and torch.equal(a[key].features, b[key].features)
    # the released half-precision layout loads too (weights rounded to fp16)
    save_cradio(model, tmp_path / 'half.pth.tar')
    half = load_cradio(tmp_path / 'half.pth.tar', adaptor_names=['sam3'], window_size=window)
    with torch.no_grad():
        assert torch.allclose(half(x)['sam3'].features, a['sam3'].features, atol=0.05)


def test_register_multiple_and_summary_from_args(tmp_path):
    model = create_cradio(arch=_arch(num_cls_tokens=2, num_registers=6), adaptor_names=())
    path = tmp_path / 'rm.pth.tar'
    save_cradio(model, path, half=False)
    chk = torch.load(path, weights_only=False)
    args = chk['args']
    args.cpe_num_registers, args.register_multiple = None, 8   # 8 - (2 % 8) = 6 registers
    torch.save(chk, path)
    loaded = load_cradio(path)
    assert loaded.num_summary_tokens == 8 and loaded.summary_idxs == (0,)
    args.register_multiple = 4                                   # 4 - (2 % 4) = 2: does not fit the stored tokens
    torch.save(chk, path)
    with pytest.raises(ValueError, match='prefix tokens'):
        load_cradio(path)


def test_bad_inputs():
    model = create_cradio(arch=_arch(), adaptor_names=(), window_size=2)
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        model(torch.rand(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r'70x64 .*min_resolution_step=32.*64x64'):
        model(torch.rand(1, 3, 70, 64))
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match='window_size'):
            model.set_window_size(bad)


def test_nearest_supported_resolution_rounds_like_python():
    assert nearest_supported_resolution(40, 56, 16) == (32, 64)   # ties to even
    assert nearest_supported_resolution(1, 1, 192) == (192, 192)  # never below one step
    assert nearest_supported_resolution(1000, 1000, 16 * 12) == (960, 960)


@pytest.mark.parametrize('variant,dim,depth,globals_', [
    ('c-radio_v4-h', 1280, 32, (7, 15, 23, 31)),
    ('c-radio_v4-so400m', 1152, 27, (5, 11, 17, 23, 26)),
])
def test_release_architectures_on_meta(variant, dim, depth, globals_):
    # full-size models without allocating weights: shapes at 1152 px, the SAM3 resolution
    model = create_cradio(variant, adaptor_names=('sam3',), window_size=8, device='meta')
    assert (model.embed_dim, len(model.model.blocks), model.num_summary_tokens) == (dim, depth, 10)
    assert tuple(sorted(model.global_blocks)) == globals_
    assert model.model.blocks[0].attn.num_heads == 16
    feats = model.forward_adaptor_features(torch.empty(2, 3, 1152, 1152, device='meta'), 'sam3')
    assert feats.shape == (2, 1024, 72, 72)
