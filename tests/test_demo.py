"""The Gradio demo (sam3_cradio.demo) on the tiny model.

Without gradio: the demo's library modules import and work with gradio blocked (options, backbone and window
menus from the registry, upload and prompt checks, the model and feature caches with a fake builder, rendering,
page messages without server paths), and a segment request runs on the tiny model.

With the ``demo`` extra, the app served in-process on 127.0.0.1:

- gradio_client drives every endpoint: text, boxes, clicks, the confidence slider (no encoder re-run), two backbones
  side by side, video tracking (text and first-frame box), and every kind of bad input (a message, no stack trace);
- 8 concurrent clients all get their own, correct results;
- a real headless Chromium (Debian's ``chromium`` driven by Playwright) loads the page, runs a text prompt and
  saves a screenshot (under tmp_path, or $SAM3_DEMO_ARTIFACTS; SAM3_DEMO_UPDATE_DOCS=1 also copies it to
  docs/demo.png);
- missing weights: the app starts and the page says which file to fetch and where to put it.

Random SAM3 weights score every query ~0.2, so prompts here use a low confidence threshold.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES, make_tracker_confident, read_video_frames
from sam3_cradio.commands.demo import parse_args
from sam3_cradio.demo.inputs import (
    UserError,
    hide_paths,
    load_upload,
    make_image_prompt,
    page_spec,
    parse_backbone,
    read_annotation,
    window_menu,
)
from sam3_cradio.demo.models import FeatureCache, ModelCache, Sam3Builder, WeightsError
from sam3_cradio.demo.results import Panel, RawResult, page_error, render
from sam3_cradio.demo.state import DemoState
from sam3_cradio.registry import get_backbone, resolve

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')

ROOT = Path(__file__).resolve().parents[1]
DEMO_PACKAGE = ROOT / 'sam3_cradio' / 'demo'
TINY = 'C-RADIO tiny (random weights)'   # the registry's labels, as the page shows them
PE = 'SAM3 PE (Meta)'
SO400M = 'C-RADIOv4-SO400M'
CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--no-first-run', '--disable-sync']
THR = 0.15  # random weights: every query scores ~0.2
MAX_FRAMES = 6
GRADIO_MODULES = ('gradio', 'gradio_client', 'gradio_image_annotation')


def _require_gradio():
    for m in GRADIO_MODULES:
        if importlib.util.find_spec(m) is None:
            pytest.skip(f'the demo app needs {m}: pip install -e ".[demo]"')


def _stubs() -> list[Path]:
    """Type stubs gradio would write next to the modules defining components (the source tree must stay clean)."""
    return sorted(DEMO_PACKAGE.glob('*.pyi')) + sorted((ROOT / 'demo').glob('*.pyi'))


@pytest.fixture(scope='module')
def small(tmp_path_factory) -> dict:
    """Small crops of the test photos (cheap mask upsampling) and a few files for bad-input cases."""
    d = tmp_path_factory.mktemp('demo')
    coffee = Image.open(IMAGES / 'coffee.jpg').convert('RGB').resize((240, 160), Image.BILINEAR)
    astro = Image.open(IMAGES / 'astronaut.jpg').convert('RGB').resize((192, 192), Image.BILINEAR)
    coffee.save(d / 'coffee.png')
    astro.save(d / 'astronaut.png')
    (d / 'notes.png').write_text('this is not an image')
    Image.fromarray(np.tile(np.asarray(coffee), (1, 12, 1))).save(d / 'wide.png')  # 2880 x 160
    return {'dir': d, 'coffee': d / 'coffee.png', 'astronaut': d / 'astronaut.png', 'text_file': d / 'notes.png',
            'wide': d / 'wide.png'}


@pytest.fixture(scope='module')
def artifacts(tmp_path_factory) -> Path:
    """Where screenshots and the tracked video go: $SAM3_DEMO_ARTIFACTS to keep them, else a temporary folder."""
    keep = os.environ.get('SAM3_DEMO_ARTIFACTS')
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        return Path(keep)
    return tmp_path_factory.mktemp('artifacts')


# ---------------------------------------------------------------------------------------------------------------
# The library part, without gradio
# ---------------------------------------------------------------------------------------------------------------

NO_GRADIO = f"""
import sys
for m in {GRADIO_MODULES!r}:
    sys.modules[m] = None  # `import gradio` raises ImportError, as without the demo extra
