"""``sam3-cradio segment`` given what new users give it (issue 23): quoted globs, an output folder inside the input
folder, output paths that cannot be written, list files with a byte-order mark or naming folders, symlinks and
link loops, folders where nothing can be read, and images too large to decode.

Most cases are refused before any model is built: the model builders are replaced by ones that fail the test.
The runs that segment use the tiny model on 48 x 48 px images.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CRADIO_TINY

MODEL = ['--backbone', 'cradio_tiny', '--random-weights', '--cradio-checkpoint', str(CRADIO_TINY / 'model.pth.tar'),
         '--device', 'cpu', '--threads', '1', '--no-progress', '--workers', '0']
PROMPT = ['--text', 'cat', '--threshold', '0.25']


@pytest.fixture(autouse=True)
def _one_thread(_deterministic):
    torch.set_num_threads(1)


def segment(argv: list) -> int:
    from sam3_cradio.cli import main

    return main(['segment', *argv])


def small_image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 48, 3), np.uint8)).save(path)
    return path


def huge_png(path: Path, side: int = 12000) -> Path:
    """A valid, all-black 1-bit PNG of side x side pixels: a few KB on disk, side**2 * 3 bytes as RGB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

    row = b'\0' * (1 + (side + 7) // 8)  # filter byte + packed bits
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 1, 0, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(row * side, 9)) + chunk(b'IEND', b''))
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Building a model fails the test: what these cases check is found before."""
    import sam3_cradio.build
    import sam3_cradio.evaluation.models

    def fail(*args, **kwargs):
        raise AssertionError('the model was built before the error was found')

    monkeypatch.setattr(sam3_cradio.build, 'build_sam3', fail)
    monkeypatch.setattr(sam3_cradio.evaluation.models, 'build_model', fail)


def one_line_error(capsys, rc: int, *expected: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith('error: ') and err.count('\n') == 1, err
    for text in expected:
        assert text in err, err
    return err


# ---------------------------------------------------------------------------------------------------------------
# Globs, list files, symlinks
# ---------------------------------------------------------------------------------------------------------------

def test_a_quoted_glob_is_a_job_not_one_file(tmp_path, monkeypatch, capsys):
    from sam3_cradio.commands.segment import _one_image

    for name in ('a.jpg', 'b.jpg', 'c.png'):
        small_image(tmp_path / 'photos' / name)
    monkeypatch.chdir(tmp_path)

    def one(*inputs, fmt=None):
        return _one_image(argparse.Namespace(inputs=list(inputs), format=fmt))

    assert one('photos/a.jpg') and one('missing.jpg')  # a missing image is named as such
    assert not one('photos/*.jpg') and not one('photos/?.jpg') and not one('photos/[ab].jpg')
    assert not one('photos/a.jpg', fmt=['coco']) and not one('photos/a.jpg', 'photos/b.jpg')
    assert segment(['photos/*.jpg', *PROMPT, *MODEL]) == 0  # no --format: a job into segmented/
    coco = json.loads((tmp_path / 'segmented' / 'coco.json').read_text())
    assert [i['file_name'] for i in coco['images']] == ['a.jpg', 'b.jpg']
    capsys.readouterr()
    one_line_error(capsys, segment(['photos/*.gif', *PROMPT, *MODEL]), "no images found in 'photos/*.gif'")


def test_list_files_may_name_folders_and_globs_and_start_with_a_bom(tmp_path):
    from sam3_cradio.jobs import collect_images

    for name in ('a.png', 'sub/b.png', 'sub/deeper/c.png', 'more/d.jpg', 'more/e.png'):
        small_image(tmp_path / 'photos' / name)
    listing = tmp_path / 'photos' / 'list.txt'
    # Notepad's "UTF-8 with BOM" and CRLF line ends
    listing.write_bytes('\ufeffa.png\r\n# a folder, searched recursively\r\nsub\r\nmore/*.jpg\r\n'.encode('utf-8'))
    images = collect_images(listing)
    assert list(images.names) == ['a.png', 'more/d.jpg', 'sub/b.png', 'sub/deeper/c.png']
    listing.write_text('a.png\nnope/\n')
    with pytest.raises(FileNotFoundError, match=r"lists 1 files that do not exist \(e.g. '.*nope'"):
        collect_images(listing)


@pytest.mark.timeout(120)
def test_symlinks_are_followed_once_and_loops_do_not_hang(tmp_path, caplog):
    from sam3_cradio.jobs import collect_images

    photos = tmp_path / 'photos'
    small_image(photos / 'a.png')
    outside = small_image(tmp_path / 'elsewhere' / 'c.png')
    (photos / 'b.png').symlink_to(outside)           # an image outside the folder
    (photos / 'again.png').symlink_to('a.png')       # the same image twice: once, under its first name
    (photos / 'loop.png').symlink_to('loop.png')     # a loop of links
    (photos / 'sub').mkdir()
    (photos / 'sub' / 'up').symlink_to('..')          # folder loops: glob.glob('**') would take 2**40 steps
    (photos / 'sub' / 'here').symlink_to('.')
    with caplog.at_level('WARNING'):
        images = collect_images(photos)
    assert list(images.names) == ['a.png', 'b.png'] and images.root == photos.resolve()
    assert images.paths[1] == photos.resolve() / 'b.png'  # named by its link; read through it
    assert 'loop.png: a symlink to nothing' in caplog.text
    assert list(collect_images(str(photos / '**' / '*.png')).names) == ['a.png', 'b.png']
    assert list(collect_images(str(photos / 'sub' / '*' / '*.png')).names) == ['a.png', 'b.png']


# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------

def test_the_output_folder_inside_the_input_folder_is_never_an_input(tmp_path, monkeypatch, capsys):
    from sam3_cradio.jobs import collect_images

    photos = tmp_path / 'photos'
    for k, name in enumerate(('a.jpg', 'b.png')):
        small_image(photos / name, k)
    monkeypatch.chdir(photos)
    for _ in range(2):  # the second run finds the first one's masks in the folder, and leaves them out
        assert segment(['.', *PROMPT, '--format', 'coco', 'png', *MODEL]) == 0
        assert 'different run' not in capsys.readouterr().err
    summary = json.loads((photos / 'segmented' / 'summary.json').read_text())
    assert summary['predicted_this_run'] == 0 and summary['metrics']['num_images'] == 2
    coco = json.loads((photos / 'segmented' / 'coco.json').read_text())
    assert [i['file_name'] for i in coco['images']] == ['a.jpg', 'b.png']
    assert sorted(p.name for p in (photos / 'segmented' / 'masks').iterdir()) == ['a.png', 'b.png']
    # an explicit --out inside, or a glob over everything
    assert list(collect_images(str(photos / '**' / '*.png'), exclude=[photos / 'segmented']).names) == ['b.png']
    with pytest.raises(ValueError, match=r'the 2 images found in .* all lie in the output folder .*segmented'):
        collect_images(photos / 'segmented', exclude=[photos / 'segmented'])


def test_output_paths_are_refused_in_one_line_before_the_model_is_built(tmp_path, monkeypatch, capsys, no_model):
    photo = small_image(tmp_path / 'photos' / 'a.png')
    (tmp_path / 'notes.txt').write_text('a file')
    readonly = tmp_path / 'readonly'
    readonly.mkdir()
    access = os.access  # as root every folder is writable: say this one is not, as a read-only mount would
    monkeypatch.setattr(os, 'access', lambda p, mode, **kw: Path(p) != readonly and access(p, mode, **kw))
    job = [str(tmp_path / 'photos'), *PROMPT, '--format', 'coco', *MODEL, '--out']
    one_line_error(capsys, segment([*job, str(tmp_path / 'notes.txt')]), 'notes.txt is a file; give a folder')
    one_line_error(capsys, segment([*job, str(tmp_path / 'notes.txt' / 'run')]), 'notes.txt is a file, not a folder')
    one_line_error(capsys, segment([*job, str(readonly / 'run')]), f'no permission to write in {readonly}')
    one_line_error(capsys, segment([*job, str(readonly)]), f'cannot write in the output folder --out {readonly}')

    single = [str(photo), *PROMPT, *MODEL, '--out']
    for out in ('out.txt', 'newdir', 'out'):
        one_line_error(capsys, segment([*single, str(tmp_path / out)]),
                       'the annotated image needs an image extension (.jpg, .jpeg, .png', 'add --format')
    one_line_error(capsys, segment([*single, str(photo)]), 'is the input image')
    one_line_error(capsys, segment([*single, str(tmp_path / 'notes.txt' / 'x.png')]), 'is a file, not a folder')
    one_line_error(capsys, segment([*single, str(readonly / 'x.png')]), 'no permission to write in')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['notes.txt', 'photos', 'readonly']
    assert not any(readonly.iterdir()) and [p.name for p in (tmp_path / 'photos').iterdir()] == ['a.png']


def test_one_image_into_an_existing_folder(tmp_path, capsys):
    photo = small_image(tmp_path / 'photo.jpg')
    (tmp_path / 'out').mkdir()
    assert segment([str(photo), *PROMPT, *MODEL, '--out', str(tmp_path / 'out')]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(f'wrote {tmp_path / "out" / "photo.png"}')
    assert Image.open(tmp_path / 'out' / 'photo.png').size == (48, 48)
    assert [p.name for p in (tmp_path / 'out').iterdir()] == ['photo.png']  # no temporary file left


def test_a_run_refused_while_building_the_model_leaves_nothing(tmp_path, monkeypatch, capsys):
    import sam3_cradio.evaluation.models

    def refuse(*args, **kwargs):
        raise ValueError('no weights here')

    monkeypatch.setattr(sam3_cradio.evaluation.models, 'build_model', refuse)
    small_image(tmp_path / 'photos' / 'a.png')
    argv = [str(tmp_path / 'photos'), *PROMPT, '--format', 'coco', *MODEL, '--out']
    one_line_error(capsys, segment([*argv, str(tmp_path / 'new')]), 'no weights here')
    assert not (tmp_path / 'new').exists()
    (tmp_path / 'there').mkdir()
    one_line_error(capsys, segment([*argv, str(tmp_path / 'there')]), 'no weights here')
    assert list((tmp_path / 'there').iterdir()) == []  # no run.json, no records/rank00000.jsonl


# ---------------------------------------------------------------------------------------------------------------
# Images that cannot be segmented
# ---------------------------------------------------------------------------------------------------------------

def test_large_images_are_refused_from_their_header(tmp_path, monkeypatch):
    import sam3_cradio.images
    from sam3_cradio.images import to_rgb_array

    huge = huge_png(tmp_path / 'huge.png')
    assert huge.stat().st_size < 100_000
    with pytest.raises(ValueError, match=r'huge.png is too large to decode: 12000 x 12000 pixels \(144 megapixels\), '
                                         r'above the limit of 120 megapixels per image'):
        to_rgb_array(huge)
    # above PIL's own decompression-bomb limit (2 x 89.5 megapixels), in the same words
    with pytest.raises(ValueError, match=r'too large to decode: 196 megapixels, above the limit of 120 megapixels'):
        to_rgb_array(huge_png(tmp_path / 'huger.png', 14000))
    photo = small_image(tmp_path / 'small.png')
    assert to_rgb_array(photo).shape == (48, 48, 3)
    monkeypatch.setattr(sam3_cradio.images, 'MAX_PIXELS', 2000)
    with pytest.raises(ValueError, match=r'48 x 48 pixels \(0 megapixels\), above the limit of 0.002 megapixels'):
        to_rgb_array(photo)


def test_exit_status_when_images_are_skipped(tmp_path, capsys):
    photos = tmp_path / 'photos'
    photos.mkdir()
    (photos / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 a truncated JPEG')
    huge_png(photos / 'huge.png')
    out = tmp_path / 'none'
    assert segment([str(photos), *PROMPT, '--format', 'coco', *MODEL, '--out', str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f'error: none of the 2 images could be segmented; why, per image: {out / "errors.json"}'
    errors = {e['file']: e['error'] for e in json.loads((out / 'errors.json').read_text())}
    assert 'not an image that can be read' in errors['broken.jpg']
    assert 'above the limit of 120 megapixels' in errors['huge.png']

    small_image(photos / 'good.png')
    out = tmp_path / 'some'
    assert segment([str(photos), *PROMPT, '--format', 'coco', *MODEL, '--out', str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f'warning: 2 of 3 images skipped (listed in {out / "errors.json"})'
    assert [i['file_name'] for i in json.loads((out / 'coco.json').read_text())['images']] == ['good.png']
