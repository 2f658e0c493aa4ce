"""Tests for sam3_cradio.compat: each CPU shim fixes its sam3 0.1.4 blocker, the shims come off again exactly, the
per-model overrides undo themselves, and all without building the full SAM3.

The shims wrap sam3 functions; the original stays reachable as ``wrapper.__wrapped__``, which the tests call to
show the blocker is real on this machine (skipped where CUDA is available, since then nothing fails). Whether a
shim acts is decided per call (``compat.needs_cpu_shims``); the tests that report CUDA as available
(monkeypatching ``torch.cuda.is_available``) check that decision on any machine.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip('sam3')

from sam3_cradio import compat  # noqa: E402
from sam3_cradio.compat import applied_cpu_shims, apply_cpu_shims, bpe_path  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
BPE_SIZE = 1_356_917
BPE_SHA256 = '924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a'
NO_DRIVER = (RuntimeError, AssertionError)  # "Found no NVIDIA driver" / "Torch not compiled with CUDA"

# sam3's tracker enters autocast("cuda") at construction (sam3_tracking_predictor.py:49); on CPU it only warns.
pytestmark = pytest.mark.filterwarnings('ignore:CUDA is not available or torch_xla is imported:UserWarning')

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason='the blockers only exist without CUDA')


@pytest.fixture
def cuda_reported(monkeypatch):
    """``torch.cuda.is_available()`` answers True: the shims' per-call decision as on a GPU machine."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)


@pytest.fixture(scope='module', autouse=True)
def shims() -> list:
    return apply_cpu_shims()


@pytest.fixture(scope='module')
def tracker():
    from sam3.model_builder import build_tracker  # 11.7M params; needs the position-encoding shim to build

    return build_tracker(apply_temporal_disambiguation=False).eval()


def _patched_targets():
    from sam3.model.decoder import TransformerDecoder, TransformerEncoderCrossAttention
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model.position_encoding import PositionEmbeddingSine
    from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU
    from sam3.model.sam3_tracker_base import Sam3TrackerBase
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor
    from sam3.model.sam3_video_inference import Sam3VideoInference
    from sam3.perflib import connected_components as cc

    return {
        'position_encoding_cpu': [PositionEmbeddingSine.__init__],
        'decoder_coords_cpu': [TransformerDecoder._get_coords],
        'pin_memory_cpu': [SequenceGeometryEncoder._encode_boxes, Sam3TrackerBase._get_tpos_enc,
                           Sam3VideoInference._postprocess_output],
        'tracker_cuda_calls': [Sam3TrackerBase._prepare_memory_conditioned_features,
                               Sam3TrackerPredictor.add_new_points_or_box],
        'tracker_state_on_cpu': [Sam3TrackerPredictor.init_state],
        'video_frames_on_cpu': [Sam3VideoInference.init_state],
        'tracker_fpn_float32': [Sam3ImageOnVideoMultiGPU._build_multigpu_buffer_next_chunk],
        'tracker_memory_float32': [TransformerEncoderCrossAttention.forward],
        'connected_components_empty': [cc.connected_components_cpu],
        'connected_components_counts': [cc.connected_components_cpu_single],
    }


# ------------------------------------------------------------------------------------------------- API

def test_apply_cpu_shims_is_idempotent(shims):
    before = _patched_targets()
    again = apply_cpu_shims()
    after = _patched_targets()
    assert again == shims == applied_cpu_shims()
    assert set(compat.CPU_SHIMS) <= set(shims)
    for name, fns in before.items():
        for fn_before, fn_after in zip(fns, after[name]):
            assert fn_after is fn_before  # nothing re-patched
            assert getattr(fn_after, compat._SHIM_ATTR) == name
            # wrapped exactly once: the original is sam3's own function
            assert not hasattr(fn_after.__wrapped__, compat._SHIM_ATTR)


def test_each_shim_function_is_idempotent():
    for shim in compat.CPU_SHIMS.values():
        assert shim() is False  # already patched: a second application changes nothing


