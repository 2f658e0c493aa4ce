"""The evaluations (``sam3-cradio eval NAME``, ``eval/<name>.py``) end to end on small real image and video sets,
through the tiny models, on CPU.

Data is made at test time from scikit-image's sample photos and the repo's two photos:

- COCO-format mini set: ``coins`` segmented with the scikit-image gallery recipe (Sobel elevation, watershed from
  markers < 30 / > 150, hole filling, labelling: 24 coins, RLE), the ``horse`` silhouette drawn on a field (one
  polygon), ``astronaut.jpg`` (a hand-placed person box as a polygon) and ``coffee.jpg`` (a hand-placed ellipse
  round the cup, as uncompressed RLE, plus a crowd region), and coins flipped left-right as a fifth image.
- SA-Co/Gold mini layout, as released (``gold_<subset>_merged_{a,b,c}_release_test.json``: image-phrase pairs
  with ``text_input``, per-phrase masks, negatives with none, annotator files that differ, a non-exhaustive pair).
- DAVIS 2017 mini layout (``JPEGImages/480p``, palette ``Annotations/480p``, ``ImageSets/2017/val.txt``): a window
  sliding over the coins photo, two coins as objects; and an SA-V mini layout (``JPEGImages_24fps``, per-object
  ``Annotations_6fps`` every 2nd frame, ``sav_val.txt``) from the same frames.

Random SAM3 weights score about 0.3-0.5, so text prompts use low score thresholds. Every run uses one CPU thread
per process (this machine's 2 cores are shared); model outputs are deterministic, so metrics compare exactly.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image

from conftest import CRADIO_TINY, IMAGES, make_tracker_confident

ROOT = Path(__file__).resolve().parents[1]
TINY = CRADIO_TINY / 'model.pth.tar'
PHOTOS = IMAGES
MODEL_ARGS = ['--backbone', 'cradio_tiny', '--random-weights', '--cradio-checkpoint', str(TINY), '--device', 'cpu',
              '--no-progress', '--threads', '1']


# ---------------------------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------------------------

def coin_masks(image: np.ndarray = None) -> np.ndarray:
    """(24, H, W) coins of ``skimage.data.coins()`` by the scikit-image gallery recipe."""
    from scipy import ndimage as ndi
    from skimage import data
    from skimage.filters import sobel
    from skimage.segmentation import watershed

    coins = data.coins() if image is None else image
    markers = np.zeros_like(coins)
    markers[coins < 30] = 1
    markers[coins > 150] = 2
    seg = ndi.binary_fill_holes(watershed(sobel(coins), markers) - 1)
    labels, n = ndi.label(seg)
    sizes = np.bincount(labels.ravel())
    return np.stack([labels == i for i in range(1, n + 1) if sizes[i] >= 21])


def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask[:, :, None].astype(np.uint8)))[0]
    return {'size': [int(s) for s in r['size']], 'counts': r['counts'].decode()}


def _ann(ann_id: int, image_id: int, cat: int, mask: np.ndarray, segmentation=None, iscrowd: int = 0) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask[:, :, None].astype(np.uint8)))[0]
    return {'id': ann_id, 'image_id': image_id, 'category_id': cat, 'iscrowd': iscrowd,
            'segmentation': segmentation if segmentation is not None else _rle(mask),
            'area': float(mask_utils.area(r)), 'bbox': [float(v) for v in mask_utils.toBbox(r)]}


def _rect_polygon(x0, y0, x1, y1) -> list:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _poly_mask(poly: list, h: int, w: int) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, h, w))).astype(bool)


def _uncompressed(mask: np.ndarray) -> dict:
    flat = mask.astype(np.uint8).ravel(order='F')
    change = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))  # run boundaries, starting with zeros
    counts = np.diff(np.r_[0, change]).tolist()
    return {'size': list(mask.shape), 'counts': counts}


def make_coco(root: Path) -> Path:
    """A COCO-format mini set (5 images, 4 categories) under ``root``; returns the annotation json."""
    from skimage import data
    from skimage.measure import approximate_polygon, find_contours

    img_dir = root / 'images'
    img_dir.mkdir(parents=True)
    images, anns, next_id = [], [], 1

    def add(image_id, file_name, rgb):
        Image.fromarray(rgb).save(img_dir / file_name, quality=95)
        images.append({'id': image_id, 'file_name': file_name, 'height': rgb.shape[0], 'width': rgb.shape[1]})

    coins = data.coins()
    for image_id, name, img in ((1, 'coins.jpg', coins), (5, 'coins_flipped.jpg', coins[:, ::-1].copy())):
        add(image_id, name, np.repeat(img[..., None], 3, axis=2))
        for m in coin_masks(img):
            anns.append(_ann(next_id, image_id, 1, m))
            next_id += 1
    horse = ~data.horse()
    field = np.zeros((*horse.shape, 3), np.uint8)
    field[:] = (90, 160, 70)
    field[horse] = (120, 80, 40)
    add(2, 'horse.jpg', field)
    contour = max(find_contours(horse.astype(float), 0.5), key=len)
    poly = [approximate_polygon(contour, 1.0)[:, ::-1].ravel().round(1).tolist()]  # (x, y) pairs
    anns.append(_ann(next_id, 2, 2, _poly_mask(poly, *horse.shape), segmentation=poly))
    next_id += 1
    astronaut = np.asarray(Image.open(PHOTOS / 'astronaut.jpg').convert('RGB'))
    add(3, 'astronaut.jpg', astronaut)
    poly = _rect_polygon(140, 25, 450, 511)
    anns.append(_ann(next_id, 3, 3, _poly_mask(poly, 512, 512), segmentation=poly))
    next_id += 1
    coffee = np.asarray(Image.open(PHOTOS / 'coffee.jpg').convert('RGB'))
    add(4, 'coffee.jpg', coffee)
    yy, xx = np.mgrid[:coffee.shape[0], :coffee.shape[1]]
    cup = ((xx - 300) / 190.0) ** 2 + ((yy - 170) / 130.0) ** 2 <= 1
    anns.append(_ann(next_id, 4, 4, cup, segmentation=_uncompressed(cup)))
    crowd = np.zeros_like(cup)
    crowd[300:390, 20:200] = True
    anns.append(_ann(next_id + 1, 4, 4, crowd, segmentation=_uncompressed(crowd), iscrowd=1))
    gt = {'images': images, 'annotations': anns,
          'categories': [{'id': 1, 'name': 'coin'}, {'id': 2, 'name': 'horse'}, {'id': 3, 'name': 'person'},
                         {'id': 4, 'name': 'cup'}]}
    path = root / 'instances_mini.json'
    path.write_text(json.dumps(gt))
    return path


def make_gold(root: Path, coco_json: Path) -> Path:
    """SA-Co/Gold mini layout (subsets 'crowded' and 'sa1b', annotators a, b, c) from the COCO mini set."""
    gt = json.loads(coco_json.read_text())
    cats = {c['id']: c['name'] for c in gt['categories']}
    by_image = {}
    for a in gt['annotations']:
        if not a['iscrowd']:
            by_image.setdefault(a['image_id'], []).append(a)
    src = coco_json.parent / 'images'
    ann_dir = root / 'gt-annotations'
    ann_dir.mkdir(parents=True)
    for subset, image_ids, img_dir in (('crowded', (1, 2, 4), root / 'metaclip-images'),
                                        ('sa1b', (3,), root / 'sa1b-images')):
        img_dir.mkdir(exist_ok=True)
        pairs = []
        for image_id in image_ids:
            info = next(i for i in gt['images'] if i['id'] == image_id)
            (img_dir / info['file_name']).write_bytes((src / info['file_name']).read_bytes())
            present = {a['category_id'] for a in by_image.get(image_id, [])}
            for cat in sorted(cats):  # every phrase on every image: positives and negatives
                pairs.append((info, cats[cat], [a for a in by_image.get(image_id, []) if a['category_id'] == cat],
                              cat in present))
        for annotator in 'abc':
            images, anns = [], []
            for pid, (info, text, pos, _) in enumerate(pairs, start=1):
                exhaustive = not (text == 'cup' and annotator == 'c')  # one pair not exhaustive for annotator c
                images.append({'id': pid, 'file_name': info['file_name'], 'text_input': text,
                               'height': info['height'], 'width': info['width'],
                               'is_instance_exhaustive': exhaustive, 'queried_category': '0'})
                kept = pos[1:] if (annotator == 'b' and len(pos) > 1) else pos  # annotator b misses a coin
                for a in kept:
                    anns.append({'id': len(anns) + 1, 'image_id': pid, 'category_id': 1, 'iscrowd': 0,
                                 'segmentation': a['segmentation'], 'bbox': a['bbox'], 'area': a['area']})
            doc = {'info': {}, 'images': images, 'annotations': anns,
                   'categories': [{'id': 1, 'name': 'object'}]}
            (ann_dir / f'gold_{subset}_merged_{annotator}_release_test.json').write_text(json.dumps(doc))
    return root


DAVIS_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12)


def _video_frames(n: int):
    """A 160 x 224 window sliding 6 px per frame over the coins photo; two coins as objects 1 and 2."""
    from skimage import data

    coins = data.coins()
    masks = coin_masks(coins)
    label = np.zeros(coins.shape, np.uint8)
    centers = [np.argwhere(m).mean(0) for m in masks]
    picks = sorted(range(len(masks)), key=lambda i: (abs(centers[i][0] - 100) + abs(centers[i][1] - 120)))[:2]
    for obj, i in enumerate(picks, start=1):
        label[masks[i]] = obj
    for t in range(n):
        y, x = 20, 40 + 6 * t
        yield np.repeat(coins[y:y + 160, x:x + 224, None], 3, axis=2), label[y:y + 160, x:x + 224]


def make_davis(root: Path, sequences=('coins-a', 'coins-b'), n: int = 5) -> Path:
    for k, seq in enumerate(sequences):
        jpg = root / 'JPEGImages' / '480p' / seq
        png = root / 'Annotations' / '480p' / seq
        jpg.mkdir(parents=True)
        png.mkdir(parents=True)
        for t, (rgb, lab) in enumerate(_video_frames(n)):
            if k % 2:
                rgb, lab = rgb[:, ::-1].copy(), lab[:, ::-1].copy()
            Image.fromarray(rgb).save(jpg / f'{t:05d}.jpg', quality=95)
            p = Image.fromarray(lab, mode='P')
            p.putpalette(DAVIS_PALETTE)
            p.save(png / f'{t:05d}.png')
    (root / 'ImageSets' / '2017').mkdir(parents=True)
    (root / 'ImageSets' / '2017' / 'val.txt').write_text('\n'.join(sequences) + '\n')
    return root


def make_sav(root: Path, n: int = 7, every: int = 2) -> Path:
    vid = 'sav_000001'
    jpg = root / 'JPEGImages_24fps' / vid
    jpg.mkdir(parents=True)
    for t, (rgb, lab) in enumerate(_video_frames(n)):
        Image.fromarray(rgb).save(jpg / f'{t:05d}.jpg', quality=95)
        if t % every == 0:
            for obj in (1, 2):
                d = root / 'Annotations_6fps' / vid / f'{obj - 1:03d}'
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray((lab == obj).astype(np.uint8) * 255).save(d / f'{t:05d}.png')
    (root / 'sav_val.txt').write_text(vid + '\n')
    return root


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('evaldata')
    coco = make_coco(root / 'coco')
    make_gold(root / 'gold', coco)
    make_davis(root / 'davis')
    make_sav(root / 'sav')
    return root


@pytest.fixture(autouse=True)
def _one_thread(_deterministic):
    torch.set_num_threads(1)  # 2 threads on 2 shared cores run the tiny model ~8x slower than 1


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------

def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    env.pop('SAM3C_EVAL_CRASH_AFTER', None)
    return env


def _run(args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _metrics(out: Path) -> dict:
    return json.loads((out / 'metrics.json').read_text())['metrics']


def _records(out: Path) -> int:
    return sum(len([x for x in p.read_text().splitlines() if x.strip()]) for p in (out / 'records').glob('*.jsonl'))


def evaluate(argv: list) -> int:
    """``sam3-cradio eval ARGV`` in this process, user errors raised (not turned into exit 2)."""
    from conftest import run_command

    return run_command(['eval', *argv])


@pytest.fixture
def blob_tracker(monkeypatch) -> None:
    """Make the tracker of the models the VOS evaluation builds confident: its mask decoder outputs a fixed blob
    (random SAM3 weights otherwise lose every object, and J&F would be 0 whatever the pipeline does)."""
    from sam3_cradio.evaluation.commands import vos

    build = vos.build_model

    def build_confident(*args, **kwargs):
        model = build(*args, **kwargs)
        make_tracker_confident(model, x_range=(1 / 4, 1 / 2))
        return model

    monkeypatch.setattr(vos, 'build_model', build_confident)


def _resume_check(monkeypatch, tmp_path, name: str, argv: list, crash_after: int) -> dict:
    """Run ``sam3-cradio eval NAME`` uninterrupted; run again into another folder with a crash after
    ``crash_after`` records, then resume there; the resumed metrics must equal the uninterrupted ones. Returns the
    metrics."""
    from sam3_cradio.evaluation import InjectedCrash

    def run(out):
        return evaluate([name, *argv, '--out', str(out)])

    full, crashed = tmp_path / 'full', tmp_path / 'crashed'
    assert run(full) == 0
    monkeypatch.setenv('SAM3C_EVAL_CRASH_AFTER', str(crash_after))
    with pytest.raises(InjectedCrash):
        run(crashed)
    monkeypatch.delenv('SAM3C_EVAL_CRASH_AFTER')
    assert _records(crashed) == crash_after and not (crashed / 'metrics.json').exists()
    assert run(crashed) == 0
    resumed = json.loads((crashed / 'metrics.json').read_text())
    assert resumed['predicted_this_run'] == resumed['num_units'] - crash_after  # only the rest was predicted
    assert resumed['metrics'] == _metrics(full)
    assert _records(crashed) == resumed['num_units']  # one record per unit, none twice
    return resumed


# ---------------------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------------------

def test_record_store_drops_a_torn_line_and_keeps_first_records(tmp_path):
    from sam3_cradio.evaluation.runner import RecordStore, sort_ids

    store = RecordStore(tmp_path, rank=0).open()
    store.append(3, {'x': 1})
    store.append('a', {'x': 2})
    store.close()
    with open(store.path, 'ab') as f:
        f.write(b'{"id": 4, "data": {"x"')  # a write cut short by a kill
    assert RecordStore(tmp_path, rank=1).read_all() == {3: {'x': 1}, 'a': {'x': 2}}
    store.open()  # reopening cuts the torn line off, so the next record starts on its own line
    store.append(4, {'x': 3})
    store.close()
    other = RecordStore(tmp_path, rank=1).open()
    other.append(3, {'x': 99})  # a duplicate in another rank's file: the first file's record wins
    other.close()
    assert RecordStore(tmp_path).read_all() == {3: {'x': 1}, 'a': {'x': 2}, 4: {'x': 3}}
    assert sort_ids(['b', 10, 2, 'a', 2]) == [2, 10, 'a', 'b']


def test_grid_rule_resamples_both_maps_to_the_smaller_grid():
    from sam3_cradio.evaluation.features import compare_maps, match_grids

    # the same smooth feature field seen through a 16x16 and an 8x8 token grid (token centres of each grid)
    def field(n):
        c = (torch.arange(n) + 0.5) / n
        y, x = torch.meshgrid(c, c, indexing='ij')
        return torch.stack([torch.sin(3 * x) + y, torch.cos(2 * y) - x, x * y + 1])[None]

    fine, coarse = field(16), field(8)
    a, b = match_grids(fine, coarse)
    assert a.shape == b.shape == (1, 3, 8, 8) and b is coarse  # the coarse map is left as it is
    r = compare_maps(fine, coarse)
    assert r['cos'] > 0.999 and r['rel_err'] < 0.02
    same = torch.randn(1, 4, 5, 5)
    assert match_grids(same, same)[0] is same
    assert compare_maps(-same, same) == pytest.approx({'cos': -1.0, 'rel_err': 2.0})
    with pytest.raises(ValueError, match='width'):
        match_grids(torch.zeros(1, 3, 4, 4), torch.zeros(1, 5, 4, 4))


def test_missing_or_malformed_annotations_fail_at_the_start(data_root, tmp_path, capsys):
    from sam3_cradio.evaluation.datasets import DatasetError, load_coco, load_davis, load_gold, load_sav

    coco = data_root / 'coco'
    with pytest.raises(DatasetError, match='does not exist; expected a COCO instances json'):
        load_coco(tmp_path / 'nope.json', coco / 'images')
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps({'images': [], 'categories': []}))
    with pytest.raises(DatasetError, match=r"found \['categories', 'images'\]; expected a COCO instances json"):
        load_coco(bad, coco / 'images')
    bad.write_text('{"images": [')
    with pytest.raises(DatasetError, match='not valid JSON'):
        load_coco(bad, coco / 'images')
    gt = json.loads((coco / 'instances_mini.json').read_text())
    del gt['annotations'][0]['segmentation']
    bad.write_text(json.dumps(gt))
    with pytest.raises(DatasetError, match=r"annotations\[0\] lacks \['segmentation'\]"):
        load_coco(bad, coco / 'images')
    with pytest.raises(DatasetError, match='5 of 5 images are missing'):
        load_coco(coco / 'instances_mini.json', tmp_path)

    gold = tmp_path / 'gold'
    gold.mkdir()
    doc = json.loads((data_root / 'gold' / 'gt-annotations' / 'gold_crowded_merged_a_release_test.json').read_text())
    del doc['images'][0]['text_input']
    (gold / 'gold_crowded_merged_a_release_test.json').write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"images\[0\] lacks \['text_input'\]"):
        load_gold(gold, data_root / 'gold' / 'metaclip-images')
    with pytest.raises(DatasetError, match='no SA-Co/Gold annotation file'):
        load_gold(tmp_path, None)
    with pytest.raises(DatasetError, match=r"subset\(s\) \['fg_food'\]"):
        load_gold(data_root / 'gold' / 'gt-annotations', data_root / 'gold' / 'metaclip-images', subsets=['fg_food'])
    with pytest.raises(DatasetError, match='needs its image folder'):
        load_gold(data_root / 'gold' / 'gt-annotations', data_root / 'gold' / 'metaclip-images')

    with pytest.raises(DatasetError, match=r'sequence list .*val.txt.* does not exist; expected the DAVIS 2017'):
        load_davis(tmp_path)
    (data_root / 'davis' / 'Annotations' / '480p' / 'coins-b' / '00003.png').rename(tmp_path / 'x.png')
    try:
        with pytest.raises(DatasetError, match=r"lacks the annotations of 1 frames \(e.g. \['00003'\]"):
            load_davis(data_root / 'davis')
    finally:
        (tmp_path / 'x.png').rename(data_root / 'davis' / 'Annotations' / '480p' / 'coins-b' / '00003.png')
    first = data_root / 'sav' / 'Annotations_6fps' / 'sav_000001' / '001' / '00000.png'
    first.rename(tmp_path / 'y.png')
    try:
        with pytest.raises(DatasetError, match='no mask for the first frame'):
            load_sav(data_root / 'sav')
    finally:
        (tmp_path / 'y.png').rename(first)

    # the command line reports it in one line, before building any model
    from sam3_cradio.cli import main

    argv = ['--ann', str(tmp_path / 'nope.json'), '--images', str(coco / 'images'), '--out', str(tmp_path / 'o')]
    assert main(['eval', 'coco', *argv, *MODEL_ARGS]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: COCO annotation file') and err.count('\n') == 1
    assert not (tmp_path / 'o').exists()


# ---------------------------------------------------------------------------------------------------------------
# COCO from text prompts: a real kill, and torchrun with 2 processes
# ---------------------------------------------------------------------------------------------------------------

def _coco_args(data_root: Path, out: Path) -> list:
    coco = data_root / 'coco'
    return ['eval/coco.py', '--ann', str(coco / 'instances_mini.json'), '--images', str(coco / 'images'),
            '--min-score', '0.3', '--max-dets', '10', '--out', str(out), *MODEL_ARGS]


@pytest.fixture(scope='module')
def coco_full(data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('coco_full')
    r = _run(_coco_args(data_root, out))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.slow
def test_coco_text_prompts_end_to_end(coco_full):
    result = json.loads((coco_full / 'metrics.json').read_text())
    m = result['metrics']
    assert m['num_images'] == 5 and 0 < m['num_predictions'] <= 50
    for kind in ('segm', 'bbox'):
        assert set(m[kind]) >= {'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl'}
        assert all(v is None or -1 <= v <= 1 for v in m[kind].values())
    assert result['world_size'] == 1 and result['num_units'] == 5
    assert result['fingerprint']['backbone'] == 'cradio_tiny' and result['fingerprint']['min_score'] == 0.3
    assert result['versions']['sam3'] == '0.1.4' and result['device']['type'] == 'cpu'
    assert 'git_sha' in result and result['config']['max_dets'] == 10
    md = (coco_full / 'metrics.md').read_text()
    assert '| mask |' in md and '| box |' in md and 'AP50' in md


@pytest.mark.slow
def test_coco_resumes_after_a_kill(data_root, coco_full, tmp_path):
    # killed and resumed through `sam3-cradio eval coco`, compared with the run of the eval/coco.py entry point
    out = tmp_path / 'killed'
    args = ['-m', 'sam3_cradio.cli', 'eval', 'coco', *_coco_args(data_root, out)[1:]]
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    records = out / 'records' / 'rank00000.jsonl'
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if records.exists() and records.read_bytes().count(b'\n') >= 1:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    done = _records(out)
    assert 1 <= done < 5, f'the run was not killed part-way ({done} records)'
    assert not (out / 'metrics.json').exists()
    r = _run(args)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = json.loads((out / 'metrics.json').read_text())
    assert resumed['predicted_this_run'] == 5 - done
    assert resumed['metrics'] == _metrics(coco_full)
    assert _records(out) == 5


@pytest.mark.slow
def test_coco_torchrun_two_processes_equals_one(data_root, coco_full, tmp_path):
    out = tmp_path / 'ddp'
    args = _coco_args(data_root, out)
    r = _run(['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', *args])
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((out / 'metrics.json').read_text())
    assert result['world_size'] == 2
    assert result['metrics'] == _metrics(coco_full)
    ids = [json.loads(line)['id'] for p in sorted((out / 'records').glob('*.jsonl'))
           for line in p.read_text().splitlines()]
    assert sorted(ids) == [1, 2, 3, 4, 5]  # each image once, none missed
    assert len(list((out / 'records').glob('rank*.jsonl'))) == 2  # both ranks did a share


@pytest.mark.slow
def test_a_different_run_into_the_same_folder_is_refused(data_root, coco_full):
    args = _coco_args(data_root, coco_full)[1:]
    args[args.index('--min-score') + 1] = '0.4'
    with pytest.raises(ValueError, match=r'holds records of a different run \(min_score: 0.3 -> 0.4\)'):
        evaluate(['coco', *args])
    args = _coco_args(data_root, coco_full)[1:] + ['--window-size', '8']
    with pytest.raises(ValueError, match=r"holds records of a different run \(window_size: 'global' -> 8\)"):
        evaluate(['coco', *args])


# ---------------------------------------------------------------------------------------------------------------
# Bad overrides, concurrent runs, Ctrl-C (issue 13, items 4-6)
# ---------------------------------------------------------------------------------------------------------------

def _run_args(out: Path, progress: bool = False):
    from sam3_cradio.evaluation.runner import RunOptions

    return RunOptions(out=out, device='cpu', progress=progress)


def _toy_spec(work, n: int = 6):
    """A run of ``n`` units without a model: ``work(id)`` gives each record."""
    from sam3_cradio.evaluation.runner import EvalSpec, Report

    return EvalSpec('toy', list(range(n)), {'toy': 1}, lambda ctx: work,
                    lambda records, ids: Report({'n': len(ids), 'sum': sum(records[i]['x'] for i in ids)}, ''))


def test_override_typos_and_bad_values_fail_before_anything_is_written(data_root, tmp_path, capsys):
    from sam3_cradio.cli import main

    coco = data_root / 'coco'
    out = tmp_path / 'o'
    argv = ['eval', 'coco', '--ann', str(coco / 'instances_mini.json'), '--images', str(coco / 'images'),
            '--limit', '1', '--out', str(out), *MODEL_ARGS]
    for override, message in (
            ('backbone.imagesize=192', "error: override 'backbone.imagesize=192': the config 'sam3_cradio' has no key "
                                       "'backbone.imagesize'; did you mean backbone.image_size?"),
            ('backbone.image_size=19x2', "error: backbone.image_size must be a whole number of pixels, got '19x2'"),
            ('interactive=maybe', "error: override 'interactive=maybe': interactive takes true or false"),
            ('feat_size=abc', 'error: the cradio_tiny config does not resolve')):
        assert main([*argv, '--override', override]) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count('\n') == 1, err
        assert not out.exists()  # --out untouched: nothing blocks the corrected command
    # a refused weights choice leaves the folder as it was found, too
    assert main([*argv, '--sam3-checkpoint', str(tmp_path / 'sam3.pt')]) == 2
    assert 'a SAM3 checkpoint was given with random weights' in capsys.readouterr().err
    assert not out.exists()
    # a run.json left by a run that recorded nothing (an older version, a crash at start) does not block either
    out.mkdir()
    (out / 'run.json').write_text(json.dumps({'eval': 'coco', 'fingerprint': {'backbone': 'imagesize typo'}}))
    assert main([*argv, '--override', 'backbone.image_size=128']) == 0
    assert _records(out) == 1 and json.loads((out / 'run.json').read_text())['fingerprint']['resolution'] == 128
    assert not (out / '.lock').exists()


@pytest.mark.slow
def test_a_folder_in_use_is_refused_naming_the_holder_and_a_dead_holder_does_not_block(data_root, tmp_path):
    from sam3_cradio.evaluation.guards import FolderBusy, FolderLock

    coco = data_root / 'coco'
    out = tmp_path / 'o'
    argv = ['coco', '--ann', str(coco / 'instances_mini.json'), '--images', str(coco / 'images'), '--limit', '2',
            '--out', str(out), *MODEL_ARGS]
    # another process holds the folder (an evaluation in progress)
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time\nfrom sam3_cradio.evaluation.guards import '
                               f'FolderLock\nFolderLock({str(out)!r}).acquire()\nprint("locked", flush=True)\n'
                               'time.sleep(600)'], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        import platform

        with pytest.raises(FolderBusy, match=rf'{out} is in use by another run \(pid {holder.pid} on '
                                             rf'{platform.node()}, since .*\); wait for it to finish'):
            evaluate(argv)
        assert sorted(p.name for p in out.iterdir()) == ['.lock']  # nothing else was written
        r = _run(['-m', 'sam3_cradio.cli', 'eval', *argv])  # the command line: one line, exit 2
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(f'error: {out} is in use by '
                                                                                   f'another run (pid {holder.pid}')
    finally:
        holder.kill()  # dies holding the lock: the kernel releases it
        holder.wait()
    assert (out / '.lock').exists()  # a stale file, but no longer a lock
    assert evaluate(argv) == 0 and _records(out) == 2 and not (out / '.lock').exists()
    lock = FolderLock(out).acquire()  # in this process, too: a second lock on the folder is refused
    try:
        with pytest.raises(FolderBusy, match=f'pid {os.getpid()}'):
            FolderLock(out).acquire()
    finally:
        lock.release()


@pytest.mark.slow
def test_two_identical_evaluations_at_once_never_record_twice(data_root, coco_full, tmp_path):
    out = tmp_path / 'same'
    args = ['-m', 'sam3_cradio.cli', 'eval', 'coco', *_coco_args(data_root, out)[1:]]
    procs = [subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for rc, err in results:  # each either ran (the second one finding every image recorded) or was refused
        assert rc == 0 or (rc == 2 and err.strip().splitlines()[-1].startswith(f'error: {out} is in use by '
                                                                                 'another run (pid ')), err[-2000:]
    assert any(rc == 0 for rc, _ in results)
    ids = [json.loads(line)['id'] for p in (out / 'records').glob('*.jsonl') for line in p.read_text().splitlines()]
    assert sorted(ids) == [1, 2, 3, 4, 5]  # every image once
    assert _metrics(out) == _metrics(coco_full)


@pytest.mark.slow
def test_an_interrupt_swallowed_inside_a_unit_still_stops_the_run(tmp_path):
    """sam3's BPE tokenizer has a bare ``except:``: a KeyboardInterrupt raised inside it is lost, and the run went
    on to the end. The run must stop after the unit in progress, whatever became of the exception."""
    from sam3_cradio.evaluation.runner import RecordStore, RunInterrupted, run_eval

    def work(i: int) -> dict:
        if i == 2:
            try:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, delivered inside the try
                time.sleep(1)
            except BaseException:  # what a bare except in a library does
                pass
        return {'x': i}

    out = tmp_path / 'toy'
    # Python's own handler, as in a terminal: a shell starts background jobs (pytest ... &) with SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(RunInterrupted) as e:
            run_eval(_toy_spec(work), _run_args(out))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was put back
    finally:
        signal.signal(signal.SIGINT, previous)
    assert str(e.value) == f'interrupted after 3 of 6 images ({out}); run the same command to resume'
    assert sorted(RecordStore(out).read_all()) == [0, 1, 2] and not (out / 'metrics.json').exists()
    result = run_eval(_toy_spec(lambda i: {'x': i}), _run_args(out))  # the same command resumes
    assert result['predicted_this_run'] == 3 and result['metrics'] == {'n': 6, 'sum': 15}


@pytest.mark.slow
def test_an_interrupt_while_the_results_are_written_keeps_the_records(tmp_path):
    from sam3_cradio.evaluation.runner import EvalSpec, RecordStore, Report, RunInterrupted, run_eval

    calls = []

    def finalize(records, ids):
        calls.append(len(ids))
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the metrics are computed and written
            time.sleep(1)
        return Report({'n': len(ids)}, '')

    spec = EvalSpec('toy', list(range(3)), {'toy': 1}, lambda ctx: lambda i: {'x': i}, finalize)
    out = tmp_path / 'toy'
    with pytest.raises(RunInterrupted, match=r'interrupted while writing the results \(all 3 images are recorded '
                                             r'in .*\); run the same command to write them'):
        run_eval(spec, _run_args(out))
    assert len(RecordStore(out).read_all()) == 3 and not (out / 'metrics.json').exists()
    assert not (out / '.lock').exists()
    result = run_eval(spec, _run_args(out))
    assert result['predicted_this_run'] == 0 and result['metrics'] == {'n': 3}


def _wait_for(predicate, proc, seconds: float = 240) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
@pytest.mark.parametrize('when', [0, 1, 2, 3])
def test_ctrl_c_stops_the_evaluation_with_one_line_and_records_intact(data_root, coco_full, tmp_path, when):
    """A real `sam3-cradio eval coco` subprocess gets SIGINT while its model is built (``when`` = 0) or after
    ``when`` records: it stops before the end, says how far it got in one line (no traceback), exits 130, keeps
    every finished record, and the same command then finishes the run with the uninterrupted run's metrics."""
    out = tmp_path / 'interrupted'
    args = ['-m', 'sam3_cradio.cli', 'eval', 'coco', *_coco_args(data_root, out)[1:]]
    err_file = tmp_path / 'stderr.txt'
    records = out / 'records' / 'rank00000.jsonl'
    with open(err_file, 'w') as err:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=err)
        try:
            if when == 0:  # the run has started (folder locked and prepared) and builds its model
                ready = _wait_for(lambda: 'to do on 1 process' in err_file.read_text(), proc)
            else:
                ready = _wait_for(lambda: records.exists() and records.read_bytes().count(b'\n') >= when, proc)
            assert ready, err_file.read_text()[-3000:]
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=120)
        finally:
            proc.kill()
            proc.wait()
    stderr = err_file.read_text()
    last = stderr.strip().splitlines()[-1]
    done = _records(out) if out.exists() else 0
    assert rc == 130 and 'Traceback' not in stderr, stderr[-3000:]
    assert last == f'interrupted after {done} of 5 images ({out}); run the same command to resume'
    assert done <= when + 1 and done < 5 and not (out / 'metrics.json').exists()  # it stopped, not ran to the end
    r = _run(args)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = json.loads((out / 'metrics.json').read_text())
    assert resumed['predicted_this_run'] == 5 - done and resumed['metrics'] == _metrics(coco_full)
    assert _records(out) == 5  # none twice


