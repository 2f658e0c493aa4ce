"""Code written against sam3 runs on our models: sam3's own Sam3Processor, interactive predictor and video
predictor, and build_sam3 under sam3's builder argument names (the README's "Migrating from sam3")."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CRADIO_TINY, IMAGES
from sam3_cradio import build_sam3, build_sam3_video_predictor
from sam3_cradio.build import TRUNK_PREFIX


@pytest.fixture(scope='module')
def photo() -> Image.Image:
    return Image.open(IMAGES / 'coffee.jpg').convert('RGB').resize((160, 120))


@pytest.fixture(scope='module')
def image_model():
    torch.manual_seed(0)
    return build_sam3('cradio_tiny', enable_inst_interactivity=True, load_from_HF=False, device='cpu',
                      cradio_checkpoint=CRADIO_TINY / 'model.pth.tar')


def test_the_model_carries_its_input_size(image_model):
    assert image_model.image_size == 256
    video = build_sam3('cradio_tiny', mode='video', resolution=192, load_from_HF=False, device='cpu')
    assert video.image_size == 192  # the attribute sam3's video model reads to load frames


def test_sam3_processor_with_the_default_resolution_says_the_fix(image_model, photo):
    from sam3.model.sam3_image_processor import Sam3Processor

    processor = Sam3Processor(image_model, device='cpu')  # sam3's default resolution: 1008
    with pytest.raises(ValueError, match=r'built for 256 x 256 px inputs, got 1008 x 1008.*'
                                         r'Sam3Processor\(model, resolution=256\)'):
        processor.set_image(photo)


def test_sam3_processor_text_and_box_prompts(image_model, photo):
    from sam3.model.sam3_image_processor import Sam3Processor

    processor = Sam3Processor(image_model, resolution=image_model.image_size, device='cpu', confidence_threshold=0.0)
    state = processor.set_image(photo)
    state = processor.set_text_prompt(prompt='cup', state=state)
    n = len(state['scores'])
    assert n > 0 and state['masks'].shape[-2:] == (120, 160) and state['boxes'].shape == (n, 4)
    state = processor.add_geometric_prompt(box=[0.5, 0.5, 0.3, 0.3], label=True, state=state)  # cxcywh, normalised
    assert state['masks'].shape[-2:] == (120, 160)
    # the same image through our predictor: identical detections (it wraps the same processor)
    from sam3_cradio.predictor import Sam3ImagePredictor
    ours = Sam3ImagePredictor(image_model, confidence_threshold=0.0).set_image(np.asarray(photo)).predict_text('cup')
    theirs = Sam3Processor(image_model, resolution=256, device='cpu', confidence_threshold=0.0)
    st = theirs.set_text_prompt(prompt='cup', state=theirs.set_image(photo))
    np.testing.assert_allclose(np.sort(ours.scores), np.sort(st['scores'].float().numpy()), atol=1e-4)


def test_sam3_interactive_predictor(image_model, photo):
    from sam3.model.sam3_image_processor import Sam3Processor

    processor = Sam3Processor(image_model, resolution=image_model.image_size, device='cpu')
    state = processor.set_image(photo)
    masks, scores, logits = image_model.predict_inst(state, point_coords=np.array([[80, 60]]),
                                                     point_labels=np.array([1]), multimask_output=True)
    assert masks.shape == (3, 120, 160) and scores.shape == (3,)


def _frames(tmp_path):
    folder = tmp_path / 'frames'
    folder.mkdir()
    a = np.asarray(Image.open(IMAGES / 'astronaut.jpg').convert('RGB').resize((128, 128)))
    for i in range(4):
        Image.fromarray(np.ascontiguousarray(a[16:112, 4 * i:4 * i + 96])).save(folder / f'{i:05d}.jpg')
    return folder


def test_sam3_video_predictor_requests(tmp_path):
    """sam3's documented session API (start_session / add_prompt / propagate_in_video / close_session)."""
    predictor = build_sam3_video_predictor('cradio_tiny', load_from_HF=False, device='cpu')
    from sam3.model.sam3_video_predictor import Sam3VideoPredictor
    assert type(predictor) is Sam3VideoPredictor and predictor.model.image_size == 256
    session = predictor.handle_request({'type': 'start_session', 'resource_path': str(_frames(tmp_path))})['session_id']
    out = predictor.handle_request({'type': 'add_prompt', 'session_id': session, 'frame_index': 0, 'text': 'person'})
    assert out['frame_index'] == 0 and 'outputs' in out
    frames = [r['frame_index'] for r in predictor.handle_stream_request(
        {'type': 'propagate_in_video', 'session_id': session, 'propagation_direction': 'forward'})]
    assert frames == [0, 1, 2, 3]
    predictor.handle_request({'type': 'close_session', 'session_id': session})


def test_sam3_video_model_init_state(tmp_path):
    """The model's own init_state / add_prompt / propagate_in_video, as sam3's predictor calls them."""
    model = build_sam3('cradio_tiny', mode='video', load_from_HF=False, device='cpu')
    state = model.init_state(resource_path=str(_frames(tmp_path)))
    assert state['num_frames'] == 4
    frame, _ = model.add_prompt(state, frame_idx=0, text_str='person')
    assert frame == 0
    assert [f for f, _ in model.propagate_in_video(state, start_frame_idx=0, reverse=False)] == [0, 1, 2, 3]


def _sam3_pt(tmp_path):
    video = build_sam3('cradio_tiny', mode='video', pretrained=False, device='cpu')
    sd = {k: v for k, v in video.state_dict().items() if not k.startswith(TRUNK_PREFIX['video'])}
    path = tmp_path / 'sam3.pt'
    torch.save({'model': sd}, path)
    return path


def test_sam3_builder_argument_names(tmp_path):
    path = _sam3_pt(tmp_path)
    tiny = dict(cradio_checkpoint=CRADIO_TINY / 'model.pth.tar', device='cpu')
    model = build_sam3('cradio_tiny', checkpoint_path=path, load_from_HF=False, eval_mode=False,
                       enable_inst_interactivity=False, **tiny)
    assert model.sam3_cradio_cfg['sam3_weights'] == str(path)     # a checkpoint loads even with load_from_HF=False
    assert model.training and model.inst_interactive_predictor is None
    boxes_only = build_sam3('cradio_tiny', checkpoint_path=path, enable_segmentation=False, **tiny)
    assert boxes_only.segmentation_head is None and not boxes_only.training
    n_seg = sum(k.startswith('detector.segmentation_head.') for k in torch.load(path)['model'])
    assert n_seg > 0 and boxes_only.sam3_cradio_cfg['ignored_by_design'] >= n_seg
    random = build_sam3('cradio_tiny', load_from_HF=False, device='cpu')
    assert random.sam3_cradio_cfg['sam3_weights'] is None
    compiled = build_sam3('cradio_tiny', load_from_HF=False, compile=True, device='cpu')
    assert compiled.backbone.vision_backbone.trunk._compiled_call_impl is not None


@pytest.mark.parametrize('kwargs,match', [
    (dict(checkpoint_path='a.pt', sam3_checkpoint='b.pt'), 'sam3_checkpoint and checkpoint_path'),
    (dict(interactive=True, enable_inst_interactivity=False), 'interactive and enable_inst_interactivity'),
    (dict(pretrained=True, load_from_HF=False), 'pretrained=True and load_from_HF=False disagree'),
    (dict(mode='video', enable_segmentation=False), 'video model always segments'),
])
def test_conflicting_argument_pairs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_sam3('cradio_tiny', device='cpu', **kwargs)