import sam3_cradio.demo.inputs, sam3_cradio.demo.models, sam3_cradio.demo.options
import sam3_cradio.demo.results, sam3_cradio.demo.state, sam3_cradio.demo.videos
from sam3_cradio.cli import main
from sam3_cradio.commands.demo import parse_args
from sam3_cradio.demo.state import DemoState
loaded = sorted(k for k, v in sys.modules.items() if v is not None and k.split('.')[0] in {GRADIO_MODULES!r})
assert not loaded, loaded
st = DemoState(parse_args(['--tiny', '--no-preload']), build=lambda spec, mode: object())
assert st.models.get(*st.default_key).model is not None
st.close()
sys.exit(main(['demo', '--tiny']))
"""


@pytest.mark.slow
def test_library_imports_and_runs_without_gradio(tmp_path):
    r = subprocess.run([sys.executable, '-c', NO_GRADIO], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith('error: the demo needs gradio'), r.stderr
    assert 'pip install "sam3-cradio[demo]"' in r.stderr and 'Traceback' not in r.stderr


def test_args(capsys):
    a = parse_args(['--tiny'])
    assert a.backbone == 'cradio_tiny' and a.spec == resolve('cradio_tiny') and a.spec.window == 'global'
    assert a.threshold == 0.2 and a.share is False and a.host == '127.0.0.1'
    assert a.backbones == ['cradio_tiny', 'cradio_v4_h', 'cradio_v4_so400m', 'pe']
    a = parse_args(['--cradio-checkpoint', 'so400m=/m/so.pth.tar', '--cradio-checkpoint', '/m/h.pth.tar'])
    assert a.backbone == 'cradio_v4_h' and a.backbones == ['cradio_v4_h', 'cradio_v4_so400m', 'pe']
    assert a.cradio_checkpoints == {'cradio_v4_so400m': '/m/so.pth.tar', 'cradio_v4_h': '/m/h.pth.tar'}
    assert parse_args(['--backbone', 'cradio_v4_so400m:12']).spec == resolve('cradio_v4_so400m', 12)
    assert parse_args(['--window-size', 'global']).spec.window == 'global'
    assert parse_args(['--window-size', '8']).spec == resolve('cradio_v4_h', 8)
    assert parse_args(['--backbone', 'pe']).spec.window == 24
    for bad, why in [(['--backbone', 'cradio_tiny'], 'use --tiny'),
                     (['--tiny', '--backbone', 'pe_tiny'], 'the demo offers'),
                     (['--backbone', 'resnet'], 'unknown backbone'),
                     (['--window-size', '7'], 'does not divide the 72x72 token grid'),
                     (['--window-size', '0'], "window must be 'global' or a positive number"),  # not global
                     (['--backbone', 'pe', '--window-size', '24'], 'fixed at 24'),
                     (['--backbone', 'cradio_v4_h:8', '--window-size', '12'], 'two windows'),
                     (['--threshold', '2'], '--threshold must be in [0, 1]'),
                     (['--max-models', '0'], '--max-models must be at least 1'),
                     (['--cradio-checkpoint', 'pe=/x.pt'], 'takes its weights from sam3.pt'),
                     (['--cradio-checkpoint', 'resnet=/x.pt'], 'unknown backbone')]:
        with pytest.raises(SystemExit):
            parse_args(bad)
        assert why in capsys.readouterr().err, bad


def test_window_menus_follow_the_grid():
    """Menus list 'global' and the windows giving 3 to 12 windows per side, worked out here by hand."""
    # cradio_tiny: 256 px / 16 px patches = 16 tokens; divisors 2, 4, 8; 16 / 8 = 2 windows per side is too few
    assert window_menu(get_backbone('cradio_tiny')) == (['global', '2', '4'], 'global')
    # C-RADIOv4 at 1152 px: 72 tokens; divisors 6..24 give 12..3 windows per side (2, 3, 4 and 36 fall outside)
    for name in ('cradio_v4_h', 'cradio_v4_so400m'):
        assert window_menu(get_backbone(name)) == (['global', '6', '8', '9', '12', '18', '24'], 'global')
    assert window_menu(get_backbone('cradio_v4_h'), 8) == (['global', '6', '8', '9', '12', '18', '24'], '8')
    # a window the grid accepts but the menu does not suggest stays selectable when chosen at start-up
    assert window_menu(get_backbone('cradio_v4_h'), 4) == (['global', '6', '8', '9', '12', '18', '24', '4'], '4')
    # PE: its checkpoint fixes the window; the menu shows it and offers nothing else
    assert window_menu(get_backbone('pe')) == (['24'], '24')


def test_page_values_to_model_specs():
    offered = parse_args(['--tiny']).backbones
    assert parse_backbone(TINY, offered) is get_backbone('cradio_tiny')
    assert parse_backbone(PE, offered) is get_backbone('pe')
    assert page_spec(TINY, 'global', offered) == resolve('cradio_tiny')
    assert page_spec(TINY, '4', offered) == resolve('cradio_tiny', 4)
    assert page_spec(SO400M, 12, offered) == resolve('cradio_v4_so400m', 12)
    assert page_spec(PE, '24', offered) == resolve('pe')  # the menu's one entry: PE as it is
    with pytest.raises(UserError, match="fixed at 24"):
        page_spec(PE, 'global', offered)
    with pytest.raises(UserError, match='does not divide the 16x16 token grid'):
        page_spec(TINY, '5', offered)
    with pytest.raises(UserError, match="window must be 'global'"):
        page_spec(TINY, '0', offered)
    with pytest.raises(UserError, match='unknown backbone'):
        parse_backbone(TINY, parse_args([]).backbones)  # not offered without --tiny
    with pytest.raises(UserError, match='unknown backbone'):
        parse_backbone('resnet', offered)


def test_load_upload_odd_and_huge(tmp_path):
    rgba = tmp_path / 'rgba.png'
    Image.fromarray(np.full((40, 60, 4), 200, np.uint8)).save(rgba)
    im16 = tmp_path / 'gray16.png'
    Image.fromarray(np.full((30, 20), 65535, np.uint16)).save(im16)
    a = load_upload(rgba, 2048, 1e8)
    assert a.image.shape == (40, 60, 3) and a.scale == 1.0 and a.orig_size == (60, 40) and not a.note
    b = load_upload(im16, 2048, 1e8)
    assert b.image.shape == (30, 20, 3) and b.image.max() == 255  # full 16-bit range -> 8 bits, not clipped
    c = load_upload(rgba, 30, 1e8)
    assert c.image.shape == (20, 30, 3) and c.scale == 0.5 and 'downscaled' in c.note
    with pytest.raises(UserError, match='megapixels'):
        load_upload(rgba, 2048, 1000)
    (tmp_path / 'x.jpg').write_bytes(b'\xff\xd8 truncated')
    with pytest.raises(UserError, match='not an image') as e:
        load_upload(tmp_path / 'x.jpg', 2048, 1e8, name='holiday.jpg')
    assert 'holiday.jpg' in str(e.value) and str(tmp_path) not in str(e.value)
    # one size rule with the API and the command line (sam3_cradio.images): any image from 1 x 1 px
    for h, w in ((4, 100), (1, 1)):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / 'thin.png')
        assert load_upload(tmp_path / 'thin.png', 2048, 1e8).image.shape == (h, w, 3)
    # an animated image: its first frame, said in the page as the library warns
    frames = [Image.fromarray(np.full((20, 30, 3), v, np.uint8)) for v in (10, 240)]
    frames[0].save(tmp_path / 'anim.gif', save_all=True, append_images=frames[1:])
    gif = load_upload(tmp_path / 'anim.gif', 2048, 1e8, name='party.gif')
    assert gif.image.max() < 128 and gif.note == 'party.gif has 2 frames; using the first.'


def test_video_errors_name_the_file_and_suggest_no_folder(tmp_path):
    """The demo takes video files only: an unreadable one is named (never its server path) with the advice for
    the file itself, not the library's "or pass a folder of frames"."""
    from sam3_cradio.demo.videos import preview_video, read_video

    upload = tmp_path / 'gradio' / '3f2a'
    upload.mkdir(parents=True)
    for name, data in (('notes.mp4', b'this is a text file\n' * 20), ('empty.mp4', b'')):
        (upload / name).write_bytes(data)
        for call in (lambda: preview_video(upload / name, 10), lambda: read_video(str(upload / name), 10, 256)):
            with pytest.raises(UserError) as e:
                call()
            msg = str(e.value)
            assert msg.startswith(f'{name} cannot be read as a video') and 'upload it again' in msg, msg
            assert str(tmp_path) not in msg and 'folder' not in msg
    with pytest.raises(UserError) as e:
        preview_video(upload / 'missing.mp4', 10)
    assert 'missing.mp4' in str(e.value) and str(tmp_path) not in str(e.value)