@pytest.mark.slow
def test_shims_are_not_applied_at_import():
    code = ('import sam3_cradio, sam3_cradio.compat as c\n'
            'from sam3.model.position_encoding import PositionEmbeddingSine as P\n'
            'assert c.applied_cpu_shims() == []\n'
            'assert not hasattr(P.__init__, "__sam3_cradio_shim__")\n')
    _run_python(code)


@pytest.mark.parametrize('version, strict, expectation', [
    ('0.1.4', True, None),
    ('0.2.0', True, RuntimeError),
    ('0.2.0', False, UserWarning),
])
def test_check_sam3_version(version, strict, expectation):
    if expectation is None:
        assert compat.check_sam3_version(version, strict=strict) == version
    elif expectation is RuntimeError:
        with pytest.raises(RuntimeError, match=r'sam3==0\.1\.4.*sam3==0\.2\.0'):
            compat.check_sam3_version(version, strict=strict)
    else:
        with pytest.warns(UserWarning, match='0.2.0'):
            compat.check_sam3_version(version, strict=strict)


def test_installed_sam3_is_supported():
    import sam3

    assert compat.check_sam3_version() == sam3.__version__ == compat.SUPPORTED_SAM3_VERSION


# ------------------------------------------------------------------------------------------------- shims

@needs_no_cuda
def test_position_encoding_precompute_on_cpu():
    from sam3.model.position_encoding import PositionEmbeddingSine

    with pytest.raises(NO_DRIVER):
        PositionEmbeddingSine.__init__.__wrapped__(PositionEmbeddingSine.__new__(PositionEmbeddingSine), 64,
                                                   precompute_resolution=1008)
    pe = PositionEmbeddingSine(num_pos_feats=64, precompute_resolution=1008)
    assert set(pe.cache) == {(252, 252), (126, 126), (63, 63), (31, 31)}
    fresh = PositionEmbeddingSine(num_pos_feats=64)
    for (h, w), cached in pe.cache.items():
        assert cached.device.type == 'cpu'
        torch.testing.assert_close(cached, fresh(torch.zeros(1, 1, h, w))[0])


@needs_no_cuda
def test_decoder_coords_on_cpu():
    from sam3.model.decoder import TransformerDecoder
    from sam3.model_builder import _create_transformer_decoder

    with pytest.raises(NO_DRIVER):
        TransformerDecoder._get_coords.__wrapped__(72, 72, device='cuda')
    coords_h, coords_w = TransformerDecoder._get_coords(72, 72, device='cuda')
    assert coords_h.device.type == coords_w.device.type == 'cpu'
    torch.testing.assert_close(coords_h, torch.arange(72, dtype=torch.float32) / 72)

    decoder = _create_transformer_decoder()  # sam3's resolution=1008, stride=14 decoder (decoder.py:280)
    assert decoder.compilable_stored_size == (72, 72)
    assert all(c.device.type == 'cpu' and c.shape == (72,) for c in decoder.compilable_cord_cache)


def test_wrappers_defer_to_sam3_when_cuda_is_available(monkeypatch):
    """With CUDA reported available, the wrappers call the original code (which then needs a real GPU)."""
    from sam3.model.decoder import TransformerDecoder
    from sam3.model.position_encoding import PositionEmbeddingSine

    if torch.cuda.is_available():
        pytest.skip('on a GPU the originals succeed; nothing to observe')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    with pytest.raises(NO_DRIVER):
        TransformerDecoder._get_coords(4, 4, device='cuda')
    with pytest.raises(NO_DRIVER):
        PositionEmbeddingSine(num_pos_feats=64, precompute_resolution=64)
    with pytest.raises(NO_DRIVER):
        torch.zeros(2).cuda()  # no global Tensor patch: outside sam3's wrapped functions nothing changes


def test_no_global_tensor_patch():
    assert not hasattr(torch.Tensor.pin_memory, compat._SHIM_ATTR)
    assert not hasattr(torch.Tensor.cuda, compat._SHIM_ATTR)