# ---------------------------------------------------------------------------------------------------------------
# The command line: sam3-cradio eval NAME
# ---------------------------------------------------------------------------------------------------------------

OPTIONS = {
    'coco': ['--ann', '--images', '--min-score', '--max-dets', '--window-size'],
    'coco-boxes': ['--ann', '--images', '--center-point', '--min-area', '--window-size'],
    'saco-gold': ['--gt-dir', '--image-dir', '--sa1b-image-dir', '--subsets', '--score-threshold', '--window-size'],
    'vos': ['--dataset', '--root', '--split', '--resolution', '--non-overlap', '--overlap', '--window-size'],
    'features': ['--images', '--windows', '--resolutions', '--reference', '--reference-override'],
}
COMMON = ['--backbone', '--sam3-checkpoint', '--cradio-checkpoint', '--random-weights', '--override', '--seed',
          '--out', '--limit', '--overwrite', '--device', '--no-progress', '--threads']


@pytest.mark.parametrize('name', list(OPTIONS))
def test_every_evaluation_has_its_help(name, capsys):
    from sam3_cradio.cli import main
    from sam3_cradio.commands.eval import EVALUATIONS

    assert list(EVALUATIONS) == list(OPTIONS)
    with pytest.raises(SystemExit) as e:
        main(['eval', name, '--help'])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f'usage: sam3-cradio eval {name} ')
    for option in OPTIONS[name] + COMMON:
        assert f' {option}' in out, option


