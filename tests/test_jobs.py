"""``sam3-cradio segment`` over folders, globs and lists (``sam3_cradio.jobs``), on real files, through the tiny
model on CPU.

The folder holds what users' folders hold: an 8-bit grayscale photo (scikit-image's coins), an RGBA image, a
16-bit grayscale PNG (the camera photo scaled to 0..65535), JPEGs named 2 and 10 (natural order), a binary
silhouette two folders down, an ordinary JPEG in a subfolder, and a corrupt JPEG: 8 files, 4 batches of 2.
Random SAM3 weights (seed 0, as the runner builds them) score detections 0.2-0.28 here, so prompts use a 0.25
threshold: a handful of detections per image. Every run uses one CPU thread per process.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CRADIO_TINY, IMAGES

ROOT = Path(__file__).resolve().parents[1]
TINY = CRADIO_TINY / 'model.pth.tar'
MODEL = ['--backbone', 'cradio_tiny', '--random-weights', '--cradio-checkpoint', str(TINY), '--device', 'cpu',
         '--threads', '1', '--no-progress']
PROMPT = ['--text', 'coin, cup', '--threshold', '0.25']
FORMATS = ['coco', 'json', 'png', 'yolo', 'voc', 'annotated']
JOB = [*PROMPT, '--format', *FORMATS, '--batch', '2', '--workers', '1', *MODEL]
ALL = ['2.jpg', '10.jpg', 'gray.png', 'rgba.png', 'sub/broken.jpg', 'sub/coffee.jpg', 'sub/deeper/horse.png',
       'sub/depth16.png']  # in the job's (natural) order
GOOD = [n for n in ALL if n != 'sub/broken.jpg']
BATCHES = [2, 2, 2, 2]  # images per unit at --batch 2
BOOKKEEPING = {'records', 'run.json', 'summary.json', 'summary.md', '.lock'}


@pytest.fixture(autouse=True)
def _one_thread(_deterministic):
    torch.set_num_threads(1)


def make_odd_folder(root: Path) -> Path:
    from skimage import data

    (root / 'sub').mkdir(parents=True)
    Image.fromarray(data.coins()).save(root / 'gray.png')
    rgba = np.dstack([data.astronaut()[::2, ::2], np.full((256, 256), 200, np.uint8)])
    Image.fromarray(rgba, 'RGBA').save(root / 'rgba.png')
    Image.fromarray(data.camera().astype(np.uint16) * 257).save(root / 'sub' / 'depth16.png')
    (root / 'sub' / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 a truncated JPEG')
    Image.open(IMAGES / 'coffee.jpg').save(root / 'sub' / 'coffee.jpg', quality=95)
    astronaut = Image.open(IMAGES / 'astronaut.jpg').convert('RGB')
    astronaut.resize((192, 192)).save(root / '2.jpg', quality=90)
    astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT).crop((64, 64, 448, 352)).save(root / '10.jpg', quality=90)
    (root / 'sub' / 'deeper').mkdir()
    Image.fromarray(~data.horse()).save(root / 'sub' / 'deeper' / 'horse.png')  # mode '1'
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob('*.*')) == sorted(ALL)
    assert Image.open(root / 'sub' / 'depth16.png').mode == 'I;16'
    return root


@pytest.fixture(scope='module')
def odd(tmp_path_factory) -> Path:
    return make_odd_folder(tmp_path_factory.mktemp('odd') / 'photos')


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    env.pop('SAM3C_EVAL_CRASH_AFTER', None)
    return env


def segment(argv: list) -> int:
    """``sam3-cradio segment ARGV`` in this process, user errors printed (exit 2) as on the command line."""
    from sam3_cradio.cli import main

    return main(['segment', *argv])


def output_files(out: Path) -> dict[str, bytes]:
    """Every file a job wrote for the user (not its bookkeeping), by relative path."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob('*'))
            if p.is_file() and p.relative_to(out).parts[0] not in BOOKKEEPING}


def record_ids(out: Path) -> list:
    return [json.loads(line)['id'] for p in sorted((out / 'records').glob('*.jsonl'))
            for line in p.read_text().splitlines() if line.strip()]