@needs_no_cuda
def test_geometry_encoder_box_path_skips_pin_memory():
    from sam3.model.geometry_encoders import SequenceGeometryEncoder
    from sam3.model_builder import _create_geometry_encoder

    torch.manual_seed(0)
    encoder = _create_geometry_encoder().eval()
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.3]], [[0.3, 0.6, 0.4, 0.2]]])  # (n_boxes=2, bs=1, 4) cxcywh
    args = (boxes, torch.zeros(1, 2, dtype=torch.bool), torch.ones(2, 1), torch.randn(1, 256, 16, 16))
    with pytest.raises(NO_DRIVER):
        SequenceGeometryEncoder._encode_boxes.__wrapped__(encoder, *args)
    with torch.inference_mode():
        embed, mask = encoder._encode_boxes(*args)
    assert embed.shape == (2, 1, 256) and torch.isfinite(embed).all()
    assert mask is args[1]


@needs_no_cuda
def test_tracker_tpos_enc_skips_pin_memory(tracker):
    from sam3.model.sam3_tracker_base import Sam3TrackerBase

    cpu = torch.device('cpu')
    with pytest.raises(NO_DRIVER):
        Sam3TrackerBase._get_tpos_enc.__wrapped__(tracker, [1, 2], device=cpu, max_abs_pos=4)
    with torch.inference_mode():
        pos = tracker._get_tpos_enc([1, 2], device=cpu, max_abs_pos=4)
    assert pos.shape == (2, tracker.mem_dim) and pos.device == cpu


@needs_no_cuda
def test_tracker_init_state_stores_on_cpu(tracker):
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor

    original = Sam3TrackerPredictor.init_state.__wrapped__(tracker, video_height=32, video_width=32, num_frames=2)
    with pytest.raises(NO_DRIVER):
        torch.zeros(1).to(original['storage_device'])  # what sam3_tracking_predictor.py:1101 does
    state = tracker.init_state(video_height=32, video_width=32, num_frames=2, offload_state_to_cpu=False)
    assert state['storage_device'] == torch.device('cpu')
    assert state['offload_state_to_cpu'] and state['offload_video_to_cpu']


@needs_no_cuda
def test_tracker_memory_conditioning_without_cuda_calls(tracker):
    from sam3.model.sam3_tracker_base import Sam3TrackerBase

    torch.manual_seed(0)
    B, h, C = 1, 8, tracker.hidden_dim  # small grid: RoPE recomputes for non-72 sizes (sam/transformer.py:309)
    memory = {'maskmem_features': torch.randn(B, tracker.mem_dim, h, h).bfloat16(),
              'maskmem_pos_enc': [torch.randn(B, tracker.mem_dim, h, h)],
              'obj_ptr': torch.randn(B, C)}
    kwargs = dict(frame_idx=1, is_init_cond_frame=False, current_vision_feats=[torch.randn(h * h, B, C)],
                  current_vision_pos_embeds=[torch.randn(h * h, B, C)], feat_sizes=[(h, h)], num_frames=3,
                  output_dict={'cond_frame_outputs': {0: memory}, 'non_cond_frame_outputs': {}})
    with torch.inference_mode():
        with pytest.raises(NO_DRIVER):
            Sam3TrackerBase._prepare_memory_conditioned_features.__wrapped__(tracker, **kwargs)
        out = tracker._prepare_memory_conditioned_features(**kwargs)
    assert out.shape == (B, C, h, h) and out.dtype == torch.float32 and torch.isfinite(out).all()


@needs_no_cuda
def test_video_postprocess_output_skips_pin_memory():
    from sam3.model.sam3_video_inference import Sam3VideoInference

    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[:, 4:8, 2:10] = True
    fake_self = types.SimpleNamespace(tracker=None)  # only used with more than one object
    args = ({'orig_height': 16, 'orig_width': 16},
            {'obj_id_to_mask': {3: mask}, 'obj_id_to_score': {3: 0.9}, 'obj_id_to_tracker_score': {}})
    with pytest.raises(NO_DRIVER):
        Sam3VideoInference._postprocess_output.__wrapped__(fake_self, *args)
    out = Sam3VideoInference._postprocess_output(fake_self, *args)
    assert out['out_obj_ids'].tolist() == [3]
    assert out['out_binary_masks'].shape == (1, 16, 16)
    assert out['out_boxes_xywh'].tolist() == [[2 / 16, 4 / 16, 7 / 16, 3 / 16]]