def test_long_text_is_run_and_noted_like_everywhere():
    """A phrase past SAM3's 30 text tokens is not refused (the old 120-character rule): the page gets the library's
    note naming the ignored words. The character cap left is a server limit, far above any noun phrase."""
    from sam3_cradio.demo.inputs import MAX_TEXT_CHARS, parse_texts
    from sam3_cradio.demo.state import text_notes

    long = ('a small brown dog with a red collar sitting next to a large white cat on a green sofa in the living '
            'room near the big open window and a zebra in the background of the old family photograph')
    assert len(long) > 120 and parse_texts(f'cup, {long}') == ['cup', long]
    (note,) = text_notes(['cup', long])
    assert "so it ignored 'zebra in the background of the old family photograph'" in note
    with pytest.raises(UserError, match=f'at most {MAX_TEXT_CHARS}'):
        parse_texts('cat ' * MAX_TEXT_CHARS)


def test_annotation_and_prompt_in_original_pixels(tmp_path):
    """Boxes come from the page at its display scale, on the image as rotated there; prompts are checked in the
    upload's pixels and scaled to the downscaled working image."""
    path = tmp_path / 'wide.png'
    Image.fromarray(np.zeros((100, 400, 3), np.uint8)).save(path)
    payload = {'image': {'path': str(path), 'orig_name': 'wide.png'}, 'orientation': 0,
               'boxes': [{'xmin': 20, 'ymin': 10, 'xmax': 100, 'ymax': 60, 'label': 'positive', 'scaleFactor': 0.5},
                         {'xmin': 300, 'ymin': 0, 'xmax': 380, 'ymax': 50, 'label': 'negative'}]}
    value = read_annotation(payload, 200, 1e8)
    loaded = value['image']
    assert loaded.image.shape == (50, 200, 3) and loaded.scale == 0.5 and loaded.orig_size == (400, 100)
    assert value['boxes'][0] == {'xmin': 40.0, 'ymin': 20.0, 'xmax': 200.0, 'ymax': 120.0, 'label': 'positive'}
    prompt = make_image_prompt(loaded, value['boxes'], 'cup, , saucer', [[200, 50, 1], [10, 10, 'negative']])
    assert prompt.texts == ['cup', 'saucer']
    assert prompt.boxes == [[20.0, 10.0, 100.0, 50.0], [150.0, 0.0, 190.0, 25.0]]  # clipped to 100 px, halved
    assert prompt.box_labels == [True, False]
    assert prompt.points == [[100.0, 25.0], [5.0, 5.0]] and prompt.point_labels == [1, 0]
    assert any('text prompt was not used' in n for n in prompt.notes)
    rotated = read_annotation({**payload, 'orientation': 1, 'boxes': []}, 2048, 1e8)['image']
    assert rotated.image.shape == (400, 100, 3) and rotated.orig_size == (100, 400)
    assert read_annotation({'image': None, 'boxes': []}, 2048, 1e8) is None
    with pytest.raises(UserError, match='outside the 400x100 image'):
        make_image_prompt(loaded, [{'xmin': 500, 'ymin': 0, 'xmax': 600, 'ymax': 50}], '', None)
    with pytest.raises(UserError, match='Give a prompt'):
        make_image_prompt(loaded, [], ' ', [])
    with pytest.raises(UserError, match='holds no words'):
        make_image_prompt(loaded, [], ' , ,', [])
    with pytest.raises(UserError, match='clicks are a list'):
        make_image_prompt(loaded, [], '', [['a']])