@pytest.fixture(scope='module')
def reference(odd, tmp_path_factory) -> Path:
    """One uninterrupted, single-process run of the job into every format."""
    out = tmp_path_factory.mktemp('reference') / 'out'
    torch.set_num_threads(1)
    assert segment([str(odd), *JOB, '--out', str(out)]) == 0
    return out


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------

def test_images_from_files_folders_globs_and_lists(odd, tmp_path):
    from sam3_cradio.jobs import collect_images

    everything = collect_images(odd)
    assert list(everything.names) == ALL
    assert everything.root == odd.resolve() and all(p.is_absolute() for p in everything.paths)
    assert collect_images([odd / 'gray.png']).names == ('gray.png',)
    glob = collect_images(str(odd / '**' / '*.png'))  # a quoted glob; ** goes into subfolders
    assert list(glob.names) == ['gray.png', 'rgba.png', 'sub/deeper/horse.png', 'sub/depth16.png']
    listing = tmp_path / 'list.txt'
    listing.write_text(f'# two images\n{odd / "sub" / "coffee.jpg"}\n\n{os.path.relpath(odd / "gray.png", tmp_path)}\n')
    mixed = collect_images([listing, odd / 'gray.png', str(odd / 'sub' / '*.jpg')])  # gray.png reached twice
    assert list(mixed.names) == ['gray.png', 'sub/broken.jpg', 'sub/coffee.jpg'] and mixed.root == odd.resolve()
    assert everything.digest() != mixed.digest() and everything.digest() == collect_images(str(odd)).digest()

    with pytest.raises(FileNotFoundError, match="'nope' is not an image, a folder, a glob pattern or a text file"):
        collect_images('nope')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='no images found in .*empty'):
        collect_images(tmp_path / 'empty')
    listing.write_text('missing.jpg\n')
    with pytest.raises(FileNotFoundError, match=r'lists 1 files that do not exist \(e.g. .*missing.jpg'):
        collect_images(listing)
    (tmp_path / 'a').mkdir()
    for name in ('1.jpg', '1.png'):
        Image.new('RGB', (8, 8)).save(tmp_path / 'a' / name)
    with pytest.raises(ValueError, match=r'a/1.jpg and a/1.png would write the same output files \(a/1.\*\)'):
        collect_images(tmp_path).stems()


def test_bad_options_fail_in_one_line_before_anything_is_written(odd, tmp_path, capsys):
    out = tmp_path / 'o'
    for argv, message in (
            ([str(odd), *PROMPT, '--format', 'coco', 'tiff'], "error: unknown --format 'tiff'; choose from coco, json"),
            ([str(odd), '--format', 'coco'], 'error: give a prompt: --text, --box or --point'),
            ([str(odd), '--text', 'cat, dog', '--box', '1', '2', '30', '40'], 'error: --box takes at most one --text'),
            ([str(odd), *PROMPT, '--batch', '0'], 'error: --batch must be at least 1, got 0'),
            ([str(tmp_path / 'nope'), *PROMPT, '--format', 'coco'], "error: '"),
            ([str(odd), *PROMPT, '--window-size', '5'], 'error: window 5 does not divide the 16x16 token grid')):
        assert segment([*argv, '--out', str(out), *MODEL]) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count('\n') == 1, err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# The Python API
# ---------------------------------------------------------------------------------------------------------------

def _differ(a: np.ndarray, b: np.ndarray) -> float:
    """The share of mask pixels that differ (0 for two empty results)."""
    assert a.shape == b.shape
    return float((a != b).mean()) if a.size else 0.0