@pytest.mark.parametrize('device, cuda, forced', [
    (None, False, True),      # no CUDA: always on the CPU
    ('cpu', True, True),      # a CPU model on a GPU machine still needs its frames on the CPU
    ('cuda', True, False),    # a GPU model: sam3's own default
])
def test_video_init_state_forces_offload_video_to_cpu(monkeypatch, device, cuda, forced):
    from sam3.model import sam3_video_inference as svi

    seen = {}

    def fake_loader(**kwargs):
        seen.update(kwargs)
        raise StopIteration  # stop right after the argument we check

    monkeypatch.setattr(svi, 'load_resource_as_video_frames', fake_loader)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    fake_self = types.SimpleNamespace(image_size=1008, image_mean=(0.5,) * 3, image_std=(0.5,) * 3)
    if device is not None:
        fake_self.device = torch.device(device)
    with pytest.raises(StopIteration):
        svi.Sam3VideoInference.init_state(fake_self, 'unused.mp4', False)  # positional offload_video_to_cpu
    assert seen['offload_video_to_cpu'] is forced


def _fake_detector(world_size: int = 1) -> types.SimpleNamespace:
    """Minimal stand-in for Sam3ImageOnVideoMultiGPU: sam3's method body runs unchanged on it."""
    from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU

    def forward_grounding(**kwargs):
        feats = {'backbone_fpn': [torch.randn(1, 256, s, s) for s in (16, 8, 4)], 'vision_pos_enc': None}
        return {'pred_logits': torch.zeros(1, 2, 1), 'pred_boxes': torch.zeros(1, 2, 4),
                'pred_boxes_xyxy': torch.zeros(1, 2, 4), 'pred_masks': torch.zeros(1, 2, 8, 8),
                'prev_encoder_out': {'backbone_out': {'sam2_backbone_out': feats}}}

    fake = types.SimpleNamespace(rank=0, world_size=world_size, gather_backbone_out=True,
                                 forward_grounding=forward_grounding)
    fake._gather_tensor = types.MethodType(Sam3ImageOnVideoMultiGPU._gather_tensor, fake)
    return fake


@needs_no_cuda
@pytest.mark.parametrize('cuda', [False, True], ids=['no-cuda', 'cuda-reported'])
def test_tracker_features_cast_back_to_float32(monkeypatch, cuda):
    # the features are on the CPU: cast whether or not the machine has a GPU
    from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)

    kwargs = dict(backbone_out={}, find_inputs=[None, None], geometric_prompt=None, frame_idx_begin=0,
                  frame_idx_end=1, num_frames=2)
    original, patched = {}, {}
    torch.manual_seed(0)
    Sam3ImageOnVideoMultiGPU._build_multigpu_buffer_next_chunk.__wrapped__(
        _fake_detector(), multigpu_buffer=original, **kwargs)
    torch.manual_seed(0)
    Sam3ImageOnVideoMultiGPU._build_multigpu_buffer_next_chunk(_fake_detector(), multigpu_buffer=patched, **kwargs)

    conv_s0 = nn.Conv2d(256, 32, kernel_size=1)  # like the tracker's sam_mask_decoder.conv_s0 (fp32 weights)
    fpn0_original = original[0]['tracker_backbone_fpn_0'][0]
    assert fpn0_original.dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match='should be the same'):
        conv_s0(fpn0_original)  # sam3_video_base.py:383 on CPU
    for i in range(3):
        value, handle = patched[0][f'tracker_backbone_fpn_{i}']
        assert value.dtype == torch.float32 and handle is None
        torch.testing.assert_close(value, original[0][f'tracker_backbone_fpn_{i}'][0].float())
    assert conv_s0(patched[0]['tracker_backbone_fpn_0'][0]).dtype == torch.float32
    assert patched[0]['pred_masks'][0].dtype == torch.float32  # other entries untouched