@pytest.mark.slow
def test_eval_lists_the_evaluations_and_scripts_are_the_same_command(capsys):
    from sam3_cradio.cli import main

    with pytest.raises(SystemExit) as e:
        main(['eval', '--help'])
    assert e.value.code == 0
    listing = capsys.readouterr().out
    assert listing.startswith('usage: sam3-cradio eval') and all(name in listing for name in OPTIONS)
    with pytest.raises(SystemExit) as e:
        main(['eval', 'davis'])
    assert e.value.code == 2 and "invalid choice: 'davis'" in capsys.readouterr().err
    # eval/<name>.py is a thin entry point to the same command
    with pytest.raises(SystemExit):
        main(['eval', 'coco_boxes', '--help'])  # the script's spelling works too
    in_process = capsys.readouterr().out
    r = _run(['eval/coco_boxes.py', '--help'], timeout=120)
    assert r.returncode == 0 and r.stdout == in_process


def test_pe_takes_no_window_and_nothing_is_written(data_root, tmp_path, capsys):
    from sam3_cradio.cli import main

    coco = data_root / 'coco'
    argv = ['eval', 'coco', '--ann', str(coco / 'instances_mini.json'), '--images', str(coco / 'images'),
            '--random-weights', '--device', 'cpu', '--out', str(tmp_path / 'o')]
    for model in (['--backbone', 'pe', '--window-size', '12'], ['--backbone', 'pe:12'],
                  ['--backbone', 'pe', 'pe_tiny', '--window-size', '12']):
        assert main(argv + model) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: pe's attention window is fixed at 24 by its checkpoint") and err.count('\n') == 1
    assert main(argv + ['--backbone', 'pe', '--cradio-checkpoint', str(TINY)]) == 2
    assert '--cradio-checkpoint applies to C-RADIO backbones' in capsys.readouterr().err
    assert main(argv + ['--backbone', 'cradio_tiny', '--window-size', '5']) == 2
    assert 'window 5 does not divide the 16x16 token grid' in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()