@pytest.mark.slow
def test_iter_segment_batches_the_trunk_and_matches_the_predictor(odd, tiny_image_model):
    from sam3_cradio.jobs import iter_segment
    from sam3_cradio.predictor import Sam3ImagePredictor

    predictor = Sam3ImagePredictor(tiny_image_model, confidence_threshold=0.25)
    with pytest.raises(ValueError, match='broken.jpg is not an image that can be read'):
        list(iter_segment(predictor, odd, text='coin, cup'))
    single = list(iter_segment(predictor, odd, text='coin, cup', on_error='skip'))
    assert [p.relative_to(odd).as_posix() for p, _ in single] == GOOD
    for path, result in single:  # batch 1, decoded here: exactly what set_image + predict_text give
        expected = predictor.set_image(path).predict_text('coin, cup')
        assert result.labels == expected.labels and np.array_equal(result.scores, expected.scores)
        assert np.array_equal(result.masks, expected.masks) and np.array_equal(result.boxes, expected.boxes)
        assert result.masks.shape[1:] == Image.open(path).size[::-1]
    # 3 images per trunk pass, decoded by a worker process: the same detections up to float round-off
    batched = list(iter_segment(predictor, odd, text='coin, cup', on_error='skip', batch=3, workers=1))
    assert [p for p, _ in batched] == [p for p, _ in single]
    assert sum(len(r) for _, r in single) > 0
    for (_, a), (_, b) in zip(single, batched):
        assert a.labels == b.labels and np.allclose(a.scores, b.scores, atol=1e-4)
        assert np.allclose(a.boxes, b.boxes, atol=0.05) and _differ(a.masks, b.masks) < 1e-3
    # clicks use the interactive predictor on each image's share of the batched features
    clicks = list(iter_segment(tiny_image_model, odd / 'sub', points=[[100, 120, 1]], batch=2, on_error='skip'))
    for path, result in clicks:
        expected = predictor.set_image(path).predict_points([[100, 120]], [1], multimask_output=False)
        assert result.labels == ['point'] and np.allclose(result.scores, expected.scores, atol=1e-4)
        assert result.masks.shape == expected.masks.shape and _differ(result.masks, expected.masks) < 1e-3


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------

