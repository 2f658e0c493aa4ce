"""Video API (sam3_cradio.video) on the tiny SAM3 video model: sources, prompts on any frame (text, boxes, clicks,
masks), propagation in both directions, caching, track_video, and every input error.

Random SAM3 weights give no confident detections and empty tracker masks. Where a test needs tracked objects with
masks, the ``confident_tracker`` fixture makes the tracker's SAM mask decoder return a fixed blob with a positive
object score (a forward hook; the rest of sam3's tracking code runs unchanged), and the text-prompt test makes the
detector confident about its two best queries on one frame.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CRADIO_TINY, IMAGES, make_tracker_confident, read_video_frames
from sam3_cradio.cli import main
from sam3_cradio.jobs.track import track_video
from sam3_cradio.predictor import TextTruncatedWarning
from sam3_cradio.track_outputs import davis_palette
from sam3_cradio.video import (
    Sam3VideoPredictor,
    VideoFrameResult,
    VideoInfo,
    VideoNotOpenError,
    frame_names,
    iter_video_frames,
    list_frame_files,
    masks_to_boxes,
    probe_video,
)

T, H, W = 10, 96, 128  # frames; a small non-square video keeps sam3's CPU post-processing cheap
FPS = 10


def _frames() -> list:
    """10 frames of a real photo, the view shifted 3 px right per frame."""
    photo = Image.open(IMAGES / 'astronaut.jpg').convert('RGB').resize((160, 160), Image.BILINEAR)
    a = np.asarray(photo)
    return [np.ascontiguousarray(a[20:20 + H, 3 * i:3 * i + W]) for i in range(T)]


def _write_mp4(path: Path, frames: list, fps: float = FPS) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, (W, H))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def _count_frames(path: Path) -> tuple:
    frames = read_video_frames(path)
    return len(frames), frames


@pytest.fixture(scope='module')
def clip(tmp_path_factory) -> dict:
    """The same 10 frames as arrays, an .mp4 and a JPEG folder (named 0, 5, 10, ... to test natural order)."""
    root = tmp_path_factory.mktemp('video')
    frames = _frames()
    mp4 = _write_mp4(root / 'clip.mp4', frames)
    short = _write_mp4(root / 'short.mp4', frames[:3])
    folder = root / 'frames'
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f'{5 * i}.jpg', quality=95)
    (folder / 'notes.txt').write_text('not a frame')
    return {'frames': frames, 'mp4': mp4, 'short': short, 'folder': folder, 'root': root}


@pytest.fixture(scope='module')
def model(tiny_ckpt):
    from sam3_cradio.build import build_sam3

    torch.manual_seed(0)
    return build_sam3('cradio_tiny', mode='video', pretrained=False, cradio_checkpoint=tiny_ckpt, device='cpu')


@pytest.fixture
def confident_tracker(model):
    handle = make_tracker_confident(model)
    yield
    handle.remove()


def check_result(r: VideoFrameResult, frame_idx: int = None) -> VideoFrameResult:
    assert isinstance(r, VideoFrameResult)
    if frame_idx is not None:
        assert r.frame_idx == frame_idx
    n = len(r)
    assert r.obj_ids.shape == (n,) and r.obj_ids.dtype == np.int64 and len(set(r.obj_ids.tolist())) == n
    assert r.masks.shape == (n, H, W) and r.masks.dtype == bool      # the original video size
    assert r.masks.any(axis=(1, 2)).all()                              # no empty masks
    assert r.boxes.shape == (n, 4) and r.boxes.dtype == np.float32
    assert (r.boxes[:, :2] >= 0).all() and (r.boxes[:, 2] <= W).all() and (r.boxes[:, 3] <= H).all()
    assert (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, 3] > r.boxes[:, 1]).all()
    assert np.array_equal(r.boxes, masks_to_boxes(r.masks))
    assert r.scores.shape == (n,) and r.scores.dtype == np.float32
    assert np.isfinite(r.scores).all() and (r.scores >= 0).all() and (r.scores <= 1).all()
    return r


# ---------------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------------

def test_frame_folder_order_and_sources(clip):
    names = [p.name for p in list_frame_files(clip['folder'])]
    assert names == [f'{5 * i}.jpg' for i in range(T)]               # natural order, not 0, 10, 15, ..., 5
    for source in ('mp4', 'folder'):
        decoded = list(iter_video_frames(clip[source]))
        assert len(decoded) == T
        for got, want in zip(decoded, clip['frames']):                # lossy, but the same frames in order
            assert got.shape == (H, W, 3) and got.dtype == np.uint8
            assert np.abs(got.astype(int) - want).mean() < 8
    info = probe_video(clip['mp4'])
    assert (info.num_frames, info.height, info.width, info.fps) == (T, H, W, FPS)
    assert masks_to_boxes(np.zeros((2, 4, 5), bool)).tolist() == [[0] * 4] * 2
    m = np.zeros((1, 4, 5), bool)
    m[0, 1:3, 2] = True
    assert masks_to_boxes(m).tolist() == [[2, 1, 3, 3]]


def test_open_every_source(model, clip):
    p = Sam3VideoPredictor(model)
    size = model.sam3_cradio_cfg['image_size']
    batches, fps = {}, {}
    for source in (clip['mp4'], clip['folder'], clip['frames'], np.stack(clip['frames']),
                   [Image.fromarray(f) for f in clip['frames']]):
        info = p.open(source)
        assert isinstance(info, VideoInfo) and (info.num_frames, info.height, info.width) == (T, H, W)
        assert p.num_frames == T and p.frame_size == (H, W)
        state = p.state                                                # sam3's session, made on first use
        assert state is p.state
        assert (state['orig_height'], state['orig_width']) == (H, W)
        batch = state['input_batch'].img_batch
        assert tuple(batch.shape) == (T, 3, size, size)                # the model's image_size, not 1008
        key = type(source).__name__ if not isinstance(source, Path) else source.suffix or 'dir'
        batches[key], fps[key] = batch.float(), p.fps
    assert fps == {'.mp4': pytest.approx(FPS), 'dir': None, 'list': None, 'ndarray': None}
    assert torch.equal(batches['list'], batches['ndarray'])           # arrays, PIL images: identical input
    assert (batches['.mp4'] - batches['list']).abs().mean() < 0.1      # mp4 is lossy but scaled like the rest
    assert (batches['dir'] - batches['list']).abs().mean() < 0.1


# ---------------------------------------------------------------------------------------------------------------
# Prompts and propagation
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_box_and_points_on_middle_frame_propagate_both(model, clip, confident_tracker):
    p = Sam3VideoPredictor(model)
    p.open(clip['mp4'])
    r = check_result(p.add_box(5, [30, 20, 100, 80]), 5)
    obj = r.prompt_obj_id
    assert obj == 0 and r.obj_ids.tolist() == [obj]
    r = check_result(p.add_points(5, [[64, 50], [10, 10]], [1, 0], obj_id=obj), 5)  # refines the same object
    assert r.prompt_obj_id == obj and p.obj_ids == [obj]

    results = [check_result(r) for r in p.propagate('both')]
    assert [r.frame_idx for r in results] == [5, 6, 7, 8, 9, 4, 3, 2, 1, 0]
    for r in results:
        assert r.obj_ids.tolist() == [obj]                             # the same id on every frame

    again = list(p.propagate('both'))                                 # nothing changed: sam3's cached results
    assert [r.frame_idx for r in again] == [r.frame_idx for r in results]
    for a, b in zip(again, results):
        assert np.array_equal(a.obj_ids, b.obj_ids) and np.array_equal(a.masks, b.masks)
    assert p.state['action_history'][-1]['type'] == 'propagation_fetch'
    assert 'parse_action_history_for_propagation' not in vars(model)  # the plan override left no trace

    p.remove_object(obj)
    assert p.obj_ids == []
    assert all(len(check_result(r)) == 0 for r in p.propagate('forward', start_frame=0))
    with pytest.raises(ValueError, match='not tracked'):
        p.remove_object(obj)
    p.reset()
    with pytest.raises(ValueError, match='nothing to track'):
        p.propagate()


def test_points_new_objects_any_frame_and_directions(model, clip, confident_tracker):
    p = Sam3VideoPredictor(model)
    p.open(clip['folder'])
    a = check_result(p.add_points(7, [[20, 20], [40, 30]], [1, 0]), 7).prompt_obj_id
    b = check_result(p.add_points(2, [[100, 70]]), 2).prompt_obj_id
    assert (a, b) == (0, 1) and p.obj_ids == [0, 1]
    # default start of a backward pass: the last prompted frame (7); object 1 is tracked before its prompt frame
    back = [check_result(r) for r in p.propagate('backward', max_frames=2)]
    assert [r.frame_idx for r in back] == [7, 6]
    fwd = [check_result(r) for r in p.propagate('forward', start_frame=8, max_frames=1)]
    assert [r.frame_idx for r in fwd] == [8]
    for r in back + fwd:
        assert set(r.obj_ids.tolist()) <= {0, 1} and len(r) >= 1


def test_text_prompt(model, clip, caplog, monkeypatch):
    p = Sam3VideoPredictor(model)
    p.open(clip['frames'])
    check_result(p.add_text(0, 'astronaut'), 0)                       # random weights: possibly empty
    assert [check_result(r).frame_idx for r in p.propagate('forward', max_frames=3)] == [0, 1, 2]

    # the detector's two best queries on frame 4 made confident: they become tracked objects and go through
    # sam3's full (detector + tracker) propagation
    original = model.detector.forward_video_grounding_multigpu

    def two_confident(*args, **kwargs):
        out, backbone_out = original(*args, **kwargs)
        if kwargs.get('frame_idx') == 4:
            logits = out['pred_logits'].clone()
            logits[0, logits[0, :, 0].topk(2).indices, 0] = 10.0  # (NMS left every random query at -1e4)
            out = {**out, 'pred_logits': logits}
        return out, backbone_out

    monkeypatch.setattr(model.detector, 'forward_video_grounding_multigpu', two_confident)
    p.add_points(4, [[50, 50]])
    with caplog.at_level(logging.WARNING, logger='sam3_cradio.video'):
        check_result(p.add_text(4, '  person '), 4)
    assert 'starts over' in caplog.text                                # the clicked object was dropped
    assert p.text == 'person' and 1 <= len(p.obj_ids) <= 2
    frames = [check_result(r).frame_idx for r in p.propagate('both', max_frames=2)]
    assert frames == [4, 5, 3]
    assert 1 <= len(p.obj_ids) <= 2


def test_box_partly_outside_is_clipped_and_converted(model, clip, monkeypatch):
    p = Sam3VideoPredictor(model)
    p.open(clip['frames'])
    sent = {}
    original = model.add_prompt

    def spy(state, frame_idx, **kwargs):
        sent.update(kwargs, frame_idx=frame_idx)
        return original(state, frame_idx, **kwargs)

    monkeypatch.setattr(model, 'add_prompt', spy)
    r = check_result(p.add_box(3, [-20, -10, 64, 48], obj_id=5), 3)
    assert r.prompt_obj_id == 5 and sent['obj_id'] == 5 and sent['frame_idx'] == 3
    # sam3 gets the clipped box as two corner points (labels 2, 3), relative to the frame
    assert sent['point_labels'].tolist() == [2, 3]
    assert np.allclose(sent['points'].numpy(), [[0, 0], [64 / W, 48 / H]])
    check_result(p.add_points(3, [[W, H]], obj_id=5))                  # the far corner is inside
    assert sent['point_labels'].tolist() == [2, 3, 1]                  # points add to the box on that frame
    assert np.allclose(sent['points'].numpy()[2], [1, 1])


# ---------------------------------------------------------------------------------------------------------------
# track_video
# ---------------------------------------------------------------------------------------------------------------

def test_track_video_writes_mp4(model, clip, tmp_path, confident_tracker):
    out = tmp_path / 'sub' / 'tracked.mp4'
    summary = track_video(model, clip['short'], text='person', box=[30, 20, 100, 80], out=out, progress=False)
    assert summary.frames == 3 and summary.out == str(out) and (summary.height, summary.width) == (H, W)
    assert summary.fps == pytest.approx(FPS)                           # the input's frame rate
    assert 0 in summary.object_ids                                     # the box object
    n, frames = _count_frames(out)
    assert n == 3 and frames[0].shape == (H, W, 3)
    # the object was drawn: the annotated frames differ from the input inside the box
    assert np.abs(frames[0][20:80, 30:100].astype(int) - clip['frames'][0][20:80, 30:100]).mean() > 10


# a phrase of exactly 30 BPE tokens, the most SAM3's text encoder reads
LONG = ('a small brown dog with a red collar sitting next to a large white cat on a green sofa in the living room '
        'near the big open window and a')


def test_long_text_prompt_warns_with_the_dropped_words(model, clip, tmp_path):
    p = Sam3VideoPredictor(model)
    p.open(clip['frames'][:2])
    with pytest.warns(TextTruncatedWarning, match=r"reads 30 \(32 with its start and end tokens\), so it ignored "
                                                  r"'zebra, striped'") as w:
        check_result(p.add_text(0, f'{LONG} zebra, striped'), 0)  # one phrase: the comma is part of it
    assert len(w) == 1 and w[0].filename == __file__                   # points at the caller's line
    assert p.text == f'{LONG} zebra, striped'
    with pytest.warns(TextTruncatedWarning, match="ignored 'giraffe'") as w:
        track_video(model, clip['frames'][:2], text=f'{LONG} giraffe', out=None, json_path=tmp_path / 't.json',
                    progress=False)
    assert len(w) == 1 and w[0].filename == __file__


# ---------------------------------------------------------------------------------------------------------------
# Tracking outputs: masks (DAVIS / SA-V layout), a VOS root, JSON
# ---------------------------------------------------------------------------------------------------------------

MODEL_ARGS = ['--backbone', 'cradio_tiny', '--random-weights', '--cradio-checkpoint',
              str(CRADIO_TINY / 'model.pth.tar'), '--device', 'cpu']


def _eval_vos(monkeypatch, root: Path, dataset: str, out: Path) -> dict:
    """``sam3-cradio eval vos`` on ``root``, its model's tracker made confident like the tracking run's (the same
    blob on every frame), so that a run scored against its own masks reproduces them exactly."""
    from conftest import run_command
    from sam3_cradio.evaluation.commands import vos

    build = vos.build_model

    def build_confident(*args, **kwargs):
        m = build(*args, **kwargs)
        make_tracker_confident(m)
        return m

    monkeypatch.setattr(vos, 'build_model', build_confident)
    assert run_command(['eval', 'vos', '--dataset', dataset, '--root', str(root), '--out', str(out), '--no-progress',
                      *MODEL_ARGS]) == 0
    return json.loads((out / 'metrics.json').read_text())['metrics']


@pytest.mark.slow
def test_track_command_writes_vos_masks_json_and_scores_jf_1(model, clip, tmp_path, confident_tracker,
                                                               monkeypatch, capsys):
    """`track --masks-dir --vos-root --json`: DAVIS palette PNGs (0 background, one value per object), a DAVIS
    root that `sam3-cradio eval vos` reads, per-frame boxes and scores; the run scores J&F = 1 against itself."""
    monkeypatch.setattr('sam3_cradio.build.build_sam3', lambda *a, **k: model)  # the confident tiny model
    masks, root, js = tmp_path / 'masks', tmp_path / 'davis', tmp_path / 'track.json'
    assert main(['track', str(clip['folder']), '--box', '30', '20', '100', '80', '--out', str(tmp_path / 't.mp4'),
                 '--masks-dir', str(masks), '--vos-root', str(root), '--json', str(js), *MODEL_ARGS]) == 0
    printed = capsys.readouterr().out
    assert f'sam3-cradio eval vos --dataset davis --root {root}' in printed and str(js) in printed
    names = [f'{5 * i}' for i in range(T)]                             # the frame folder's own names
    assert frame_names(clip['folder'], T) == names and frame_names(clip['mp4'], 2) == ['00000', '00001']
    assert sorted(p.stem for p in masks.glob('*.png')) == sorted(names)
    data = json.loads(js.read_text())
    assert (data['num_frames'], data['height'], data['width']) == (T, H, W)
    assert data['prompt'] == {'frame': 0, 'text': None, 'box': [30.0, 20.0, 100.0, 80.0]}
    assert data['objects'] == [{'id': 0, 'label': 1, 'first_frame': 0, 'last_frame': T - 1, 'num_frames': T,
                                'max_score': 1.0}]
    assert [f['frame'] for f in data['frames']] == list(range(T)) and [f['name'] for f in data['frames']] == names
    for f in data['frames']:
        with Image.open(masks / f'{f["name"]}.png') as im:
            assert im.mode == 'P' and im.getpalette()[:9] == davis_palette()[:9]   # black, red, green
            lab = np.array(im)
        assert lab.shape == (H, W) and set(np.unique(lab)) == {0, 1}             # 0 background, 1 the object
        (ob,) = f['objects']
        assert (ob['id'], ob['label'], ob['score'], ob['area']) == (0, 1, 1.0, int((lab == 1).sum()))
        assert ob['box'] == masks_to_boxes((lab == 1)[None])[0].tolist()
        assert np.array_equal(np.array(Image.open(root / 'Annotations' / '480p' / 'frames' / f'{f["name"]}.png')),
                              lab)
    assert (root / 'ImageSets' / '2017' / 'val.txt').read_text().split() == ['frames']
    assert len(list((root / 'JPEGImages' / '480p' / 'frames').glob('*.jpg'))) == T

    m = _eval_vos(monkeypatch, root, 'davis', tmp_path / 'eval')
    assert m['num_objects'] == 1 and m['per_sequence'].keys() == {'frames'}
    assert m['J&F-Mean'] == pytest.approx(1.0) and m['J-Mean'] == pytest.approx(1.0)


def test_track_video_sav_layout_scores_jf_1(model, clip, tmp_path, confident_tracker, monkeypatch):
    """The SA-V layout: a binary PNG per object (folder = object id) on every frame, empty where it is absent;
    the run's root scores J&F = 1 through `eval vos --dataset sav`."""
    root = tmp_path / 'sav'
    s = track_video(model, clip['short'], box=[30, 20, 100, 80], out=None, vos_root=root, mask_layout='sav',
                    masks_dir=tmp_path / 'masks', sequence='short', progress=False)
    assert s.out is None and s.vos_root == str(root) and s.object_ids == [0]
    ann = root / 'Annotations_6fps' / 'short'
    assert sorted(p.name for p in ann.iterdir()) == ['000']
    assert sorted(p.stem for p in (ann / '000').glob('*.png')) == ['00000', '00001', '00002']
    for name in ('00000', '00001', '00002'):
        a = np.array(Image.open(ann / '000' / f'{name}.png'))
        assert a.dtype == np.uint8 and set(np.unique(a)) == {0, 255}
        assert np.array_equal(a, np.array(Image.open(tmp_path / 'masks' / '000' / f'{name}.png')))
    assert (root / 'sav_val.txt').read_text().split() == ['short']
    m = _eval_vos(monkeypatch, root, 'sav', tmp_path / 'eval')
    assert m['num_objects'] == 1 and m['J&F-Mean'] == pytest.approx(1.0)