@pytest.mark.parametrize('cuda', [False, True], ids=['no-cuda', 'cuda-reported'])
def test_connected_components_on_empty_batch(monkeypatch, cuda):
    # sam3 sends only CPU tensors down this path; the fix applies to them on any machine
    pytest.importorskip('skimage')
    from sam3.perflib import connected_components as cc

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)

    empty = torch.zeros(0, 1, 8, 8, dtype=torch.bool)
    with pytest.raises(RuntimeError, match='non-empty'):
        cc.connected_components_cpu.__wrapped__(empty)
    empty_labels, empty_counts = cc.connected_components(empty)  # the public entry point uses the patched global
    assert empty_labels.shape == empty_counts.shape == (0, 1, 8, 8)

    masks = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    masks[0, 0, :2, :2] = True  # component of 4 pixels
    masks[0, 0, 4:, 3:] = True  # component of 6 pixels
    labels, counts = cc.connected_components(masks)
    assert labels.max() == 2 and sorted(counts[masks].unique().tolist()) == [4, 6]
    assert (empty_labels.dtype, empty_counts.dtype) == (labels.dtype, counts.dtype)


@pytest.mark.slow
def test_edt_stub_when_triton_is_missing():
    """Runs in a fresh interpreter where `import triton` fails (None in sys.modules)."""
    block = 'import sys; sys.modules["triton"] = None\n'
    without = _run_python(block + 'import sam3\n', check=False)
    assert without.returncode != 0 and 'triton' in without.stderr
    _run_python(block + (
        'from sam3_cradio.compat import apply_cpu_shims\n'
        'names = apply_cpu_shims()\n'
        'assert names[0] == "edt_stub", names\n'
        'import sam3.model.sam3_tracker_utils as u\n'
        'try:\n'
        '    u.edt_triton(None)\n'
        'except RuntimeError as e:\n'
        '    assert "triton" in str(e)\n'
        'else:\n'
        '    raise AssertionError("stub did not raise")\n'))


def test_edt_stub_not_needed_here():
    assert compat.shim_edt_stub() is False  # sam3 (and its edt module) is already imported


# ------------------------------------------------------------------------------------------------- helpers

def test_bpe_path_is_the_clip_vocab():
    path = Path(bpe_path())
    assert path.name == compat.BPE_FILENAME and path.is_file()
    data = path.read_bytes()
    assert len(data) == BPE_SIZE
    assert hashlib.sha256(data).hexdigest() == BPE_SHA256


@pytest.mark.parametrize('origin_dir_has_file', [False, True])
def test_bpe_path_missing_says_how_to_fix(monkeypatch, tmp_path, origin_dir_has_file):
    if origin_dir_has_file:  # open_clip found but without the vocab
        fake_spec = types.SimpleNamespace(origin=str(tmp_path / '__init__.py'))
        monkeypatch.setattr(compat.importlib.util, 'find_spec', lambda name: fake_spec)
    else:  # open_clip not installed
        monkeypatch.setattr(compat.importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(FileNotFoundError, match='pip install .*open_clip_torch'):
        bpe_path()


def test_init_uninitialised_text_params():
    from sam3.model.text_encoder_ve import TextTransformer

    text = TextTransformer(context_length=8, vocab_size=32, width=16, heads=2, layers=1, output_dim=8)
    with torch.no_grad():
        text.positional_embedding.fill_(float('nan'))
        text.text_projection.fill_(float('nan'))
    model = nn.ModuleDict({'backbone': nn.ModuleDict({'text': text})})

    names = compat.init_uninitialised_text_params(model)

    assert names == ['backbone.text.positional_embedding', 'backbone.text.text_projection']
    assert torch.isfinite(text.positional_embedding).all() and torch.isfinite(text.text_projection).all()
    out = text(torch.randint(0, 32, (2, 8)))
    outs = out if isinstance(out, tuple) else (out,)
    assert all(torch.isfinite(o).all() for o in outs)


# ------------------------------------------------------------------------------------------------- utils

def _run_python(code: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get('PYTHONPATH')])))
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_connected_components_counts_equal_sam3(shims):
    from sam3.perflib import connected_components as cc
    original = cc.connected_components_cpu_single.__wrapped__
    rng = np.random.default_rng(0)
    for density in (0.0, 0.3, 0.6, 1.0):
        values = torch.from_numpy(rng.random((40, 50)) < density)
        want_labels, want_counts = original(values)
        labels, counts = cc.connected_components_cpu_single(values)
        assert torch.equal(labels, want_labels) and torch.equal(counts, want_counts)
        assert counts.dtype == want_counts.dtype