def test_a_folder_of_odd_images_segments_into_every_format(odd, reference):
    import pycocotools.mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from supervision.dataset.formats.yolo import yolo_annotations_to_detections

    errors = json.loads((reference / 'errors.json').read_text())
    assert [e['file'] for e in errors] == ['sub/broken.jpg'] and 'not an image that can be read' in errors[0]['error']
    summary = json.loads((reference / 'summary.json').read_text())
    m = summary['metrics']
    assert (m['num_images'], m['num_segmented'], m['num_errors']) == (8, 7, 1) and summary['num_units'] == 4
    assert m['num_detections'] > 0 and set(m['detections_per_category']) == {'coin', 'cup'}
    t = m['timing']  # where the run's time went: the segmented images, the model's part of the wall time
    assert t['images'] == 7 and 0 < t['model_seconds'] < t['seconds'] and 0 < t['writing_seconds'] < t['seconds']
    assert t['model_seconds'] == pytest.approx(t['encoder_seconds'] + t['decoder_seconds'], abs=1e-3)
    assert t['outside_model_share'] == pytest.approx(1 - t['model_seconds'] / t['seconds'], abs=1e-3)
    assert t['images_per_s'] == pytest.approx(7 / t['seconds'], rel=1e-3)
    assert 'images/s' in (reference / 'summary.md').read_text()

    stems = [g.rsplit('.', 1)[0] for g in GOOD]
    docs = {}
    for name, stem in zip(GOOD, stems):
        doc = json.loads((reference / 'json' / f'{stem}.json').read_text())
        h, w = np.asarray(Image.open(odd / name)).shape[:2]
        assert (doc['file'], doc['height'], doc['width']) == (name, h, w)
        dets = doc['detections']
        scores = [d['score'] for d in dets]
        assert scores == sorted(scores, reverse=True) and all(s >= 0.25 for s in scores)
        assert [d['id'] for d in dets] == list(range(1, len(dets) + 1))
        masks = np.stack([mask_utils.decode(d['segmentation']) for d in dets]).astype(bool) if dets else \
            np.zeros((0, h, w), bool)
        # PNG: instance ids, the higher score where masks overlap
        ids = np.asarray(Image.open(reference / 'masks' / f'{stem}.png'))
        assert ids.shape == (h, w) and ids.dtype == np.uint8 and set(np.unique(ids)) <= set(range(len(dets) + 1))
        for k in range(len(dets)):
            assert np.array_equal(ids == k + 1, masks[k] & ~masks[:k].any(axis=0))
        # YOLO polygons (one line per connected part of a mask), class = category index; read back by supervision
        lines = (reference / 'yolo' / 'labels' / f'{stem}.txt').read_text().splitlines()
        assert len(lines) >= len(dets) and all(0 <= float(v) <= 1 for line in lines for v in line.split()[1:])
        back = yolo_annotations_to_detections(lines, (w, h), with_masks=True)
        assert set(back.class_id.tolist()) == {['coin', 'cup'].index(d['label']) for d in dets}
        if dets:  # the polygons cover what the masks cover, up to their outlines
            assert (back.mask.any(axis=0) != masks.any(axis=0)).mean() < 0.02
        # Pascal VOC: an object per connected part of a mask, named after its category
        voc = ET.parse(reference / 'voc' / f'{stem}.xml').getroot()
        assert voc.findtext('filename') == Path(name).name and int(voc.findtext('size/width')) == w
        names = [o.findtext('name') for o in voc.iter('object')]
        assert len(names) >= len(dets) and set(names) == {d['label'] for d in dets}
        # annotated
        assert Image.open(reference / 'annotated' / f'{stem}.png').size == (w, h)
        docs[name] = doc
    assert sum(len(d['detections']) for d in docs.values()) == m['num_detections']
    assert 'names: [coin, cup]' in (reference / 'yolo' / 'data.yaml').read_text()

    # COCO: pycocotools loads the file; scored against a ground truth made from the per-image JSON files of the
    # same prompts (same image ids and categories), every detection is a true positive: AP 1
    coco = COCO(str(reference / 'coco.json'))
    image_ids = [ALL.index(name) + 1 for name in GOOD]  # ids follow the job's order; broken.jpg has none
    assert sorted(coco.getImgIds()) == image_ids
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == ['coin', 'cup']
    assert len(coco.getAnnIds()) == m['num_detections']
    images, anns = [], []
    for image_id, (name, doc) in zip(image_ids, docs.items()):
        images.append({'id': image_id, 'file_name': name, 'height': doc['height'], 'width': doc['width']})
        for d in doc['detections']:
            anns.append({'id': len(anns) + 1, 'image_id': image_id, 'category_id': d['category_id'], 'iscrowd': 0,
                         'segmentation': d['segmentation'], 'area': d['area'], 'bbox': d['bbox_xywh']})
    gt = COCO()
    gt.dataset = {'images': images, 'annotations': anns,
                  'categories': [{'id': 1, 'name': 'coin'}, {'id': 2, 'name': 'cup'}]}
    gt.createIndex()
    results = json.loads((reference / 'coco.json').read_text())['annotations']
    for iou_type in ('segm', 'bbox'):
        e = COCOeval(gt, gt.loadRes(results), iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
        assert e.stats[0] == pytest.approx(1.0), iou_type


def test_one_image_without_format_writes_the_annotated_image(tmp_path, capsys):
    out = tmp_path / 'segmented.png'
    assert segment([str(IMAGES / 'coffee.jpg'), *PROMPT, '--out', str(out), *MODEL]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f'{len(lines) - 1} objects; encoder ') and lines[0].endswith(f'; wrote {out}')
    assert Image.open(out).size == Image.open(IMAGES / 'coffee.jpg').size
    assert [p.name for p in tmp_path.iterdir()] == ['segmented.png']
    # with a --format, one image is a job like a folder
    assert segment([str(IMAGES / 'coffee.jpg'), *PROMPT, '--format', 'json', '--out', str(tmp_path / 'job'),
                    *MODEL]) == 0
    assert json.loads((tmp_path / 'job' / 'json' / 'coffee.json').read_text())['file'] == 'coffee.jpg'


def test_the_folder_belongs_to_one_model_and_prompt(odd, tmp_path, capsys):
    """bf16 records differ from fp32 ones, and another prompt gives other records: neither may join a folder."""
    out = tmp_path / 'bf16'
    argv = [str(odd / 'sub' / 'deeper'), *PROMPT, '--format', 'json', '--out', str(out), *MODEL]
    assert segment([*argv, '--dtype', 'bf16']) == 0
    fingerprint = json.loads((out / 'run.json').read_text())['fingerprint']
    assert fingerprint['dtype'] == 'bf16' and fingerprint['prompts']['text'] == ['coin', 'cup']
    capsys.readouterr()
    assert segment(argv) == 2
    assert "holds records of a different run (dtype: 'bf16' -> None)" in capsys.readouterr().err
    assert segment([*argv, '--dtype', 'bf16', '--text', 'horse']) == 2
    assert "holds records of a different run (prompts: {'text': ['coin', 'cup']" in capsys.readouterr().err
    assert segment([*argv, '--text', 'horse', '--overwrite']) == 0  # --overwrite starts the folder afresh
    assert json.loads((out / 'json' / 'horse.json').read_text())['categories'] == ['horse']


# ---------------------------------------------------------------------------------------------------------------
# Long runs: resume, interrupt, shard
# ---------------------------------------------------------------------------------------------------------------

def _signal_after(args: list, records: Path, count: int, sig: int, stderr: Path) -> int:
    """Start ``python ARGS`` in its own process group; once ``records`` holds ``count`` lines, send ``sig`` to the
    whole group (as a terminal's Ctrl-C reaches the DataLoader workers too); returns the exit status."""
    with open(stderr, 'w') as err:
        proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
        try:
            deadline = time.time() + 240
            while time.time() < deadline and proc.poll() is None:
                if records.exists() and records.read_bytes().count(b'\n') >= count:
                    os.killpg(proc.pid, sig)
                    break
                time.sleep(0.01)
            return proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.slow
def test_kill_then_ctrl_c_then_resume_gives_the_files_of_an_uninterrupted_run(odd, reference, tmp_path):
    out = tmp_path / 'resumed'
    args = ['-m', 'sam3_cradio.cli', 'segment', str(odd), *JOB, '--out', str(out)]
    records = out / 'records' / 'rank00000.jsonl'
    assert _signal_after(args, records, 1, signal.SIGKILL, tmp_path / 'kill.txt') == -signal.SIGKILL
    killed = len(record_ids(out))
    assert 1 <= killed < 3, f'the run was not killed part-way ({killed} of 4 batches)'
    assert not (out / 'summary.json').exists() and not (out / 'coco.json').exists()

    # Ctrl-C (SIGINT to the process group, DataLoader workers included) once one more batch is recorded
    rc = _signal_after(args, records, killed + 1, signal.SIGINT, tmp_path / 'int.txt')
    stderr = (tmp_path / 'int.txt').read_text()
    ids = record_ids(out)
    done = sum(BATCHES[i] for i in ids)
    assert rc == 130 and 'Traceback' not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == \
        f'interrupted after {done} of 8 images ({out}); run the same command to resume'
    assert len(ids) < 4 and not (out / 'summary.json').exists()

    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['predicted_this_run'] == 4 - len(ids)  # finished batches were not redone
    assert sorted(record_ids(out)) == [0, 1, 2, 3]  # and none recorded twice
    assert output_files(out) == output_files(reference)  # byte for byte
    assert not (out / '.lock').exists()
    # a finished folder rerun with other formats only writes files
    assert segment([str(odd), *JOB[:JOB.index('--format')], '--format', 'json', *JOB[JOB.index('--batch'):],
                    '--out', str(out)]) == 0
    assert json.loads((out / 'summary.json').read_text())['predicted_this_run'] == 0
    assert output_files(out) == output_files(reference)


@pytest.mark.slow
def test_two_processes_over_gloo_give_the_files_of_one(odd, reference, tmp_path):
    out = tmp_path / 'ddp'
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                        '-m', 'sam3_cradio.cli', 'segment', str(odd), *JOB, '--out', str(out)],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    per_rank = {p.name: sorted(json.loads(line)['id'] for line in p.read_text().splitlines())
                for p in (out / 'records').glob('*.jsonl')}
    assert per_rank == {'rank00000.jsonl': [0, 2], 'rank00001.jsonl': [1, 3]}  # batches split over the ranks
    assert json.loads((out / 'summary.json').read_text())['world_size'] == 2
    assert output_files(out) == output_files(reference)
