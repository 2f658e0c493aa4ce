"""End to end on a tiny SAM3 + the NVIDIA fixture's C-RADIO, on real photos: text, box and point prompts, odd
images and bad prompts, and the `sam3-cradio segment` command."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sam3_cradio.cli import main
from sam3_cradio.predictor import Sam3ImagePredictor, Sam3Result

from conftest import CRADIO_TINY, IMAGES

PHOTO = IMAGES / 'coffee.jpg'   # 400 x 600


@pytest.fixture(scope='module')
def predictor(tiny_image_model):
    # random SAM3 weights score everything near 0.3-0.5: a low threshold keeps detections to check
    return Sam3ImagePredictor(tiny_image_model, confidence_threshold=0.0).set_image(PHOTO)


def _well_formed(r: Sam3Result, h=400, w=600):
    n = len(r)
    assert r.masks.shape == (n, h, w) and r.masks.dtype == bool
    assert r.boxes.shape == (n, 4) and r.scores.shape == (n,) and len(r.labels) == n
    assert (r.boxes >= 0).all() and (r.boxes[:, [0, 2]] <= w).all() and (r.boxes[:, [1, 3]] <= h).all()
    assert (r.boxes[:, 2] >= r.boxes[:, 0]).all() and (r.boxes[:, 3] >= r.boxes[:, 1]).all()
    assert ((0 <= r.scores) & (r.scores <= 1)).all()
    assert np.isfinite(r.boxes).all() and np.isfinite(r.scores).all()


def test_text_prompt(predictor):
    r = predictor.predict_text('cup, saucer')
    _well_formed(r)
    assert len(r) > 0 and set(r.labels) == {'cup', 'saucer'}
    assert r.timings['encoder'] > 0 and r.timings['decoder'] > 0
    high = r.filter(0.4)
    assert len(high) == int((r.scores >= 0.4).sum())


def test_box_prompts(predictor):
    r = predictor.predict_boxes([[100, 50, 300, 250], [400, 100, 500, 300]], labels=[True, False])
    _well_formed(r)
    assert set(r.labels) <= {'visual'}
    r = predictor.predict_boxes([[-50, -50, 300, 250]], text='cup')  # partly outside: clipped
    _well_formed(r)


def test_point_prompts(predictor):
    r = predictor.predict_points([[300, 200]], labels=[1])
    _well_formed(r)
    assert len(r) == 3 and (np.diff(r.scores) <= 0).all()   # three candidates, best first
    r = predictor.predict_points([[300, 200], [20, 20]], labels=[1, 0], box=[200, 100, 400, 300],
                                 multimask_output=False)
    _well_formed(r)
    assert len(r) == 1


@pytest.mark.parametrize('call,match', [
    (lambda p: p.predict_text(''), 'empty'),
    (lambda p: p.predict_text('cat, '), 'empty'),
    (lambda p: p.predict_boxes([[700, 500, 800, 600]]), 'outside'),
    (lambda p: p.predict_boxes([[10, 10, 10, 50]]), 'zero or negative area'),
    (lambda p: p.predict_boxes([[1, 2, 3]]), '4 finite numbers'),
    (lambda p: p.predict_boxes([]), 'at least one box'),
    (lambda p: p.predict_points([[900, 10]], [1]), 'outside'),
    (lambda p: p.predict_points([[10, 10]], [2]), 'label'),
    (lambda p: p.predict_points(), 'points, a box'),
])
def test_bad_prompts(predictor, call, match):
    with pytest.raises(ValueError, match=match):
        call(predictor)


def test_prompt_before_image(tiny_image_model):
    with pytest.raises(RuntimeError, match='set_image'):
        Sam3ImagePredictor(tiny_image_model).predict_text('cat')


def test_odd_images(tiny_image_model, tmp_path):
    photo = np.asarray(Image.open(PHOTO))
    gray = photo.mean(axis=2).astype(np.uint8)
    rgba = np.concatenate([photo, np.full(photo.shape[:2] + (1,), 128, np.uint8)], axis=2)
    path16 = tmp_path / 'gray16.png'
    Image.fromarray(gray.astype(np.uint16) * 257).save(path16)
    predictor = Sam3ImagePredictor(tiny_image_model, confidence_threshold=0.0)
    for image in (gray, rgba, path16, Image.fromarray(photo).convert('P')):
        _well_formed(predictor.set_image(image).predict_text('cup'))
    (tmp_path / 'notes.png').write_text('not an image')
    with pytest.raises(ValueError, match='not an image'):
        predictor.set_image(tmp_path / 'notes.png')


def test_segment_command(tmp_path, capsys):
    out = tmp_path / 'seg.png'
    common = ['--backbone', 'cradio_tiny', '--cradio-checkpoint', str(CRADIO_TINY / 'model.pth.tar'),
              '--random-weights', '--device', 'cpu']
    assert main(['segment', str(PHOTO), '--text', 'cup', '--threshold', '0', '--out', str(out)] + common) == 0
    assert Image.open(out).size == (600, 400)
    assert 'objects' in capsys.readouterr().out
    assert main(['segment', str(PHOTO), '--point', '300', '200', '1', '--out', str(out)] + common) == 0
    assert main(['segment', str(PHOTO), '--box', '10', '10', '10', '50', '--out', str(out)] + common) == 2
    assert 'zero or negative area' in capsys.readouterr().err
    assert main(['segment', str(PHOTO), '--out', str(out)] + common) == 2