def _memory_attention_inputs(tracker) -> tuple:
    enc = tracker.transformer.encoder
    n, b = 16 * 16, 1
    kwargs = dict(src=[torch.randn(n, b, 256)], src_key_padding_mask=[None], src_pos=[torch.randn(n, b, 256)],
                  prompt=torch.randn(n, b, 64, dtype=torch.bfloat16),
                  prompt_pos=torch.randn(n, b, 64, dtype=torch.bfloat16),
                  prompt_key_padding_mask=None, feat_sizes=[(16, 16)], num_obj_ptr_tokens=0)
    return enc, kwargs


@pytest.mark.skipif(torch.cuda.is_available(), reason='host-dependent: shows the CPU-only blocker (the original '
                    'call failing); on a CUDA host the fixture tracker is built with its caches on the GPU')
def test_tracker_memory_cast_to_float32_on_cpu(tracker):
    # an all-bfloat16 memory (no float32 object pointer) reaching the float32 memory attention
    enc, kwargs = _memory_attention_inputs(tracker)
    with torch.no_grad():
        with pytest.raises(RuntimeError, match='dtype'):
            type(enc).forward.__wrapped__(enc, **kwargs)
        out = enc(**kwargs)
    assert out['memory'].dtype == torch.float32 and torch.isfinite(out['memory']).all()


def test_tracker_memory_cast_follows_the_features_device(tracker, cuda_reported):
    # a GPU machine running a model on the CPU: the features are on the CPU, so the memory is still cast
    enc, kwargs = _memory_attention_inputs(tracker)
    with torch.no_grad():
        out = enc(**kwargs)
    assert out['memory'].dtype == torch.float32 and torch.isfinite(out['memory']).all()


# ------------------------------------------------------------------------------------------------- when shims act

@pytest.mark.parametrize('cuda, device, expected', [
    (False, None, True), (False, 'cuda', True), (False, 'cpu', True),   # no CUDA: always
    (True, None, False), (True, 'cuda', False), (True, 'cuda:1', False),  # a GPU machine, GPU model: never
    (True, 'cpu', True), (True, torch.device('cpu'), True), (True, 'meta', True),  # ... a model off the GPU
])
def test_needs_cpu_shims(monkeypatch, cuda, device, expected):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    assert compat.needs_cpu_shims(device) is expected


def test_cpu_tracker_on_a_gpu_machine_gets_the_shims(tracker, cuda_reported):
    """The tracker is on the CPU: its `.cuda()` calls go to the CPU and nothing is pinned, although CUDA is
    reported (sam3's own code would call `.cuda()` and `pin_memory()` here and fail without a driver)."""
    torch.manual_seed(0)
    B, h, C = 1, 8, tracker.hidden_dim
    memory = {'maskmem_features': torch.randn(B, tracker.mem_dim, h, h).bfloat16(),
              'maskmem_pos_enc': [torch.randn(B, tracker.mem_dim, h, h)], 'obj_ptr': torch.randn(B, C)}
    kwargs = dict(frame_idx=1, is_init_cond_frame=False, current_vision_feats=[torch.randn(h * h, B, C)],
                  current_vision_pos_embeds=[torch.randn(h * h, B, C)], feat_sizes=[(h, h)], num_frames=3,
                  output_dict={'cond_frame_outputs': {0: memory}, 'non_cond_frame_outputs': {}})
    with torch.inference_mode():
        out = tracker._prepare_memory_conditioned_features(**kwargs)
        state = tracker.init_state(video_height=32, video_width=32, num_frames=2, offload_state_to_cpu=False)
    assert out.shape == (B, C, h, h) and out.device.type == 'cpu'
    assert state['storage_device'] == torch.device('cpu') and state['offload_state_to_cpu']