def test_models_built_once_and_evicted():
    """Concurrent first requests build a model once; past max_models the least recently used one is dropped,
    with its encoded images."""
    built = []

    def fake_build(spec, mode):
        time.sleep(0.2)
        built.append((spec, mode))
        return object()

    features = FeatureCache(4)
    cache = ModelCache(fake_build, max_models=2, on_evict=features.drop_model)
    tiny, tiny4 = resolve('cradio_tiny'), resolve('cradio_tiny', 4)
    threads = [threading.Thread(target=cache.get, args=(tiny, 'image')) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == [(tiny, 'image')]
    features.put(((tiny, 'image'), 'img'), object())
    features.put(((tiny4, 'image'), 'img'), object())
    cache.get(tiny4, 'image')
    cache.get(tiny, 'video')
    assert cache.peek((tiny, 'image')).model is None  # least recently used: dropped, with its encoded image
    assert cache.peek((tiny4, 'image')).model is not None and cache.peek((tiny, 'video')).model is not None
    assert len(features) == 1 and features.get(((tiny4, 'image'), 'img')) is not None
    cache.get(tiny, 'image')  # built again on demand
    assert len(built) == 4 and cache.builds == 4
    assert cache.peek((tiny4, 'image')).model is None


def test_failed_build_is_reported_and_retried():
    calls = []

    def missing(spec, mode):
        calls.append(spec)
        raise FileNotFoundError(f'{spec.name}: sam3.pt is missing')

    st = DemoState(parse_args(['--backbone', 'cradio_v4_h:8']), build=missing)
    try:
        assert st.startup_status() == ('… Loading C-RADIOv4-H · window 8 (the first request waits for it).', False)
        st.preload().join()
        text, final = st.startup_status()
        assert final and 'C-RADIOv4-H · window 8 cannot be loaded' in text and 'sam3.pt is missing' in text
        with pytest.raises(WeightsError, match='cannot be loaded'):
            st.model_entry(resolve('cradio_v4_h', 8), 'image')
        assert len(calls) == 2  # not cached: retried on each request
    finally:
        st.close()


def test_builder_says_what_to_fetch(tmp_path):
    b = Sam3Builder(parse_args(['--sam3-checkpoint', str(tmp_path / 'sam3.pt')]))
    with pytest.raises(FileNotFoundError, match='hf download facebook/sam3 sam3.pt'):
        b.preflight(get_backbone('cradio_v4_h'))
    b = Sam3Builder(parse_args(['--cradio-checkpoint', f'so400m={tmp_path / "so.pth.tar"}']))
    with pytest.raises(FileNotFoundError) as e:
        b.preflight(get_backbone('cradio_v4_so400m'))
    assert 'hf download nvidia/C-RADIOv4-SO400M c-radio_v4-so400m_half.pth.tar' in str(e.value)
    b.preflight(get_backbone('cradio_v4_h'))  # nothing local to check: the Hugging Face cache is used
    Sam3Builder(parse_args(['--tiny'])).preflight(get_backbone('cradio_tiny'))  # the fixture ships in the package


def test_page_messages_hide_server_paths(tmp_path):
    upload = tmp_path / 'gradio'
    msg = f'no frame could be decoded from {upload}/3f2a/clip.mp4: the file is broken'
    assert hide_paths(msg, [upload]) == 'no frame could be decoded from clip.mp4: the file is broken'
    err = page_error(RuntimeError(f'cannot open {upload / "x" / "frames.npy"}'), 'Tracking failed', [upload])
    assert err.kind == 'error' and err.status == '✖ Tracking failed: RuntimeError: cannot open frames.npy'
    assert err.toast == 'Tracking failed: RuntimeError: cannot open frames.npy'
    err = page_error(UserError('Give a prompt\nfirst line only in the toast'), 'Segmentation failed')
    assert err.kind == 'warning' and err.toast == 'Give a prompt'
    assert err.status == '⚠ Give a prompt\n\n```\nfirst line only in the toast\n```'


def test_render_filters_without_a_model():
    from sam3_cradio.predictor import Sam3Result

    image = np.full((20, 30, 3), 100, np.uint8)
    masks = np.zeros((3, 20, 30), bool)
    masks[0, :5, :5] = masks[1, 10:, 10:] = masks[2, :, :2] = True
    result = Sam3Result(masks, np.array([[0, 0, 5, 5], [10, 10, 30, 20], [0, 0, 2, 20]], np.float32),
                        np.array([0.9, 0.3, 0.01], np.float32), ['cup', 'cup', 'spoon'],
                        {'encoder': 1.0, 'decoder': 0.25})
    panel = Panel.from_result('tiny · global attention', 'tiny · global', result, encoder_cached=True)
    assert panel.labels == ['cup', 'cup']  # 0.01 is under the floor: not kept
    view = render(RawResult(image, [panel], ['a note']), 0.5)
    assert view.table['data'] == [['tiny · global', 'cup', 0.9, 0.0, 0.0, 5.0, 5.0, 25]]
    assert view.second is None and view.image.shape == image.shape
    assert np.array_equal(view.image[10:, 10:], image[10:, 10:]) and not np.array_equal(view.image[:5, :5],
                                                                                         image[:5, :5])
    assert '(cached: not re-run)' in view.status and '**1** shown at ≥ 0.50 (2 at ≥ 0.05)' in view.status
    assert view.status.endswith('ℹ a note')
    assert len(render(RawResult(image, [panel, panel], []), 0.2).table['data']) == 4


def test_segment_request_without_gradio(tiny_image_model, small):
    """The image request on the tiny model, as the page sends it; a second prompt reuses the encoded image."""
    builds = []

    def build(spec, mode):
        builds.append((spec, mode))
        return tiny_image_model

    st = DemoState(parse_args(['--tiny', '--no-preload']), build=build)
    try:
        annot = {'image': load_upload(small['coffee'], 2048, 1e8), 'boxes': []}
        raw = st.segment(annot, 'cup, saucer', [], TINY, 'global')
        rows = render(raw, THR).table['data']
        assert rows and {r[1] for r in rows} <= {'cup', 'saucer'} and all(r[2] >= THR for r in rows)
        assert {r[0] for r in rows} == {'tiny · global'} and st.encoder_runs == 1
        raw = st.segment(annot, 'spoon', [], TINY, 'global', compare=TINY, compare_window='global')
        assert len(raw.panels) == 1 and raw.panels[0].encoder_cached and st.encoder_runs == 1
        long = 'spoon on a ' + 'very ' * 30 + 'small saucer'
        raw = st.segment(annot, long, [], TINY, 'global')                  # run, and the cut words noted
        assert any("so it ignored 'very very" in n and n.endswith("small saucer'. Shorten the phrase: SAM3 "
                                                                   "expects a short noun phrase.") for n in raw.notes)
        assert "ignored 'very" in render(raw, THR).status
        assert builds == [(resolve('cradio_tiny'), 'image')]
    finally:
        st.close()


# ---------------------------------------------------------------------------------------------------------------
# The app, served
# ---------------------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _serve(argv):
    _require_gradio()
    from sam3_cradio.demo.app import build_app, launch_kwargs

    args = parse_args(argv + ['--host', '127.0.0.1', '--port', str(_free_port())])
    demo = build_app(args)
    demo.launch(**launch_kwargs(args), prevent_thread_lock=True, quiet=True)
    assert not _stubs(), 'gradio wrote type stubs into the source tree'
    return demo, f'http://127.0.0.1:{args.port}/'


def _close(demo) -> None:
    demo.close()
    demo.sam3_demo.close()


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def _file(path):
    from gradio_client import handle_file

    return handle_file(str(path))


def _upload_folder() -> str:
    import gradio as gr

    return gr.utils.get_upload_folder()


MISSING_SAM3 = '/nonexistent/weights/sam3.pt'  # the real backbones of the test app fail fast, without network


@pytest.fixture(scope='module')
def app():
    demo, url = _serve(['--tiny', '--max-video-frames', str(MAX_FRAMES), '--max-image-side', '1024',
                        '--sam3-checkpoint', MISSING_SAM3])
    yield demo, url
    _close(demo)


def _segment(client, image, text='', boxes=(), points=(), backbone=TINY, window='global', compare='none',
             compare_window='global', threshold=THR):
    return client.predict({'image': _file(image), 'boxes': list(boxes)}, text, list(points), backbone,
                          window, compare, compare_window, threshold, api_name='/segment')


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert('RGB'))


