"""Shared test fixtures. Everything runs on CPU in float32 with tiny models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sam3_cradio.assets import CRADIO_TINY_DIR, EXAMPLE_IMAGES_DIR

# shipped in the package (sam3_cradio/assets): tests read them from there
CRADIO_TINY = CRADIO_TINY_DIR
IMAGES = EXAMPLE_IMAGES_DIR


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _console():
    """Tests that run the CLI's main in this process leave no console set-up (warning format, log levels)."""
    yield
    from sam3_cradio.console import reset_console
    reset_console()


@pytest.fixture(scope='session')
def tiny_dir() -> Path:
    return CRADIO_TINY


@pytest.fixture(scope='session')
def tiny_ckpt() -> Path:
    return CRADIO_TINY / 'model.pth.tar'


@pytest.fixture(scope='session')
def tiny_cases() -> dict:
    with open(CRADIO_TINY / 'cases.json') as f:
        return json.load(f)


@pytest.fixture(scope='session')
def tiny_ref() -> dict:
    from safetensors.torch import load_file
    return load_file(str(CRADIO_TINY / 'reference.safetensors'))


class _LinspaceOnCPU:
    """sam3 0.1.4's ViT calls ``torch.linspace(...).item()`` at construction (vitdet.py:746), which fails on the
    meta device; computing that one linspace on CPU lets whole SAM3 models be built without allocating weights."""

    def __enter__(self):
        from torch.overrides import TorchFunctionMode

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = dict(kwargs or {})
                if func is torch.linspace:
                    kwargs['device'] = 'cpu'
                return func(*args, **kwargs)

        self._meta = torch.device('meta')
        self._mode = Mode()
        self._meta.__enter__()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        self._meta.__exit__(*exc)


def meta_build():
    """Context manager: build (sam3 or sam3_cradio) models on the meta device, shapes and dtypes only."""
    return _LinspaceOnCPU()


@pytest.fixture(scope='session')
def tiny_image_model():
    """A tiny SAM3 image model (interactive) on the NVIDIA fixture's C-RADIO weights; random SAM3 weights."""
    from sam3_cradio.build import build_sam3
    torch.manual_seed(0)  # built before the per-test seed: the weights must not depend on which test asks first
    return build_sam3('cradio_tiny', mode='image', pretrained=False, cradio_checkpoint=CRADIO_TINY / 'model.pth.tar',
                      device='cpu')


def make_tracker_confident(model, x_range=(1 / 3, 2 / 3)):
    """Random SAM3 weights lose every tracked object. This makes the video model's tracker mask decoder output a
    fixed blob (rows h/4..3h/4, columns ``x_range`` of the width) with a positive object score, so tests exercise
    tracking, drawing and scoring. Returns the hook handle (``.remove()`` to undo)."""

    def hook(module, args, out):
        masks, ious, tokens, obj_scores = out
        h, w = masks.shape[-2:]
        blob = torch.full_like(masks, -10.0)
        blob[..., h // 4:3 * h // 4, int(w * x_range[0]):int(w * x_range[1])] = 10.0
        return blob, ious, tokens, torch.full_like(obj_scores, 10.0)

    return model.tracker.sam_mask_decoder.register_forward_hook(hook)


def read_video_frames(path) -> list:
    """Every frame of a video file as RGB arrays (cv2)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def run_command(argv: list) -> int:
    """``sam3-cradio ARGV`` in this process with user errors raised (not turned into exit 2), Ctrl-C as the
    command line ends it (one line, 130)."""
    import sys

    from sam3_cradio.cli import build_parser

    a = build_parser().parse_args(argv)
    try:
        return a._run(a)
    except KeyboardInterrupt as e:
        print(str(e) or 'interrupted', file=sys.stderr)
        return 130
