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
