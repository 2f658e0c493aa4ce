"""End to end on a tiny SAM3 + the NVIDIA fixture's C-RADIO, on real photos: text, box and point prompts, odd
images and bad prompts, the `sam3-cradio segment` command; Sam3Result <-> supervision.Detections and drawing."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import supervision as sv
import torch
from PIL import Image

from conftest import CRADIO_TINY, IMAGES
from sam3_cradio.cli import main
from sam3_cradio.draw import annotate, default_labels, draw_detections
from sam3_cradio.predictor import (
    Sam3ImagePredictor,
    Sam3Result,
    TextTruncatedWarning,
    masks_to_boxes,
    text_overflow,
)

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
    # several phrases: each phrase's own detections, merged in phrase order (through supervision's merge)
    cup, saucer = predictor.predict_text('cup'), predictor.predict_text(['saucer'])
    assert r.labels == ['cup'] * len(cup) + ['saucer'] * len(saucer)
    for field in ('masks', 'boxes', 'scores'):
        assert np.array_equal(getattr(r, field), np.concatenate([getattr(cup, field), getattr(saucer, field)]))
    assert r.timings['encoder'] == cup.timings['encoder']  # one encoder pass for all phrases


def _echo_first_positive_box(model, monkeypatch) -> list:
    """Make the detector return one confident detection: the first positive prompt box, with a mask filling it.
    Random SAM3 weights find nothing; this checks the geometry of box prompts end to end (pixels -> the
    normalised box sam3 receives -> sam3's detection -> pixels). Returns the prompts sam3 received."""
    original = model.forward_grounding
    received = []

    def forward_grounding(**kwargs):
        out = dict(original(**kwargs))
        prompt = kwargs['geometric_prompt']
        if prompt is None or prompt.box_embeddings is None or not prompt.box_labels.bool().any():
            return out  # the text prompt's own pass, before any box
        boxes, labels = prompt.box_embeddings[:, 0], prompt.box_labels[:, 0].bool()
        received.append((boxes.clone(), labels.clone()))
        cx, cy, w, h = boxes[labels][0].tolist()
        out['pred_logits'] = torch.full_like(out['pred_logits'], -10.0)
        out['pred_logits'][0, 0] = 10.0
        out['presence_logit_dec'] = torch.full_like(out['presence_logit_dec'], 10.0)
        out['pred_boxes'] = out['pred_boxes'].clone()
        out['pred_boxes'][0, 0] = torch.tensor([cx, cy, w, h])
        masks = torch.full_like(out['pred_masks'], -10.0)
        mh, mw = masks.shape[-2:]
        masks[0, 0, round((cy - h / 2) * mh):round((cy + h / 2) * mh), round((cx - w / 2) * mw):round((cx + w / 2) * mw)] = 10.0
        out['pred_masks'] = masks
        return out

    monkeypatch.setitem(vars(model), 'forward_grounding', forward_grounding)
    return received


def test_box_prompts(predictor, monkeypatch):
    received = _echo_first_positive_box(predictor.model, monkeypatch)
    monkeypatch.setattr(predictor, 'confidence_threshold', 0.5)
    r = predictor.predict_boxes([[100, 50, 300, 250], [400, 100, 500, 300]], labels=[True, False])
    _well_formed(r)
    boxes, labels = received[-1]  # both exemplars reached sam3, normalised (cx, cy, w, h), with their labels
    np.testing.assert_allclose(boxes.numpy(), [[200 / 600, 150 / 400, 200 / 600, 200 / 400],
                                               [450 / 600, 200 / 400, 100 / 600, 200 / 400]], atol=1e-6)
    assert labels.tolist() == [True, False]
    assert len(r) == 1 and r.labels == ['visual'] and r.scores[0] > 0.99
    np.testing.assert_allclose(r.boxes[0], [100, 50, 300, 250], atol=1e-3)  # back in pixels
    np.testing.assert_allclose(masks_to_boxes(r.masks)[0], [100, 50, 300, 250], atol=600 / 64)  # the mask fills it

    r = predictor.predict_boxes([[-50, -50, 300, 250]], text='cup')  # partly outside: clipped to the image
    _well_formed(r)
    np.testing.assert_allclose(received[-1][0].numpy(), [[150 / 600, 125 / 400, 300 / 600, 250 / 400]], atol=1e-6)
    assert len(r) == 1 and r.labels == ['cup']
    np.testing.assert_allclose(r.boxes[0], [0, 0, 300, 250], atol=1e-3)


def _sam3_box_loop(predictor, boxes, labels, text=None) -> Sam3Result:
    """sam3's own way to prompt several exemplar boxes: Sam3Processor.set_text_prompt (with a text), then
    add_geometric_prompt once per box, each call decoding again."""
    state, proc = predictor._state, predictor.processor
    h, w = predictor.original_size
    proc.reset_all_prompts(state)
    with torch.inference_mode():
        if text is not None:
            proc.set_text_prompt(text, state)
        for (x0, y0, x1, y1), positive in zip(boxes, labels):
            out = proc.add_geometric_prompt([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h],
                                            positive, state)
    return predictor._grounding_result(out, text or 'visual', 0.0)


def _count_decoder_runs(model, monkeypatch) -> list:
    runs, original = [], model.forward_grounding

    def counted(**kwargs):
        runs.append(kwargs['geometric_prompt'].box_embeddings.shape[0])  # boxes in the prompt
        return original(**kwargs)

    monkeypatch.setitem(vars(model), 'forward_grounding', counted)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize('text', [None, 'cup'])
def test_many_exemplar_boxes_decode_once_like_sam3s_multibox_prompt(predictor, monkeypatch, text):
    """All boxes go into one prompt, decoded once; the detections are those sam3's own loop gives after its last
    box (whole-pixel boxes: the same normalised numbers reach sam3 both ways)."""
    boxes = [[40, 30, 160, 150], [300, 50, 420, 200], [500, 300, 590, 390], [10, 200, 120, 390],
             [220, 220, 330, 330], [450, 20, 560, 120], [130, 100, 250, 260]]
    labels = [True, True, False, True, False, True, True]
    runs = _count_decoder_runs(predictor.model, monkeypatch)
    ours = predictor.predict_boxes(boxes, labels, text=text)
    assert runs == [len(boxes)]                                     # one decoder run, with every box
    runs.clear()
    theirs = _sam3_box_loop(predictor, boxes, labels, text)
    assert runs == [0] * (text is not None) + list(range(1, len(boxes) + 1))  # sam3: one run per box
    _well_formed(ours)
    assert len(ours) == len(theirs) > 0 and ours.labels == theirs.labels
    for field in ('masks', 'boxes', 'scores'):
        assert np.array_equal(getattr(ours, field), getattr(theirs, field)), field


# a phrase of exactly 30 BPE tokens (checked below), the most SAM3's text encoder reads
LONG = ('a small brown dog with a red collar sitting next to a large white cat on a green sofa in the living room '
        'near the big open window and a')


@pytest.mark.slow
def test_long_text_prompts_warn_with_the_dropped_words(predictor):
    """Past SAM3's 32-token context (30 words' worth of BPE tokens) a phrase is cut: two prompts differing only
    there give the same detections, and each warns, pointing at the caller, naming what was ignored."""
    assert text_overflow(LONG) is None and text_overflow(LONG, predictor.model) is None
    zebra, giraffe = f'{LONG} zebra', f'{LONG} giraffe on the rug'
    o = text_overflow(giraffe, predictor.model)
    assert (o.tokens, o.limit, o.context_length, o.dropped) == (34, 30, 32, 'giraffe on the rug')
    assert text_overflow(giraffe) == o                                   # no model: the same tokenizer and limit
    with pytest.warns(TextTruncatedWarning) as w1:
        a = predictor.predict_text(zebra)
    with pytest.warns(TextTruncatedWarning) as w2:
        b = predictor.predict_text(giraffe)
    assert len(w1) == len(w2) == 1 and w1[0].filename == w2[0].filename == __file__
    assert "reads 30 (32 with its start and end tokens), so it ignored 'zebra'" in str(w1[0].message)
    assert "ignored 'giraffe on the rug'" in str(w2[0].message)
    assert len(a) > 0 and np.array_equal(a.masks, b.masks) and np.array_equal(a.scores, b.scores)
    # per phrase: only the long one of several warns; box prompts with a text warn too
    with pytest.warns(TextTruncatedWarning, match="ignored 'zebra'") as w:
        predictor.predict_text(f'cup, {zebra}')
    assert len(w) == 1
    with pytest.warns(TextTruncatedWarning, match="ignored 'giraffe on the rug'"):
        predictor.predict_boxes([[40, 30, 160, 150]], text=giraffe)
    with warnings.catch_warnings():
        warnings.simplefilter('error', TextTruncatedWarning)
        predictor.predict_text(f'cup, {LONG}')                           # 30 tokens fit: no warning


def test_any_image_of_at_least_one_pixel(tiny_image_model, tmp_path, capsys):
    """One size rule for every front end (sam3_cradio.images): 1 x 1 px and thin strips are images too."""
    predictor = Sam3ImagePredictor(tiny_image_model, confidence_threshold=0.0)
    for h, w in ((1, 1), (1, 5), (4, 100)):
        predictor.set_image(np.full((h, w, 3), 128, np.uint8))
        for r in (predictor.predict_text('cup'), predictor.predict_boxes([[0, 0, w, h]]),
                  predictor.predict_points([[w / 2, h / 2]])):
            _well_formed(r, h, w)
    Image.fromarray(np.full((1, 1, 3), 90, np.uint8)).save(tmp_path / 'dot.png')
    out = tmp_path / 'dot_seg.png'
    assert main(['segment', str(tmp_path / 'dot.png'), '--text', 'cup', '--out', str(out), '--backbone',
                 'cradio_tiny', '--cradio-checkpoint', str(CRADIO_TINY / 'model.pth.tar'), '--random-weights',
                 '--device', 'cpu']) == 0
    assert Image.open(out).size == (1, 1)
    with pytest.raises(ValueError, match='empty'):
        predictor.set_image(np.zeros((0, 4, 3), np.uint8))


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
    (lambda p: p.predict_text([]), 'at least one noun phrase'),
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


@pytest.mark.slow
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


# ---------------------------------------------------------------------------------------------------------------
# Sam3Result <-> supervision.Detections, and drawing
# ---------------------------------------------------------------------------------------------------------------

def _result(h: int = 20, w: int = 30) -> Sam3Result:
    """Three detections by hand: two 'cup' (one low-scoring), one 'saucer'."""
    masks = np.zeros((3, h, w), bool)
    masks[0, 2:8, 3:10] = True
    masks[1, 10:18, 12:25] = True
    masks[2, 5:9, 20:28] = True
    return Sam3Result(masks, masks_to_boxes(masks), np.array([0.9, 0.2, 0.6], np.float32), ['cup', 'saucer', 'cup'],
                      {'encoder': 1.0, 'decoder': 0.5})


def test_to_detections_and_back():
    r = _result()
    d = r.to_detections()
    assert isinstance(d, sv.Detections) and len(d) == 3
    assert np.array_equal(d.xyxy, r.boxes) and np.array_equal(d.mask, r.masks)
    assert np.array_equal(d.confidence, r.scores)
    assert d.class_id.tolist() == [0, 1, 0]                       # per label, in order of first appearance
    assert d.data['class_name'].tolist() == ['cup', 'saucer', 'cup']
    back = Sam3Result.from_detections(d, timings=r.timings)
    for field in ('masks', 'boxes', 'scores', 'labels', 'timings'):
        assert np.array_equal(getattr(back, field), getattr(r, field)) if field != 'timings' \
            else back.timings == r.timings
    assert back.boxes.dtype == np.float32 and back.scores.dtype == np.float32 and back.masks.dtype == bool
    # detections from elsewhere: class ids as labels, no confidence -> 1.0
    plain = sv.Detections(xyxy=r.boxes, mask=r.masks, class_id=np.array([4, 4, 7]))
    other = Sam3Result.from_detections(plain)
    assert other.labels == ['4', '4', '7'] and other.scores.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match='needs masks'):
        Sam3Result.from_detections(sv.Detections(xyxy=r.boxes))
    with pytest.raises(ValueError, match='labels'):
        Sam3Result(r.masks, r.boxes, r.scores).to_detections()