@pytest.mark.slow
def test_sam3_cradio_eval_coco_with_c_radio_and_pe_in_process(data_root, coco_full, tmp_path, capsys):
    """`sam3-cradio eval coco` in this process: cradio_tiny gives the records the eval/coco.py run gave, and
    pe_tiny (PE's layout, window fixed at 4) runs with no window given; --window-size and --cradio-checkpoint go
    to the C-RADIO model only."""
    from sam3_cradio.cli import main

    out = tmp_path / 'cmp'
    argv = _coco_args(data_root, out)[1:] + ['--limit', '2', '--backbone', 'cradio_tiny', 'pe_tiny',
                                             '--window-size', 'global']
    assert main(['eval', 'coco', *argv]) == 0
    assert '| model | mask AP | box AP |' in capsys.readouterr().out
    comparison = json.loads((out / 'comparison.json').read_text())
    assert list(comparison['models']) == ['cradio_tiny', 'pe_tiny']
    assert comparison['models']['pe_tiny']['title'] == 'PE tiny (random weights)'
    ours = {json.loads(line)['id']: json.loads(line)['data']
            for line in (out / 'cradio_tiny' / 'records' / 'rank00000.jsonl').read_text().splitlines()}
    full = {json.loads(line)['id']: json.loads(line)['data']
            for line in (coco_full / 'records' / 'rank00000.jsonl').read_text().splitlines()}
    assert list(ours) == [1, 2] and ours == {i: full[i] for i in ours}
    pe = json.loads((out / 'pe_tiny' / 'metrics.json').read_text())
    fp = pe['fingerprint']
    assert (fp['backbone'], fp['window_size'], fp['resolution'], fp['pretrained'], fp['cradio_checkpoint']) == \
        ('pe_tiny', 4, 168, False, None)
    fp = json.loads((out / 'cradio_tiny' / 'metrics.json').read_text())['fingerprint']
    assert (fp['window_size'], fp['cradio_checkpoint']) == ('global', str(TINY.resolve()))
    assert pe['num_units'] == 2 and pe['metrics']['num_images'] == 2
    assert '## COCO text prompts: PE tiny (random weights)' in (out / 'pe_tiny' / 'metrics.md').read_text()