def test_mask_writers_labels_overlaps_and_late_objects(tmp_path):
    """DAVIS: values 1, 2, ... by first appearance (frame, then id), the higher score wins an overlap; SA-V: an
    object first seen later gets empty PNGs on the frames before."""
    from sam3_cradio.track_outputs import VosMaskWriter

    def frame(t, ids, boxes, scores):
        m = np.zeros((len(ids), 6, 8), bool)
        for k, (y0, y1, x0, x1) in enumerate(boxes):
            m[k, y0:y1, x0:x1] = True
        return VideoFrameResult(t, np.array(ids, np.int64), m, masks_to_boxes(m), np.array(scores, np.float32))

    results = [frame(0, [7], [(0, 3, 0, 4)], [0.9]),
               frame(1, [7, 2], [(0, 3, 0, 4), (2, 6, 2, 8)], [0.6, 0.8]),   # 2 is new; it wins the overlap
               frame(2, [], [], [])]
    with VosMaskWriter(tmp_path / 'davis', ['a', 'b', 'c']) as w:
        for r in results:
            w.write(r)
    labs = [np.array(Image.open(tmp_path / 'davis' / f'{n}.png')) for n in 'abc']
    assert set(np.unique(labs[0])) == {0, 1} and (labs[0] == 1).sum() == 12          # object 7 -> 1
    assert labs[1][2, 3] == 2 and labs[1][0, 0] == 1 and (labs[1] == 2).sum() == 24  # object 2 -> 2, on top
    assert not labs[2].any()
    with VosMaskWriter(tmp_path / 'sav', ['a', 'b', 'c'], layout='sav') as w:
        for r in results:
            w.write(r)
    assert not np.array(Image.open(tmp_path / 'sav' / '002' / 'a.png')).any()        # before object 2 existed
    assert (np.array(Image.open(tmp_path / 'sav' / '002' / 'b.png')) > 0).sum() == 24
    assert (np.array(Image.open(tmp_path / 'sav' / '007' / 'b.png')) > 0).sum() == 12  # overlaps kept
    with pytest.raises(ValueError, match='layout'):
        VosMaskWriter(tmp_path / 'x', ['a'], layout='coco')


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------