def _check_image_result(out, image_path, expect_detections=True):
    """The drawn result has the input's size, differs from it when there are detections; returns its rows."""
    img, _, status, table = out
    assert isinstance(img, str) and Path(img).is_file(), out
    drawn, src = _rgb(img), _rgb(image_path)
    assert drawn.shape == src.shape
    rows = table['data']
    if expect_detections:
        assert rows, status
        assert np.abs(drawn.astype(int) - src.astype(int)).mean() > 1.0
    else:
        assert not rows and np.array_equal(drawn, src)
    assert 'encoder' in status and 'decoder' in status
    return rows


def _check_refiltered(rows, refiltered, thr):
    """``refiltered`` is ``rows`` filtered at ``thr`` (the table's scores are rounded to 3 decimals)."""
    assert all(r in rows for r in refiltered)
    assert all(r[2] >= thr - 0.001 for r in refiltered)
    assert all(r in refiltered for r in rows if r[2] >= thr + 0.001)


def _message(out) -> str:
    """A refused request: outputs unchanged (gradio 'skip' updates), the message in the status box."""
    img, _, status, _ = out
    assert not isinstance(img, str), out
    assert status.startswith('⚠'), status
    return status


# ---------------------------------------------------------------------------------------------------------------
# Image endpoints
# ---------------------------------------------------------------------------------------------------------------