# ---------------------------------------------------------------------------------------------------------------
# The other evals in process, each with a crash and a resume
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_coco_box_prompt_miou_resumes(data_root, monkeypatch, tmp_path):
    coco = data_root / 'coco'
    argv = ['--ann', str(coco / 'instances_mini.json'), '--images', str(coco / 'images'), '--center-point',
            '--limit', '3', *MODEL_ARGS]
    result = _resume_check(monkeypatch, tmp_path, 'coco_boxes', argv, crash_after=2)
    m = result['metrics']
    assert result['num_units'] == 3 and result['limit'] == 3  # images 1 (coins), 2 (horse), 3 (astronaut)
    assert m['count'] == 24 + 1 + 1 and m['count_medium'] == 24 and m['count_large'] == 2
    assert 0 < m['miou'] < 1 and m['prompt'] == 'box + centre point'
    assert m['miou_small'] is None  # no small instance: null in the JSON, '-' in the table
    assert '| box + centre point |' in (tmp_path / 'full' / 'metrics.md').read_text()


@pytest.mark.slow
def test_saco_gold_cgf1_resumes(data_root, monkeypatch, tmp_path):
    gold = data_root / 'gold'
    argv = ['--gt-dir', str(gold / 'gt-annotations'), '--image-dir', str(gold / 'metaclip-images'),
            '--sa1b-image-dir', str(gold / 'sa1b-images'), '--score-threshold', '0.3', *MODEL_ARGS]
    result = _resume_check(monkeypatch, tmp_path, 'saco_gold', argv, crash_after=2)
    m = result['metrics']
    assert m['score_threshold'] == 0.3 and result['num_units'] == 4  # 4 image files, 16 image-phrase pairs
    assert set(m['subsets']) == {'crowded', 'sa1b'} and not m['all_subsets']
    assert m['subsets']['crowded']['num_pairs'] == 9 and m['subsets']['crowded']['num_skipped'] == 3  # cup: not
    assert m['subsets']['sa1b']['num_pairs'] == 3  # exhaustive for annotator c
    for s in m['subsets'].values():
        assert s['score_threshold'] == 0.3 and -1 <= s['il_mcc'] <= 1
    assert m['average']['cgf1'] == pytest.approx(np.mean([s['cgf1'] for s in m['subsets'].values()]))
    md = (tmp_path / 'full' / 'metrics.md').read_text()
    assert "score >= 0.3 (the reference fork's threshold, not SAM3's 0.5)" in md and '**average**' in md