def test_unreadable_videos(model, clip, tmp_path):
    p = Sam3VideoPredictor(model)
    text = tmp_path / 'notes.mp4'
    text.write_text('this is a text file, not a video\n' * 20)
    data = clip['mp4'].read_bytes()
    truncated = tmp_path / 'truncated.mp4'
    truncated.write_bytes(data[:len(data) // 2])
    empty = tmp_path / 'empty.mp4'
    empty.write_bytes(b'')
    for bad in (text, truncated, empty):
        with pytest.raises(ValueError, match='cannot be read as a video'):
            p.open(bad)
        with pytest.raises(ValueError, match='cannot be read as a video'):
            probe_video(bad)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        p.open(tmp_path / 'missing.mp4')
    (tmp_path / 'empty_dir').mkdir()
    (tmp_path / 'empty_dir' / 'readme.txt').write_text('no frames here')
    with pytest.raises(ValueError, match='has no frames'):
        p.open(tmp_path / 'empty_dir')
    with pytest.raises(ValueError, match='empty'):
        p.open([])
    with pytest.raises(ValueError, match='same size'):
        p.open([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8)])
    bad_frame = tmp_path / 'bad_frames'
    bad_frame.mkdir()
    Image.fromarray(clip['frames'][0]).save(bad_frame / '0.jpg')
    (bad_frame / '1.jpg').write_text('not a jpeg')
    with pytest.raises(ValueError, match='not an image'):
        p.open(bad_frame)
    with pytest.raises(TypeError):
        p.open(42)
    assert p.state is None                                             # nothing was opened
    with pytest.raises(ValueError, match='video model'):
        Sam3VideoPredictor(torch.nn.Linear(2, 2))


def test_prompt_before_open(model):
    p = Sam3VideoPredictor(model)
    calls = [lambda: p.add_text(0, 'cat'), lambda: p.add_box(0, [0, 0, 5, 5]), lambda: p.add_points(0, [[1, 1]]),
             lambda: p.add_mask(0, 0, np.ones((H, W), bool)), lambda: p.propagate(), lambda: p.reset(),
             lambda: p.remove_object(0)]
    for call in calls:
        with pytest.raises(VideoNotOpenError, match=r'call predictor.open\(video\)'):
            call()
    assert issubclass(VideoNotOpenError, ValueError) and issubclass(VideoNotOpenError, RuntimeError)


def test_prompt_errors(model, clip):
    p = Sam3VideoPredictor(model)
    p.open(clip['frames'])
    for idx in (T, -1, 100):
        with pytest.raises(ValueError, match='out of range'):
            p.add_text(idx, 'cat')
        with pytest.raises(ValueError, match='out of range'):
            p.add_box(idx, [0, 0, 5, 5])
        with pytest.raises(ValueError, match='out of range'):
            p.add_points(idx, [[1, 1]])
    for idx in (1.5, True, '3'):
        with pytest.raises(ValueError, match='frame_idx must be an int'):
            p.add_points(idx, [[1, 1]])
    for text in ('', '   ', '\n\t', None):
        with pytest.raises(ValueError, match='text prompt is empty'):
            p.add_text(0, text)
    with pytest.raises(ValueError, match='reserved'):
        p.add_text(0, 'visual')
    for box in ([10, 10, 10, 50], [10, 50, 60, 50], [60, 10, 10, 50]):
        with pytest.raises(ValueError, match='zero or negative area'):
            p.add_box(0, box)
    for box in ([W + 10, 10, W + 50, 50], [-50, -50, -10, -10], [10, H, 50, H + 40]):
        with pytest.raises(ValueError, match='outside'):
            p.add_box(0, box)
    for box in ([1, 2, 3], [0, 0, np.nan, 5]):
        with pytest.raises(ValueError, match='4 finite numbers'):
            p.add_box(0, box)
    for pts in ([[-1, 5]], [[W + 1, 5]], [[5, H + 0.5]], [[10, 10], [10, -3]]):
        with pytest.raises(ValueError, match='outside'):
            p.add_points(0, pts)
    with pytest.raises(ValueError, match='label'):
        p.add_points(0, [[1, 1]], labels=[2])
    with pytest.raises(ValueError, match='label'):
        p.add_points(0, [[1, 1], [2, 2]], labels=[1])
    with pytest.raises(ValueError, match='pixel pairs'):
        p.add_points(0, [])
    with pytest.raises(ValueError, match='obj_id'):
        p.add_points(0, [[1, 1]], obj_id=-1)
    with pytest.raises(ValueError, match='nothing to track'):
        p.propagate()
    with pytest.raises(ValueError, match='not tracked'):
        p.remove_object(3)
    p._prompted = True  # (skip the model call) propagate's own argument checks
    with pytest.raises(ValueError, match='direction'):
        p.propagate('sideways')
    with pytest.raises(ValueError, match='max_frames'):
        p.propagate(max_frames=0)
    with pytest.raises(ValueError, match='out of range'):
        p.propagate(start_frame=T)
    assert p.obj_ids == [] and p.state['action_history'] == []         # no error reached the model


def test_track_video_errors(model, clip, tmp_path):
    with pytest.raises(ValueError, match='needs a prompt'):
        track_video(model, clip['short'], out=tmp_path / 'x.mp4')
    with pytest.raises(ValueError, match='empty'):
        track_video(model, clip['short'], text=' ', out=tmp_path / 'x.mp4')
    with pytest.raises(ValueError, match='fps'):
        track_video(model, clip['short'], text='cat', out=tmp_path / 'x.mp4', fps=0)
    with pytest.raises(ValueError, match='outside'):
        track_video(model, clip['short'], box=[W + 1, 0, W + 9, 9], out=tmp_path / 'x.mp4')
    assert not (tmp_path / 'x.mp4').exists()


# ---------------------------------------------------------------------------------------------------------------
# Mask prompts (SAM2's add_new_mask)
# ---------------------------------------------------------------------------------------------------------------

def _box_mask(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_add_mask_tracks_every_object_like_sam2(model, clip, confident_tracker):
    p = Sam3VideoPredictor(model)
    p.open(clip['folder'])
    a, b = _box_mask(20, 60, 30, 90), _box_mask(50, 90, 60, 120)
    r = check_result(p.add_mask(0, 3, a), 0)
    assert r.prompt_obj_id == 3 and r.obj_ids.tolist() == [3] and r.scores.tolist() == [1.0]
    assert np.array_equal(r.masks[0], a)                               # SAM2 shows the prompted mask itself
    r = check_result(p.add_mask(0, None, torch.from_numpy(b)), 0)      # a tensor works too; None: a new id
    assert r.prompt_obj_id == 4 and r.obj_ids.tolist() == [3, 4] and p.obj_ids == [3, 4]
    assert np.array_equal(r.masks[0], a & ~b) and np.array_equal(r.masks[1], b)  # the newer mask wins overlaps

    results = [check_result(x) for x in p.propagate()]                # default: forward from the prompted frame
    assert [x.frame_idx for x in results] == list(range(T))
    for x in results[1:]:                                              # both objects follow the tracker's blob
        assert x.obj_ids.tolist() == [3, 4] and np.array_equal(x.masks[0], x.masks[1]) and x.masks[0].sum() > 100
    assert model.tracker.non_overlap_masks_for_output is False         # the video model's setting, untouched

    p.non_overlap_masks = True                                         # SAM2's non_overlap_masks: disjoint output
    again = [check_result(x) for x in p.propagate(max_frames=3)]
    assert [x.frame_idx for x in again] == [0, 1, 2]
    for x, y in zip(again[1:], results[1:]):                           # equal logits: the first object keeps them
        assert x.obj_ids.tolist() == [3] and np.array_equal(x.masks[0], y.masks[0])
    assert model.tracker.non_overlap_masks_for_output is False

    d = results[1].to_detections()                                     # results as supervision Detections
    assert d.tracker_id.tolist() == [3, 4] and np.array_equal(d.xyxy, results[1].boxes)
    assert np.array_equal(d.mask, results[1].masks) and d.confidence.tolist() == [1.0, 1.0]

    with pytest.raises(ValueError, match='already propagated'):       # SAM2 takes new objects before tracking only
        p.add_mask(0, 9, a)
    r = check_result(p.add_mask(0, 3, b), 0)                           # ... but refines existing ones
    assert np.array_equal(r.masks[r.obj_ids.tolist().index(3)], b)
    with pytest.raises(ValueError, match='cannot join a session of mask prompts'):
        p.add_box(0, [0, 0, 50, 50])
    with pytest.raises(ValueError, match='cannot join a session of mask prompts'):
        p.add_points(0, [[5, 5]])
    p.remove_object(4)
    assert p.obj_ids == [3]
    p.reset()
    assert p.obj_ids == [] and p._masks is None


@pytest.mark.slow
def test_add_mask_directions_on_a_video_file(model, clip, confident_tracker):
    p = Sam3VideoPredictor(model)
    p.open(clip['mp4'])                                                # frames decoded again for the tracker
    p.add_mask(5, 0, _box_mask(30, 70, 40, 100))
    p.add_mask(5, 1, np.zeros((H, W), bool), allow_empty=True)         # tracked from nothing, as SAM2's VOS does
    assert p.obj_ids == [0, 1]
    assert [r.frame_idx for r in p.propagate('both')] == [5, 6, 7, 8, 9, 4, 3, 2, 1, 0]
    assert [r.frame_idx for r in p.propagate('both', max_frames=2)] == [5, 6, 4]
    assert [r.frame_idx for r in p.propagate('backward', max_frames=2)] == [5, 4]
    assert [check_result(r).frame_idx for r in p.propagate('forward', start_frame=7, max_frames=2)] == [7, 8]


def test_add_mask_errors(model, clip):
    p = Sam3VideoPredictor(model)
    p.open(clip['frames'])
    good = _box_mask(10, 20, 10, 20)
    with pytest.raises(ValueError, match='out of range'):
        p.add_mask(T, 0, good)
    with pytest.raises(ValueError, match=r'the mask is 129x96 but the video is 128x96'):
        p.add_mask(0, 0, np.zeros((H, W + 1), bool))
    with pytest.raises(ValueError, match='2-D'):
        p.add_mask(0, 0, good[None])
    with pytest.raises(ValueError, match='boolean'):
        p.add_mask(0, 0, good * 2)
    with pytest.raises(ValueError, match='boolean'):
        p.add_mask(0, 0, np.full((H, W), 'x'))
    with pytest.raises(ValueError, match='is empty'):
        p.add_mask(0, 0, np.zeros((H, W), bool))
    with pytest.raises(ValueError, match='obj_id'):
        p.add_mask(0, -1, good)
    assert p.obj_ids == [] and p._masks is None                         # no error reached the tracker
    r = check_result(p.add_mask(0, 0, good.astype(np.uint8)), 0)       # 0/1 integers are a mask too
    assert np.array_equal(r.masks[0], good)

    p.reset()
    check_result(p.add_text(0, 'astronaut'), 0)                        # a text session...
    with pytest.raises(ValueError, match='cannot join a session with text'):
        p.add_mask(0, 0, good)                                          # ... takes no masks until reset()


# --------------------------------------------------------------------------------------------------------------
# Bad outputs and inputs of `track`: refused before the model is built, and nothing existing is replaced
# --------------------------------------------------------------------------------------------------------------

@pytest.fixture
def no_build(monkeypatch):
    """`track` must refuse before it builds: a build is a test failure."""
    def build(*a, **k):
        raise AssertionError('the model was built before the bad input was refused')

    monkeypatch.setattr('sam3_cradio.build.build_sam3', build)


def test_track_refuses_bad_outputs_before_building(clip, tmp_path, no_build, capsys):
    out = tmp_path / 't.mp4'
    out.write_bytes(b'an earlier result')
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    base = ['track', str(clip['folder']), '--text', 'cat', '--out', str(out), *MODEL_ARGS]
    for extra, message in ((['--masks-dir', str(a_file)], 'masks folder'),
                           (['--vos-root', str(a_file)], 'VOS root'),
                           (['--json', str(tmp_path)], 'is a folder'),
                           (['--masks-dir', str(a_file / 'sub')], 'is a file, not a folder')):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and message in err and err.count('\n') == 1, err
    assert out.read_bytes() == b'an earlier result'
    # a VOS root that already holds the sequence: refused (never mixed with another video's frames)
    root = tmp_path / 'vos'
    taken = root / 'JPEGImages' / '480p' / clip['folder'].name
    taken.mkdir(parents=True)
    (taken / '00000.jpg').write_bytes(b'another video')
    assert main([*base, '--vos-root', str(root)]) == 2
    assert "already holds a sequence" in capsys.readouterr().err
    assert (taken / '00000.jpg').read_bytes() == b'another video'


def test_track_refuses_frames_of_different_sizes_before_building(tmp_path, no_build, capsys):
    folder = tmp_path / 'frames'
    folder.mkdir()
    Image.new('RGB', (64, 48)).save(folder / '0.jpg')
    Image.new('RGB', (64, 48)).save(folder / '1.jpg')
    Image.new('RGB', (32, 48)).save(folder / '2.jpg')
    assert main(['track', str(folder), '--text', 'cat', '--out', str(tmp_path / 't.mp4'), *MODEL_ARGS]) == 2
    err = capsys.readouterr().err
    assert 'frame 2.jpg is 32x48' in err and '64x48' in err


def test_a_failed_track_keeps_the_earlier_outputs(model, clip, tmp_path, monkeypatch):
    """The video and the masks are replaced only by a run that finished: a failure leaves the old files and no
    partial ones; a VOS sequence of a failed run is removed (it would block the corrected command)."""
    from sam3_cradio.video import Sam3VideoPredictor

    out, masks, root = tmp_path / 't.mp4', tmp_path / 'masks', tmp_path / 'vos'
    out.write_bytes(b'earlier video')
    masks.mkdir()
    (masks / 'old.png').write_bytes(b'earlier mask')
    real = Sam3VideoPredictor.propagate

    def broken(self, *a, **k):
        for i, r in enumerate(real(self, *a, **k)):
            if i == 3:
                raise RuntimeError('the tracker failed on frame 3')
            yield r

    monkeypatch.setattr(Sam3VideoPredictor, 'propagate', broken)
    with pytest.raises(RuntimeError, match='frame 3'):
        track_video(model, clip['folder'], box=[30, 20, 100, 80], out=out, masks_dir=masks, vos_root=root,
                    progress=False)
    assert out.read_bytes() == b'earlier video'
    assert sorted(p.name for p in masks.iterdir()) == ['old.png']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['masks', 't.mp4', 'vos']  # no partial files left
    assert not any(root.rglob('*.jpg')) and not any(root.rglob('*.png'))
    monkeypatch.setattr(Sam3VideoPredictor, 'propagate', real)
    summary = track_video(model, clip['folder'], box=[30, 20, 100, 80], out=out, masks_dir=masks, vos_root=root,
                          progress=False)  # the corrected run: replaces them
    assert summary.frames == len(clip['frames']) and out.read_bytes() != b'earlier video'
    assert 'old.png' not in {p.name for p in masks.iterdir()} and len(list(masks.glob('*.png'))) == summary.frames