def test_text_prompt_and_slider_reuse_features(app, small):
    demo, url = app
    st = demo.sam3_demo
    client = _client(url)
    out = _segment(client, small['coffee'], text='cup, saucer', threshold=THR)
    rows = _check_image_result(out, small['coffee'])
    assert {r[1] for r in rows} <= {'cup', 'saucer'} and {r[1] for r in rows}
    assert all(r[2] >= THR for r in rows)
    runs = st.encoder_runs
    # the slider only filters the session's last result: fewer detections, no model call
    hi = sorted(r[2] for r in rows)[len(rows) // 2]
    rows2 = client.predict(hi, api_name='/refilter')[3]['data']
    _check_refiltered(rows, rows2, hi)
    assert 0 < len(rows2) < len(rows)
    out3 = client.predict(0.99, api_name='/refilter')
    _check_image_result(out3, small['coffee'], expect_detections=False)
    # a new prompt on the same image reuses its encoded features
    out4 = _segment(client, small['coffee'], text='spoon')
    assert 'cached' in out4[2]
    assert {r[1] for r in _check_image_result(out4, small['coffee'])} == {'spoon'}
    assert st.encoder_runs == runs


def test_box_prompts(app, small):
    client = _client(app[1])
    boxes = [{'xmin': 40, 'ymin': 20, 'xmax': 160, 'ymax': 140, 'label': 'positive'},
             {'xmin': 170, 'ymin': 10, 'xmax': 230, 'ymax': 60, 'label': 'negative'}]
    rows = _check_image_result(_segment(client, small['coffee'], boxes=boxes), small['coffee'])
    assert {r[1] for r in rows} == {'visual'}
    rows = _check_image_result(_segment(client, small['coffee'], text='cup', boxes=boxes[:1]), small['coffee'])
    assert {r[1] for r in rows} == {'cup'}
    # partly outside: clipped; wholly outside: refused with a message
    _check_image_result(_segment(client, small['coffee'], boxes=[{'xmin': 200, 'ymin': 100, 'xmax': 900,
                                                                   'ymax': 900}]), small['coffee'])
    msg = _message(_segment(client, small['coffee'], boxes=[{'xmin': 500, 'ymin': 10, 'xmax': 600, 'ymax': 50}]))
    assert 'outside the 240x160 image' in msg


def test_point_prompts(app, small):
    client = _client(app[1])
    out = _segment(client, small['astronaut'], text='ignored', points=[[96, 60, 1], [20, 170, 0]])
    rows = _check_image_result(out, small['astronaut'])
    assert len(rows) == 1 and rows[0][1] == 'object' and rows[0][-1] > 0
    assert 'text prompt was not used' in out[2]
    msg = _message(_segment(client, small['astronaut'], points=[[500, 10, 1]]))
    assert 'outside the 192x192 image' in msg


def test_compare_two_backbones(app, small):
    client = _client(app[1])
    out = _segment(client, small['astronaut'], text='person', compare=TINY, compare_window='4')
    img, img2, status, table = out
    assert Path(img2).is_file() and _rgb(img2).shape == _rgb(small['astronaut']).shape
    assert 'global attention' in status and 'window 4' in status
    assert {r[0] for r in table['data']} == {'tiny · global', 'tiny · window 4'}
    assert status.count('encoder') == 2 and status.count('decoder') == 2


def test_bad_image_inputs(app, small):
    client = _client(app[1])
    assert 'Give a prompt' in _message(_segment(client, small['coffee'], text='  '))
    assert 'holds no words' in _message(_segment(client, small['coffee'], text=' , ,'))
    from gradio_client.exceptions import AppError

    assert 'does not divide the 16x16 token grid' in _message(_segment(client, small['coffee'], text='cup',
                                                                       window='5'))
    assert "window must be 'global'" in _message(_segment(client, small['coffee'], text='cup', window='0'))
    assert 'fixed at 24' in _message(_segment(client, small['coffee'], text='cup', backbone=PE, window='global'))
    with pytest.raises(AppError, match='not in the list of choices'):
        _segment(client, small['coffee'], text='cup', backbone='resnet')
    assert 'clicks are a list' in _message(_segment(client, small['coffee'], points=[['a']]))
    with pytest.raises(AppError, match='not an image this demo can read') as e:
        _segment(client, small['text_file'], text='cup')
    assert 'notes.png' in str(e.value) and _upload_folder() not in str(e.value)  # its name, not its server path
    # a huge image is downscaled (here --max-image-side 1024), with a note
    img, _, status, table = _segment(client, small['wide'], text='cup')
    assert _rgb(img).shape == (57, 1024, 3) and 'downscaled' in status


# ---------------------------------------------------------------------------------------------------------------
# Video endpoint
# ---------------------------------------------------------------------------------------------------------------

def _clip(path: Path, n: int):
    photo = np.asarray(Image.open(IMAGES / 'astronaut.jpg').convert('RGB').resize((200, 200), Image.BILINEAR))
    frames = [np.ascontiguousarray(photo[20:140, 3 * i:3 * i + 160]) for i in range(n)]
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 10, (160, 120))
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    return path, frames


