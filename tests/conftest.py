"""Shared test fixtures. Everything runs on CPU in float32 with tiny models."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / 'data'
CRADIO_TINY = DATA / 'cradio_tiny'


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(2)


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
    return build_sam3('cradio_tiny', mode='image', pretrained=False, cradio_checkpoint=CRADIO_TINY / 'model.pth.tar',
                      device='cpu')