# ------------------------------------------------------------------------------------------------- removing

def test_cpu_shims_context_keeps_an_applied_state(shims):
    # applied before the block (the module fixture): still applied after it, the very same wrappers
    before = _patched_targets()
    with compat.cpu_shims() as names:
        assert names == shims
    assert applied_cpu_shims() == shims
    after = _patched_targets()
    assert all(a is b for name in before for a, b in zip(before[name], after[name]))


def test_remove_cpu_shims_in_process_and_apply_again(shims):
    from sam3.model.decoder import TransformerDecoder

    patched = _patched_targets()
    static_before = vars(TransformerDecoder)['_get_coords']
    try:
        assert compat.remove_cpu_shims() == shims and applied_cpu_shims() == []
        restored = _patched_targets()
        for name, fns in patched.items():
            for wrapper, now in zip(fns, restored[name]):
                assert now is wrapper.__wrapped__, name  # sam3's own function object is back
                assert not hasattr(now, compat._SHIM_ATTR)
        assert isinstance(vars(TransformerDecoder)['_get_coords'], staticmethod)  # still a staticmethod
        assert vars(TransformerDecoder)['_get_coords'] is not static_before
        assert compat.remove_cpu_shims() == []  # nothing left to remove
    finally:
        assert apply_cpu_shims() == shims  # the rest of the session needs them
    assert all(getattr(f, compat._SHIM_ATTR) == n for n, fns in _patched_targets().items() for f in fns)


_SITES = '''
from sam3.model.decoder import TransformerDecoder, TransformerEncoderCrossAttention
from sam3.model.geometry_encoders import SequenceGeometryEncoder
from sam3.model.position_encoding import PositionEmbeddingSine
from sam3.model.sam3_image import Sam3ImageOnVideoMultiGPU
from sam3.model.sam3_tracker_base import Sam3TrackerBase
from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor
from sam3.model.sam3_video_inference import Sam3VideoInference
from sam3.perflib import connected_components as cc
SITES = [(PositionEmbeddingSine, '__init__'), (TransformerDecoder, '_get_coords'),
         (SequenceGeometryEncoder, '_encode_boxes'), (Sam3TrackerBase, '_get_tpos_enc'),
         (Sam3VideoInference, '_postprocess_output'), (Sam3TrackerBase, '_prepare_memory_conditioned_features'),
         (Sam3TrackerPredictor, 'add_new_points_or_box'), (Sam3TrackerPredictor, 'init_state'),
         (Sam3VideoInference, 'init_state'), (Sam3ImageOnVideoMultiGPU, '_build_multigpu_buffer_next_chunk'),
         (TransformerEncoderCrossAttention, 'forward'), (cc, 'connected_components_cpu'),
         (cc, 'connected_components_cpu_single')]
def snapshot():
    return [(owner, attr, attr in vars(owner), vars(owner).get(attr)) for owner, attr in SITES]
'''


@pytest.mark.slow
def test_apply_remove_round_trip_restores_every_object():
    """A fresh interpreter: sam3's attributes before any shim, with the shims, after removing them (the same
    objects, `is`), inside and after the context manager, and after applying again."""
    _run_python(_SITES + '''
from sam3_cradio import compat
pristine = snapshot()
names = compat.apply_cpu_shims()
assert names == list(compat.CPU_SHIMS), names
assert all(now is not then for (*_, now), (*_, then) in zip(snapshot(), pristine))
assert compat.remove_cpu_shims() == names and compat.applied_cpu_shims() == []
for (owner, attr, own, now), (_, _, own0, then) in zip(snapshot(), pristine):
    assert own == own0 and now is then, (owner, attr)
with compat.cpu_shims() as inside:
    assert inside == names
    assert all(now is not then for (*_, now), (*_, then) in zip(snapshot(), pristine))
assert all(now is then for (*_, now), (*_, then) in zip(snapshot(), pristine))  # applied by the block: removed
assert compat.apply_cpu_shims() == names == compat.apply_cpu_shims()  # applies again, idempotent
''')