@pytest.fixture
def confident_tracker(app):
    """The tiny video model's tracker mask decoder outputs a fixed blob with a positive object score (random
    weights track nothing), so a box prompt gives a tracked object to draw."""
    entry = app[0].sam3_demo.models.get(resolve('cradio_tiny'), 'video')
    handle = make_tracker_confident(entry.model)
    yield
    handle.remove()


def test_video_text_box_and_limits(app, small, confident_tracker, artifacts):
    client = _client(app[1])
    d = small['dir']
    clip, frames = _clip(d / 'clip.mp4', 4)
    first = d / 'first.png'
    Image.fromarray(frames[0]).save(first)

    video, status = client.predict(_file(clip), '', {'image': _file(first), 'boxes': [
        {'xmin': 50, 'ymin': 20, 'xmax': 110, 'ymax': 100, 'label': 'object'}]}, TINY, 'global', api_name='/track')
    out = read_video_frames(video)
    assert len(out) == 4 and out[0].shape == (120, 160, 3)
    assert 'tracked 4 frames (160x120' in status and 'objects: #0' in status
    drawn_diff = np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(out, frames)])
    assert drawn_diff > 8, drawn_diff  # a mask and a box drawn on every frame
    shutil.copy(video, artifacts / 'demo_tracked.webm')

    video, status = client.predict(_file(clip), 'person', None, TINY, 'global', api_name='/track')
    assert len(read_video_frames(video)) == 4 and 'tracked 4 frames' in status

    long_clip, _ = _clip(d / 'long.mp4', MAX_FRAMES + 2)
    video, status = client.predict(_file(long_clip), 'person', None, TINY, 'global', api_name='/track')
    assert not isinstance(video, str) and f'at most {MAX_FRAMES}' in status
    video, status = client.predict(_file(clip), '', None, TINY, 'global', api_name='/track')
    assert 'Give a prompt' in status
    video, status = client.predict(_file(clip), 'person, dog', None, TINY, 'global', api_name='/track')
    assert 'one noun phrase' in status
    broken = d / 'broken.mp4'
    broken.write_text('not a video')
    video, status = client.predict(_file(broken), 'person', None, TINY, 'global', api_name='/track')
    assert status.startswith('⚠') and 'cannot be read' in status
    assert 'broken.mp4' in status and _upload_folder() not in status  # its name, not its server path
    assert 'folder' not in status                                      # the page takes files only