@pytest.mark.slow
def test_davis_jf_resumes(data_root, monkeypatch, tmp_path, blob_tracker):
    argv = ['--dataset', 'davis', '--root', str(data_root / 'davis'), *MODEL_ARGS]
    result = _resume_check(monkeypatch, tmp_path, 'vos', argv, crash_after=1)
    m = result['metrics']
    assert set(m['per_sequence']) == {'coins-a', 'coins-b'} and m['num_objects'] == 4
    assert m['num_frames'] == 4 * 3  # 5 frames per sequence, first and last dropped
    assert 0 < m['J&F-Mean'] < 1 and m['non_overlap'] is True
    for v in m['per_sequence'].values():
        assert v['J&F'] == pytest.approx((v['J'] + v['F']) / 2)
    records = (tmp_path / 'full' / 'records' / 'rank00000.jsonl').read_text().splitlines()
    rec = json.loads(records[0])['data']
    assert rec['size'] == [160, 224] and set(rec['objects']) == {'1', '2'}
    assert rec['objects']['1']['frames'] == [0, 1, 2, 3, 4]


def test_sav_jf_on_annotated_frames(data_root, tmp_path, blob_tracker):
    out = tmp_path / 'sav'
    assert evaluate(['vos', '--dataset', 'sav', '--root', str(data_root / 'sav'), '--out', str(out), *MODEL_ARGS]) == 0
    m = _metrics(out)
    # 7 frames, annotated every 2nd (0, 2, 4, 6): first and last annotated frames dropped -> 2 per object
    assert m['num_objects'] == 2 and m['num_frames'] == 2 * 2
    assert set(m['per_object']) == {'sav_000001_0', 'sav_000001_1'} and m['non_overlap'] is False
    rec = json.loads((out / 'records' / 'rank00000.jsonl').read_text())['data']
    assert rec['objects']['0']['frames'] == [0, 2, 4, 6] and rec['num_frames'] == 7


