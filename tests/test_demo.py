"""The Gradio demo (demo/app.py) on the tiny model, served in-process on 127.0.0.1:

- gradio_client drives every endpoint: text, boxes, clicks, the confidence slider (no encoder re-run), two backbones
  side by side, video tracking (text and first-frame box), and every kind of bad input (a message, no stack trace);
- 8 concurrent clients all get their own, correct results;
- a real headless Chromium (Debian's ``chromium`` driven by Playwright) loads the page, runs a text prompt and
  saves a screenshot to tests/artifacts/ (set SAM3_DEMO_UPDATE_DOCS=1 to also copy it to docs/demo.png);
- missing weights: the app starts and the page says which file to fetch and where to put it.

Random SAM3 weights score every query ~0.2, so prompts here use a low confidence threshold. Needs the ``demo``
extra (gradio, gradio_client, gradio-image-annotation; playwright + Debian chromium for the browser test).
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # demo/ is not installed: import it from the checkout (plain `pytest` too)
    sys.path.insert(0, str(ROOT))
os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')

pytest.importorskip('gradio', reason='the demo needs gradio: pip install -e ".[demo]"')
pytest.importorskip('gradio_client', reason='the demo tests need gradio_client: pip install -e ".[demo]"')
pytest.importorskip('gradio_image_annotation',
                    reason='the demo needs gradio-image-annotation: pip install -e ".[demo]"')

import cv2  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402
from PIL import Image  # noqa: E402

from conftest import CRADIO_TINY, IMAGES, make_tracker_confident, read_video_frames  # noqa: E402
from demo.app import (BACKBONE_LABELS, DemoState, UserError, build_app, launch_kwargs, load_upload,  # noqa: E402
                      parse_args, window_choices)

ARTIFACTS = ROOT / 'tests' / 'artifacts'
TINY = BACKBONE_LABELS['cradio_tiny']
CHROMIUM = Path('/usr/bin/chromium')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--no-first-run', '--disable-sync']
THR = 0.15  # random weights: every query scores ~0.2
MAX_FRAMES = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _serve(argv):
    args = parse_args(argv + ['--host', '127.0.0.1', '--port', str(_free_port())])
    demo = build_app(args)
    demo.launch(**launch_kwargs(args), prevent_thread_lock=True, quiet=True)
    return demo, f'http://127.0.0.1:{args.port}/'


def _close(demo) -> None:
    demo.close()
    shutil.rmtree(demo.sam3_demo.workdir, ignore_errors=True)


MISSING_SAM3 = '/nonexistent/weights/sam3.pt'  # the real backbones of the test app fail fast, without network


@pytest.fixture(scope='module')
def app():
    demo, url = _serve(['--tiny', '--max-video-frames', str(MAX_FRAMES), '--max-image-side', '1024',
                        '--sam3-checkpoint', MISSING_SAM3])
    yield demo, url
    _close(demo)


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


def _segment(client, image, text='', boxes=(), points=(), backbone=TINY, window='global', compare='none',
             compare_window='global', threshold=THR):
    return client.predict({'image': handle_file(str(image)), 'boxes': list(boxes)}, text, list(points), backbone,
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
# Helpers, no server
# ---------------------------------------------------------------------------------------------------------------

def test_args_and_windows():
    a = parse_args(['--tiny'])
    assert a.backbone == 'cradio_tiny' and a.threshold == 0.2 and a.share is False and a.host == '127.0.0.1'
    a = parse_args(['--cradio-checkpoint', 'cradio_v4_so400m=/m/so.pth.tar', '--cradio-checkpoint', '/m/h.pth.tar'])
    assert a.backbone == 'cradio_v4_h' and a.cradio_checkpoints == {'cradio_v4_so400m': '/m/so.pth.tar',
                                                                      'cradio_v4_h': '/m/h.pth.tar'}
    assert window_choices('cradio_v4_h') == ['global', '6', '8', '12', '18', '24']
    assert window_choices('pe') == ['global']
    for bad in (['--backbone', 'cradio_tiny'], ['--window-size', '7'], ['--threshold', '2'],
                ['--cradio-checkpoint', 'pe=/x.pt']):
        with pytest.raises(SystemExit):
            parse_args(bad)


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
    with pytest.raises(UserError, match='not an image'):
        load_upload(tmp_path / 'x.jpg', 2048, 1e8)
    Image.fromarray(np.zeros((4, 100, 3), np.uint8)).save(tmp_path / 'thin.png')
    with pytest.raises(UserError, match='too small'):
        load_upload(tmp_path / 'thin.png', 2048, 1e8)


def test_models_built_once_and_evicted(monkeypatch):
    """Concurrent first requests build a model once; past --max-models the least recently used one is dropped,
    with its encoded images."""
    st = DemoState(parse_args(['--tiny', '--max-models', '2', '--no-preload']))
    built = []

    def fake_build(backbone, window, mode):
        time.sleep(0.2)
        built.append((backbone, window, mode))
        return object()

    monkeypatch.setattr(st.registry, '_build', fake_build)
    threads = [threading.Thread(target=st.registry.get, args=('cradio_tiny', None, 'image')) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == [('cradio_tiny', None, 'image')]
    st.features.put((('cradio_tiny', None, 'image'), 'img'), object())
    st.registry.get('cradio_tiny', 4, 'image')
    st.registry.get('cradio_tiny', None, 'video')
    assert st.registry.peek(('cradio_tiny', None, 'image')).model is None  # least recently used: dropped
    assert st.registry.peek(('cradio_tiny', 4, 'image')).model is not None
    assert len(st.features) == 0
    st.registry.get('cradio_tiny', None, 'image')  # built again on demand
    assert len(built) == 4
    shutil.rmtree(st.workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Image endpoints
# ---------------------------------------------------------------------------------------------------------------

def test_text_prompt_and_slider_reuse_features(app, small):
    demo, url = app
    st = demo.sam3_demo
    client = Client(url, verbose=False)
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
    client = Client(app[1], verbose=False)
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
    client = Client(app[1], verbose=False)
    out = _segment(client, small['astronaut'], text='ignored', points=[[96, 60, 1], [20, 170, 0]])
    rows = _check_image_result(out, small['astronaut'])
    assert len(rows) == 1 and rows[0][1] == 'object' and rows[0][-1] > 0
    assert 'text prompt was not used' in out[2]
    msg = _message(_segment(client, small['astronaut'], points=[[500, 10, 1]]))
    assert 'outside the 192x192 image' in msg


def test_compare_two_backbones(app, small):
    client = Client(app[1], verbose=False)
    out = _segment(client, small['astronaut'], text='person', compare=TINY, compare_window='4')
    img, img2, status, table = out
    assert Path(img2).is_file() and _rgb(img2).shape == _rgb(small['astronaut']).shape
    assert 'global attention' in status and 'window 4' in status
    assert {r[0] for r in table['data']} == {'tiny · global', 'tiny · window 4'}
    assert status.count('encoder') == 2 and status.count('decoder') == 2


def test_bad_image_inputs(app, small):
    client = Client(app[1], verbose=False)
    assert 'Give a prompt' in _message(_segment(client, small['coffee'], text='  '))
    assert 'holds no words' in _message(_segment(client, small['coffee'], text=' , ,'))
    assert 'window size' in _message(_segment(client, small['coffee'], text='cup', window='5'))
    with pytest.raises(AppError, match='not in the list of choices'):
        _segment(client, small['coffee'], text='cup', backbone='resnet')
    assert 'clicks are a list' in _message(_segment(client, small['coffee'], points=[['a']]))
    with pytest.raises(AppError, match='not an image this demo can read'):
        _segment(client, small['text_file'], text='cup')
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
    entry = app[0].sam3_demo.registry.get('cradio_tiny', None, 'video')
    handle = make_tracker_confident(entry.model)
    yield
    handle.remove()


def test_video_text_box_and_limits(app, small, confident_tracker):
    client = Client(app[1], verbose=False)
    d = small['dir']
    clip, frames = _clip(d / 'clip.mp4', 4)
    first = d / 'first.png'
    Image.fromarray(frames[0]).save(first)

    video, status = client.predict(handle_file(str(clip)), '', {'image': handle_file(str(first)), 'boxes': [
        {'xmin': 50, 'ymin': 20, 'xmax': 110, 'ymax': 100, 'label': 'object'}]}, TINY, 'global', api_name='/track')
    out = read_video_frames(video)
    assert len(out) == 4 and out[0].shape == (120, 160, 3)
    assert 'tracked 4 frames (160x120' in status and 'objects: #0' in status
    drawn_diff = np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(out, frames)])
    assert drawn_diff > 8, drawn_diff  # a mask and a box drawn on every frame
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(video, ARTIFACTS / 'demo_tracked.webm')

    video, status = client.predict(handle_file(str(clip)), 'person', None, TINY, 'global', api_name='/track')
    assert len(read_video_frames(video)) == 4 and 'tracked 4 frames' in status

    long_clip, _ = _clip(d / 'long.mp4', MAX_FRAMES + 2)
    video, status = client.predict(handle_file(str(long_clip)), 'person', None, TINY, 'global', api_name='/track')
    assert not isinstance(video, str) and f'at most {MAX_FRAMES}' in status
    video, status = client.predict(handle_file(str(clip)), '', None, TINY, 'global', api_name='/track')
    assert 'Give a prompt' in status
    video, status = client.predict(handle_file(str(clip)), 'person, dog', None, TINY, 'global', api_name='/track')
    assert 'one noun phrase' in status
    broken = d / 'broken.mp4'
    broken.write_text('not a video')
    video, status = client.predict(handle_file(str(broken)), 'person', None, TINY, 'global', api_name='/track')
    assert status.startswith('⚠') and 'cannot be read' in status


# ---------------------------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------------------------

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
            client = Client(url, verbose=False)
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
    client = Client(app[1], verbose=False)
    out = _segment(client, small['coffee'], text='cup', backbone=BACKBONE_LABELS['pe'])
    assert not isinstance(out[0], str)
    assert 'SAM3 PE (Meta) cannot be loaded' in out[2] and MISSING_SAM3 in out[2]
    assert 'hf download facebook/sam3 sam3.pt' in out[2] and '--sam3-checkpoint' in out[2]
    out = _segment(client, small['coffee'], text='cup', compare=BACKBONE_LABELS['cradio_v4_so400m'])
    rows = _check_image_result(out, small['coffee'])
    assert out[1] is None and {r[0] for r in rows} == {'tiny · global'}
    assert 'Comparison' in out[2] and 'C-RADIOv4-SO400M' in out[2] and MISSING_SAM3 in out[2]


def test_missing_weights_app_starts_and_says_what_to_fetch(tmp_path, small):
    missing = tmp_path / 'nowhere' / 'sam3.pt'
    demo, url = _serve(['--backbone', 'cradio_v4_h', '--sam3-checkpoint', str(missing)])
    try:
        client = Client(url, verbose=False)
        deadline = time.time() + 30
        while True:
            status = client.predict(api_name='/status')[0]
            if 'cannot be loaded' in status or time.time() > deadline:
                break
            time.sleep(0.5)
        assert 'C-RADIOv4-H' in status and 'cannot be loaded' in status
        assert str(missing) in status and 'hf download facebook/sam3 sam3.pt' in status
        assert '--sam3-checkpoint' in status and 'huggingface' in status
        out = _segment(client, small['coffee'], text='cup', backbone=BACKBONE_LABELS['cradio_v4_so400m'])
        assert not isinstance(out[0], str) and 'C-RADIOv4-SO400M' in out[2] and str(missing) in out[2]
    finally:
        _close(demo)


# ---------------------------------------------------------------------------------------------------------------
# A real browser
# ---------------------------------------------------------------------------------------------------------------

def test_browser_text_prompt_screenshot(app):
    sync_api = pytest.importorskip('playwright.sync_api', reason='the browser test needs playwright (pip)')
    if not CHROMIUM.is_file():
        pytest.skip(f"the browser test needs Debian's chromium at {CHROMIUM}: apt-get install -y chromium")
    url = app[1]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / 'demo.png'
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
            page.screenshot(path=str(ARTIFACTS / 'demo_all.png'), full_page=True)
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