def test_empty_results_keep_the_image_size():
    empty = Sam3Result.from_detections(sv.Detections.empty(), image_size=(20, 30))
    assert empty.masks.shape == (0, 20, 30) and empty.boxes.shape == (0, 4) and len(empty) == 0
    assert len(empty.to_detections()) == 0
    merged = Sam3Result.merge([empty, empty], 20, 30)
    assert merged.masks.shape == (0, 20, 30) and merged.labels == []
    assert Sam3Result.merge([], 20, 30).masks.shape == (0, 20, 30)
    assert _result().filter(0.95).masks.shape == (0, 20, 30)


def test_merge_and_filter_go_through_detections():
    r = _result()
    merged = Sam3Result.merge([r, Sam3Result.from_detections(sv.Detections.empty(), (20, 30)), r.filter(0.5)], 20, 30)
    assert len(merged) == 5 and merged.labels == ['cup', 'saucer', 'cup', 'cup', 'cup']
    assert np.array_equal(merged.masks[3:], r.masks[[0, 2]]) and np.array_equal(merged.boxes[3:], r.boxes[[0, 2]])
    assert merged.timings == {'encoder': 1.0, 'decoder': 1.0}     # one encoder pass; decoder passes add up
    kept = r.filter(0.5)                                         # masks, boxes, scores and labels move together
    assert kept.labels == ['cup', 'cup'] and kept.scores.tolist() == pytest.approx([0.9, 0.6])
    assert np.array_equal(kept.masks, r.masks[[0, 2]]) and np.array_equal(kept.boxes, r.boxes[[0, 2]])
    assert kept.timings == r.timings


def test_drawing_from_detections():
    r = _result()
    image = np.full((20, 30, 3), 40, np.uint8)
    drawn = draw_detections(image, r.to_detections())
    assert drawn.shape == image.shape and drawn.dtype == np.uint8 and np.array_equal(image, np.full_like(image, 40))
    for m in r.masks:                                            # every mask is tinted
        assert (drawn[m] != 40).any()
    assert default_labels(r.to_detections()) == ['cup 0.90', 'saucer 0.20', 'cup 0.60']
    # annotate(arrays) draws the same as draw_detections with ids as tracker ids (its colour per object)
    ids = np.array([5, 1, 9])
    d = sv.Detections(xyxy=r.boxes, mask=r.masks, confidence=r.scores, tracker_id=ids)
    assert default_labels(d) == ['#5 0.90', '#1 0.20', '#9 0.60']
    assert np.array_equal(annotate(image, r.masks, r.boxes, r.scores, ids=ids), draw_detections(image, d))
    assert np.array_equal(draw_detections(image, sv.Detections.empty()), image)
    with pytest.raises(ValueError, match='one label per detection'):
        draw_detections(image, r.to_detections(), labels=['a'])