# pe_tiny (PE's layout: windows of 4 tokens on a 12-token grid) at the width of cradio_tiny's sam3 adaptor (64)
TINY_PE = ['trunk.embed_dim=64', 'trunk.depth=2', 'trunk.num_heads=2', 'trunk.global_att_blocks=[1]']


@pytest.mark.slow
def test_feature_fidelity_resumes(data_root, monkeypatch, tmp_path):
    ref = [x for o in TINY_PE for x in ('--reference-override', o)]
    argv = ['--images', str(data_root / 'coco' / 'images'), '--windows', 'global', '4', '8', '--limit', '3',
            '--backbone', 'cradio_tiny', '--cradio-checkpoint', str(TINY), '--random-weights',
            '--reference', 'pe_tiny', *ref, '--device', 'cpu', '--no-progress', '--threads', '1']
    result = _resume_check(monkeypatch, tmp_path, 'features', argv, crash_after=2)
    m = result['metrics']
    assert m['windows'] == ['global', '4', '8'] and len(m['per_image']) == 3
    assert result['fingerprint']['reference'] == 'pe_tiny' and result['fingerprint']['resolution'] == 256
    maps = {'trunk', 'neck_4x', 'neck_2x', 'neck_1x', 'neck_0.5x'}
    for w in m['windows']:
        assert set(m['summary'][w]) == maps
        for v in m['summary'][w].values():
            assert -1 <= v['cos_min'] <= v['cos'] <= 1 and 0 <= v['rel_err'] <= v['rel_err_max']
    # windows change the C-RADIO features, not the reference
    assert m['summary']['global']['trunk'] != m['summary']['4']['trunk']
    assert m['best_window'] in m['windows']
    table = (tmp_path / 'full' / 'metrics.md').read_text()
    assert '| window | trunk cos | trunk rel.err |' in table
    # without --resolutions (or with the one size it defaults to) the layout and labels are those of one size
    assert not {'resolutions', 'points', 'best'} & set(m) and 'resolutions' not in result['fingerprint']
    assert f"Closest trunk features: window {m['best_window']}." in table and '(256 px) vs' in table
    assert evaluate(['features', *argv, '--resolutions', '256', '--out', str(tmp_path / 'full')]) == 0
    again = json.loads((tmp_path / 'full' / 'metrics.json').read_text())
    assert again['predicted_this_run'] == 0 and again['metrics'] == m  # the same run: its records are reused


def _features_argv(data_root: Path) -> list:
    ref = [x for o in TINY_PE for x in ('--reference-override', o)]
    return ['--images', str(data_root / 'coco' / 'images'), '--limit', '2', '--backbone', 'cradio_tiny',
            '--cradio-checkpoint', str(TINY), '--random-weights', '--reference', 'pe_tiny', *ref, '--device', 'cpu',
            '--no-progress', '--threads', '1']


def test_feature_fidelity_sweeps_windows_by_resolutions(data_root, tmp_path, monkeypatch):
    from sam3_cradio import build
    from sam3_cradio.evaluation import features

    built, references, grids = [], [], set()
    build_trunk, reference_maps, compare_maps = build.build_trunk, features.FeatureComparer.reference_maps, \
        features.compare_maps
    monkeypatch.setattr(build, 'build_trunk', lambda *a, **k: built.append(1) or build_trunk(*a, **k))
    monkeypatch.setattr(features.FeatureComparer, 'reference_maps',
                        lambda self, image: references.append(1) or reference_maps(self, image))
    monkeypatch.setattr(features, 'compare_maps', lambda c, r: grids.add(tuple(c.shape[-2:])) or compare_maps(c, r))
    out = tmp_path / 'sizes'
    argv = [*_features_argv(data_root), '--windows', 'global', '4', '--resolutions', '256', '320']
    assert evaluate(['features', *argv, '--out', str(out)]) == 0
    result = json.loads((out / 'metrics.json').read_text())
    m = result['metrics']
    labels = ['global @ 256', '4 @ 256', 'global @ 320', '4 @ 320']
    assert m['windows'] == labels and list(m['summary']) == labels and m['resolutions'] == [256, 320]
    assert len(m['per_image']) == 2 and all(list(r) == labels for r in m['per_image'].values())
    assert m['points']['4 @ 320'] == {'window': 4, 'resolution': 320, 'grid': 20}
    assert m['points']['global @ 256'] == {'window': 'global', 'resolution': 256, 'grid': 16}
    # one trunk fed both sizes (16 and 20 tokens a side), PE run once per image
    assert len(built) == 1 and len(references) == 2 and {(16, 16), (20, 20)} <= grids
    for w in ('global', '4'):
        assert m['summary'][f'{w} @ 256']['trunk'] != m['summary'][f'{w} @ 320']['trunk']
    assert m['best_window'] in labels
    best = m['points'][m['best_window']]
    assert m['best'] == {'window': best['window'], 'resolution': best['resolution']}
    fp = result['fingerprint']
    assert fp['resolutions'] == [256, 320] and 'resolution' not in fp and fp['windows'] == labels
    assert set(result['headline']) == {f'trunk cos {x}' for x in labels}
    table = (out / 'metrics.md').read_text()
    assert '| window | px | grid | trunk cos | trunk rel.err |' in table
    assert '| 4 | 320 | 20x20 |' in table and '| global | 256 | 16x16 |' in table
    assert (f"Closest trunk features: window {best['window']} at {best['resolution']} px "
            f"({best['grid']}x{best['grid']} tokens).") in table
    assert '(256, 320 px) vs' in table
    # resuming the folder with other sizes is refused, and nothing is predicted or written
    records = _records(out)
    with pytest.raises(ValueError, match=r'holds records of a different run \(resolutions: \[256, 320\] -> '
                                         r'\[256, 384\]'):
        evaluate(['features', *argv[:-1], '384', '--out', str(out)])
    with pytest.raises(ValueError, match=r'resolution: None -> 256, resolutions: \[256, 320\] -> None'):
        evaluate(['features', *argv[:-3], '--out', str(out)])  # nor without --resolutions
    assert _records(out) == records and json.loads((out / 'metrics.json').read_text()) == result