# ---------------------------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_eight_concurrent_users(app, small):
    """8 sessions at once (queued: the model runs one request at a time): each gets its own image, prompt and
    slider state back."""
    url = app[1]
    jobs = [(small['coffee'] if i % 2 else small['astronaut'], f'thing{i}', 0.1 + 0.02 * i) for i in range(8)]
    results, errors = [None] * 8, []
    start = threading.Barrier(8)

    def user(i):
        image, text, thr = jobs[i]
        try:
            client = _client(url)
            start.wait(timeout=60)
            out = _segment(client, image, text=text, threshold=THR)
            rows = _check_image_result(out, image)
            refiltered = client.predict(thr, api_name='/refilter')[3]['data']
            results[i] = (rows, refiltered)
        except Exception as e:  # reported below, with the user's index
            errors.append(f'user {i}: {type(e).__name__}: {e}')

    threads = [threading.Thread(target=user, args=(i,)) for i in range(8)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors
    assert all(r is not None for r in results), 'a request did not complete'
    for i, (rows, refiltered) in enumerate(results):
        _, text, thr = jobs[i]
        assert {r[1] for r in rows} == {text}
        _check_refiltered(rows, refiltered, thr)  # this session's own result, filtered
    print(f'8 concurrent users served in {time.perf_counter() - t0:.1f}s')


# ---------------------------------------------------------------------------------------------------------------
# Missing weights
# ---------------------------------------------------------------------------------------------------------------

def test_missing_weights_in_a_request(app, small):
    """A backbone whose weights are missing: the page says which file to fetch and where to put it; as the
    comparison backbone, the main result is still shown."""
    client = _client(app[1])
    out = _segment(client, small['coffee'], text='cup', backbone=PE, window='24')
    assert not isinstance(out[0], str)
    assert 'SAM3 PE (Meta) cannot be loaded' in out[2] and MISSING_SAM3 in out[2]
    assert 'hf download facebook/sam3 sam3.pt' in out[2] and '--sam3-checkpoint' in out[2]
    out = _segment(client, small['coffee'], text='cup', compare=SO400M)
    rows = _check_image_result(out, small['coffee'])
    assert out[1] is None and {r[0] for r in rows} == {'tiny · global'}
    assert 'Comparison' in out[2] and 'C-RADIOv4-SO400M' in out[2] and MISSING_SAM3 in out[2]


def test_missing_weights_app_starts_and_says_what_to_fetch(tmp_path, small):
    missing = tmp_path / 'nowhere' / 'sam3.pt'
    demo, url = _serve(['--backbone', 'cradio_v4_h', '--sam3-checkpoint', str(missing)])
    try:
        client = _client(url)
        deadline = time.time() + 30
        while True:
            status = client.predict(api_name='/status')[0]
            if 'cannot be loaded' in status or time.time() > deadline:
                break
            time.sleep(0.5)
        assert 'C-RADIOv4-H' in status and 'cannot be loaded' in status
        assert str(missing) in status and 'hf download facebook/sam3 sam3.pt' in status
        assert '--sam3-checkpoint' in status and 'huggingface' in status
        out = _segment(client, small['coffee'], text='cup', backbone=SO400M)
        assert not isinstance(out[0], str) and 'C-RADIOv4-SO400M' in out[2] and str(missing) in out[2]
    finally:
        _close(demo)


# ---------------------------------------------------------------------------------------------------------------
# A real browser
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_browser_text_prompt_screenshot(app, artifacts):
    sync_api = pytest.importorskip('playwright.sync_api', reason='the browser test needs playwright (pip)')
    if not CHROMIUM.is_file():
        pytest.skip(f"the browser test needs Debian's chromium at {CHROMIUM}: apt-get install -y chromium")
    url = app[1]
    shot = artifacts / 'demo.png'
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={'width': 1400, 'height': 1000})
            page.on('pageerror', lambda e: errors.append(str(e)))
            page.goto(url, wait_until='load', timeout=60000)
            page.wait_for_selector('#text-prompt textarea', timeout=60000)
            page.get_by_role('button', name='coffee').click()  # an example image
            page.wait_for_selector('#image-input canvas', timeout=60000)
            page.fill('#text-prompt textarea', 'cup, saucer')
            page.click('#segment-button')
            page.wait_for_function(
                "() => (document.querySelector('#image-status')?.innerText || '').includes('decoder')",
                timeout=120000)
            page.wait_for_selector('#output-image img', timeout=30000)
            page.wait_for_function("() => document.querySelector('#output-image img').naturalWidth > 0",
                                   timeout=30000)
            size = page.evaluate("() => { const i = document.querySelector('#output-image img');"
                                 " return [i.naturalWidth, i.naturalHeight]; }")
            status = page.inner_text('#image-status')
            weights = page.inner_text('#weights-status')
            page.screenshot(path=str(artifacts / 'demo_all.png'), full_page=True)
            # the slider re-filters the shown result in the page
            page.fill('#threshold input[type=number]', '0.21')
            page.keyboard.press('Enter')
            page.wait_for_function(
                "() => (document.querySelector('#image-status')?.innerText || '').includes('≥ 0.21 ')",
                timeout=30000)
            filtered = page.inner_text('#image-status')
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert size == [600, 400], size  # coffee.jpg, drawn at its own size
    assert 'C-RADIO tiny' in status and 'encoder' in status, status
    assert 'shown at ≥ 0.20' in status and 'shown at ≥ 0.21' in filtered, filtered
    assert 'ready' in weights and '--tiny' in weights, weights
    assert not errors, errors
    a = np.asarray(Image.open(shot).convert('RGB')).astype(np.float32)
    assert a.shape[0] >= 900 and a.shape[1] == 1400
    assert a.std() > 20, f'the screenshot looks blank (pixel std {a.std():.1f})'
    if os.environ.get('SAM3_DEMO_UPDATE_DOCS'):  # the README's screenshot (256 colours: ~4x smaller)
        (ROOT / 'docs').mkdir(exist_ok=True)
        Image.open(shot).convert('RGB').quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
            .save(ROOT / 'docs' / 'demo.png', optimize=True)


def test_builder_passes_the_dtype():
    import torch

    from sam3_cradio.registry import resolve

    model = Sam3Builder(parse_args(['--tiny', '--dtype', 'bf16']))(resolve('cradio_tiny'), 'image')
    assert model.sam3_cradio_cfg['dtype'] == 'bf16'
    assert next(model.backbone.vision_backbone.trunk.parameters()).dtype == torch.bfloat16