@pytest.mark.slow
def test_edt_stub_is_removed_with_the_shims():
    _run_python('import sys; sys.modules["triton"] = None\n' + '''
from sam3_cradio import compat
names = compat.apply_cpu_shims()
stub = sys.modules['sam3.model.edt']
assert names[0] == 'edt_stub' and getattr(stub, compat._SHIM_ATTR) == 'edt_stub'
assert 'edt_stub' in compat.remove_cpu_shims()
assert 'sam3.model.edt' not in sys.modules
''')


# ------------------------------------------------------------------------------------------------- per-model overrides

def test_override_propagation_plan_answers_for_one_model_then_undoes_itself():
    from sam3.model.sam3_video_inference import Sam3VideoInferenceWithInstanceInteractivity as Video

    model, other = Video.__new__(Video), Video.__new__(Video)  # no weights: only the method lookup matters
    history = {'action_history': [], 'num_frames': 3}
    assert model.parse_action_history_for_propagation(history) == ('propagation_full', None)  # sam3's own answer
    with compat.override_propagation_plan(model, ('propagation_partial', [4, 7])):
        assert model.parse_action_history_for_propagation(history) == ('propagation_partial', [4, 7])
        assert other.parse_action_history_for_propagation(history) == ('propagation_full', None)
        with compat.override_propagation_plan(model, ('propagation_fetch', None)):
            assert model.parse_action_history_for_propagation(history) == ('propagation_fetch', None)
        assert model.parse_action_history_for_propagation(history) == ('propagation_partial', [4, 7])
    assert 'parse_action_history_for_propagation' not in vars(model)
    assert model.parse_action_history_for_propagation(history) == ('propagation_full', None)
    with pytest.raises(ValueError, match='unknown propagation type'):
        with compat.override_propagation_plan(model, ('propagation_everything', None)):
            pass
    with pytest.raises(KeyError):  # an error inside the block still restores the method
        with compat.override_propagation_plan(model, ('propagation_fetch', None)):
            raise KeyError('x')
    assert 'parse_action_history_for_propagation' not in vars(model)


def test_tracker_non_overlap_output(tracker):
    # two objects' logits overlapping in the middle column: with the flag, each pixel goes to the higher logit
    logits = torch.full((2, 1, 4, 4), -5.0)
    logits[0, 0, :, :3] = 2.0
    logits[1, 0, :, 2:] = 3.0
    state = {'device': torch.device('cpu'), 'video_height': 4, 'video_width': 4}
    assert tracker.non_overlap_masks_for_output is False  # as sam3's builder makes it (model_builder.py:469)
    _, out = tracker._get_orig_video_res_output(state, logits)
    assert ((out[0] > 0) & (out[1] > 0)).sum() == 4  # the shared column
    with compat.tracker_non_overlap_output(tracker, True):
        assert tracker.non_overlap_masks_for_output is True
        _, out = tracker._get_orig_video_res_output(state, logits)
        assert not ((out[0] > 0) & (out[1] > 0)).any() and (out[1, 0, :, 2] > 0).all()
    assert tracker.non_overlap_masks_for_output is False
    with pytest.raises(KeyError), compat.tracker_non_overlap_output(tracker, True):
        raise KeyError('x')
    assert tracker.non_overlap_masks_for_output is False


def test_set_interactive_feature_sizes(tracker):
    from sam3.model.sam1_task_predictor import SAM3InteractiveImagePredictor

    model = nn.ModuleDict({'inst': SAM3InteractiveImagePredictor(tracker), 'other': nn.Linear(2, 2)})
    assert compat.set_interactive_feature_sizes(model, 16) == 1
    assert model['inst']._bb_feat_sizes == [(64, 64), (32, 32), (16, 16)]
    assert SAM3InteractiveImagePredictor(tracker)._bb_feat_sizes == [(288, 288), (144, 144), (72, 72)]  # class as is
    assert compat.set_interactive_feature_sizes(nn.Linear(2, 2), 16) == 0
    with pytest.raises(ValueError, match='positive'):
        compat.set_interactive_feature_sizes(model, 0)