def test_feature_windows_come_from_the_registry(data_root, tmp_path, monkeypatch):
    from sam3_cradio.evaluation.commands import features
    from sam3_cradio.registry import get_backbone

    argv = ['--images', str(data_root / 'coco' / 'images'), '--windows', '5', '--backbone', 'cradio_tiny',
            '--random-weights', '--out', str(tmp_path / 'o')]
    with pytest.raises(ValueError, match=r'window 5 does not divide the 16x16 token grid of cradio_tiny'):
        evaluate(['features', *argv])
    with pytest.raises(ValueError, match=r"'pe' is not a C-RADIO backbone"):
        evaluate(['features', *argv[:-5], '--backbone', 'pe', '--out', str(tmp_path / 'o')])
    with pytest.raises(ValueError, match='sweeps windows'):
        evaluate(['features', *argv[:-5], '--backbone', 'cradio_tiny:8', '--out', str(tmp_path / 'o')])
    with pytest.raises(ValueError, match="no key 'trunk.embeddim'; did you mean trunk.embed_dim"):
        evaluate(['features', *argv[:2], '--backbone', 'cradio_tiny', '--random-weights', '--reference', 'pe_tiny',
                  '--reference-override', 'trunk.embeddim=64', '--out', str(tmp_path / 'o')])
    assert not (tmp_path / 'o').exists()
    # without --windows: global and the registry's suggested windows of the 16-token grid
    seen = {}
    monkeypatch.setattr(features, 'run_models', lambda models, make_spec, run, anchor, echo: seen.setdefault(
        'labels', make_spec(models[0]).fingerprint['windows']))
    assert evaluate(['features', *argv[:2], '--backbone', 'cradio_tiny', '--random-weights',
                     '--out', str(tmp_path / 'o')]) == 0
    assert seen.pop('labels') == ['global', *map(str, get_backbone('cradio_tiny').suggested_windows())] \
        == ['global', '2', '4']
    # with --resolutions and without --windows: each size's own suggested windows (20 tokens at 320 px: 2 4 5)
    assert evaluate(['features', *argv[:2], '--backbone', 'cradio_tiny', '--random-weights',
                     '--resolutions', '256', '320', '--out', str(tmp_path / 'o')]) == 0
    assert seen.pop('labels') == ['global @ 256', '2 @ 256', '4 @ 256', 'global @ 320', '2 @ 320', '4 @ 320',
                                  '5 @ 320']
    assert not (tmp_path / 'o').exists()


def test_feature_resolutions_are_checked_before_anything_is_written(data_root, tmp_path):
    argv = [*_features_argv(data_root), '--out', str(tmp_path / 'o')]
    # a window that divides one size's grid (16 tokens at 256 px) but not the other's (20 at 320 px): the pair
    with pytest.raises(ValueError, match=r'window 8 does not divide the 20x20 token grid of cradio_tiny at 320 px; '
                                         r"use 'global' or one of \[1, 2, 4, 5, 10\], or resolution 384 for window 8"):
        evaluate(['features', *argv, '--windows', '8', '--resolutions', '256', '320'])
    with pytest.raises(ValueError, match=r"250 px is not a multiple of cradio_tiny's patch size 16; nearest size for "
                                         r'window global: 256'):
        evaluate(['features', *argv, '--resolutions', '256', '250'])
    with pytest.raises(ValueError, match='resolution must be a positive number of pixels, got 0'):
        evaluate(['features', *argv, '--resolutions', '0'])
    with pytest.raises(ValueError, match=r'--resolutions and --override backbone.image_size=N both set'):
        evaluate(['features', *argv, '--resolutions', '320', '--override', 'backbone.image_size=320'])
    assert not (tmp_path / 'o').exists()


@pytest.mark.slow
def test_several_models_side_by_side_in_one_command(data_root, tmp_path):
    gold = data_root / 'gold'
    out = tmp_path / 'cmp'
    argv = ['--gt-dir', str(gold / 'gt-annotations'), '--image-dir', str(gold / 'metaclip-images'),
            '--sa1b-image-dir', str(gold / 'sa1b-images'), '--score-threshold', '0.3', '--limit', '2', *MODEL_ARGS,
            '--backbone', 'cradio_tiny', 'cradio_tiny:8', '--out', str(out)]
    assert evaluate(['saco-gold', *argv]) == 0
    comparison = json.loads((out / 'comparison.json').read_text())
    assert list(comparison['models']) == ['cradio_tiny', 'cradio_tiny-w8']
    for label, window in (('cradio_tiny', 'global'), ('cradio_tiny-w8', 8)):
        result = json.loads((out / label / 'metrics.json').read_text())
        assert result['fingerprint']['window_size'] == window and result['num_units'] == 2
        assert result['fingerprint']['backbone'] == 'cradio_tiny' and result['fingerprint']['resolution'] == 256
        assert comparison['models'][label]['headline']['cgF1'] == pytest.approx(result['metrics']['average']['cgf1'])
    assert comparison['models']['cradio_tiny-w8']['title'] == 'C-RADIO tiny (random weights) · window 8'
    md = (out / 'comparison.md').read_text()
    assert '| model | cgF1 | IL_MCC | pmF1 |' in md and '| cradio_tiny-w8 |' in md and 'score >= 0.3' in md
    assert '- cradio_tiny: C-RADIO tiny (random weights) · global attention' in md
    with pytest.raises(ValueError, match="pe's attention window is fixed at 24"):
        evaluate(['saco-gold', *argv[:-3], 'pe:8', '--out', str(out)])
    with pytest.raises(ValueError, match='names a model twice'):
        evaluate(['saco-gold', *argv[:-3], 'cradio_tiny:global', '--out', str(out)])


@pytest.mark.slow
def test_video_torchrun_two_processes_equals_one(data_root, tmp_path):
    # sam3's video classes read RANK / WORLD_SIZE to split frames over GPUs; each rank must run whole sequences
    args = ['--dataset', 'davis', '--root', str(data_root / 'davis'), *MODEL_ARGS]
    assert evaluate(['vos', *args, '--out', str(tmp_path / 'one')]) == 0
    r = _run(['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', 'eval/vos.py', *args,
              '--out', str(tmp_path / 'two')])
    assert r.returncode == 0, r.stderr[-3000:]
    assert _metrics(tmp_path / 'two') == _metrics(tmp_path / 'one')
    per_rank = {p.name: p.read_text().count('\n') for p in (tmp_path / 'two' / 'records').glob('*.jsonl')}
    assert per_rank == {'rank00000.jsonl': 1, 'rank00001.jsonl': 1}  # one sequence each
