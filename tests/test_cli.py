"""The ``sam3-cradio`` commands for every registered backbone (segment, track, encode) and the window options.

The tiny backbones run for real. A full-size backbone is resolved and passed to ``build_sam3`` exactly as a user's
command would; the build itself is swapped for its tiny sibling (same kind: C-RADIO or PE), since full-size random
weights are benchmark material, not test material. Tracking, the slow part, runs for real on the tiny backbones;
for the full-size ones the command stops once the build call is checked.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import CRADIO_TINY, IMAGES
from sam3_cradio import build, registry
from sam3_cradio.cli import main
from sam3_cradio.options import ModelOptions
from sam3_cradio.registry import resolve

BACKBONES = list(registry.BACKBONES)


class _BuildChecked(ValueError):
    """Ends a command after its build call (a ValueError: the command's one-line error path)."""


@pytest.fixture
def builds(monkeypatch):
    """Records the spec of every build_sam3 call; full-size backbones are built as their tiny sibling."""
    real = build.build_sam3
    calls = []

    def recording_build(backbone, window_size=None, mode='image', **kwargs):
        if isinstance(backbone, ModelOptions):  # what the commands pass: the same call with its fields spelled out
            kwargs = {**backbone.build_kwargs(), **kwargs}
            backbone = backbone.spec
        spec, _ = build.resolve_build(backbone, window_size, kwargs.get('resolution'), kwargs.get('overrides', ()))
        calls.append((spec, mode, kwargs))
        if spec.backbone.pretrained and mode == 'video':
            raise _BuildChecked('the build call was checked')
        if spec.backbone.pretrained:
            assert kwargs['pretrained'] is False  # the tests only ever ask for random weights
            tiny = 'cradio_tiny' if spec.backbone.is_cradio else 'pe_tiny'
            return real(tiny, mode=mode, pretrained=False, device='cpu')
        return real(backbone, window_size, mode, **kwargs)

    monkeypatch.setattr(build, 'build_sam3', recording_build)
    return calls


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
    photo = np.asarray(Image.open(IMAGES / 'astronaut.jpg').convert('RGB').resize((96, 96)))
    path = tmp_path_factory.mktemp('clip') / 'clip.mp4'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), 5, (64, 64))
    for i in range(3):
        writer.write(cv2.cvtColor(np.ascontiguousarray(photo[8:72, 4 * i:4 * i + 64]), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.mark.parametrize('name', BACKBONES)
def test_segment_every_backbone(name, builds, tmp_path, capsys):
    out = tmp_path / 'seg.png'
    rc = main(['segment', str(IMAGES / 'coffee.jpg'), '--text', 'cup', '--backbone', name, '--random-weights',
               '--threshold', '0', '--device', 'cpu', '--out', str(out)])
    assert rc == 0, capsys.readouterr().err
    assert Image.open(out).size == Image.open(IMAGES / 'coffee.jpg').size
    [(spec, mode, kwargs)] = builds
    assert spec == resolve(name) and mode == 'image' and kwargs['pretrained'] is False
    # PE keeps the window its checkpoint fixes; C-RADIO defaults to global attention
    assert spec.window == (registry.GLOBAL if spec.backbone.is_cradio else spec.backbone.fixed_window)


@pytest.mark.parametrize('name', BACKBONES)
def test_track_every_backbone(name, builds, clip, tmp_path, capsys):
    out = tmp_path / 'tracked.mp4'
    rc = main(['track', str(clip), '--box', '10', '10', '40', '50', '--backbone', name, '--random-weights',
               '--device', 'cpu', '--out', str(out)])
    if registry.get_backbone(name).pretrained:
        assert rc == 2 and 'the build call was checked' in capsys.readouterr().err
    else:
        assert rc == 0, capsys.readouterr().err
        assert out.is_file() and 'wrote 3 frames (64x64' in capsys.readouterr().out
    [(spec, mode, _)] = builds
    assert spec == resolve(name) and mode == 'video'


@pytest.mark.slow
def test_window_options_reach_the_build(builds, tmp_path):
    base = ['segment', str(IMAGES / 'coffee.jpg'), '--text', 'cup', '--random-weights', '--device', 'cpu',
            '--out', str(tmp_path / 'o.png')]
    assert main([*base, '--backbone', 'cradio_v4_h', '--window-size', '8']) == 0
    assert main([*base, '--backbone', 'cradio_v4_so400m:12', '--resolution', '768']) == 0
    assert main([*base, '--backbone', 'cradio_tiny', '--window-size', 'global']) == 0
    assert [(s.name, s.window, s.resolution) for s, _, _ in builds] == [
        ('cradio_v4_h', 8, 1152), ('cradio_v4_so400m', 12, 768), ('cradio_tiny', 'global', 256)]


@pytest.mark.parametrize('args,match', [
    (['--backbone', 'pe', '--window-size', '12'], "pe's attention window is fixed at 24"),
    (['--backbone', 'cradio_v4_h', '--window-size', '5'], 'window 5 does not divide the 72x72 token grid'),
    (['--backbone', 'cradio_v4_h', '--resolution', '1000'], 'nearest size for window global: 1008'),
    (['--backbone', 'vit_h'], "unknown backbone 'vit_h'"),
])
def test_bad_model_options_fail_before_building(args, match, builds, tmp_path, capsys):
    out = tmp_path / 'o.png'
    rc = main(['segment', str(IMAGES / 'coffee.jpg'), '--text', 'cup', '--random-weights', '--out', str(out), *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith('error: ') and match in err and 'Traceback' not in err
    assert builds == [] and not out.exists()


@pytest.mark.parametrize('value', ['0', 'none', 'glob'])
def test_window_size_parser_refuses(value, capsys):
    with pytest.raises(SystemExit) as e:
        main(['segment', 'x.jpg', '--text', 'a', '--window-size', value])
    assert e.value.code == 2 and "'global' or a positive number" in capsys.readouterr().err


def test_encode_windows_and_backbone_names(tmp_path, capsys):
    out = tmp_path / 'f.safetensors'
    ckpt = str(CRADIO_TINY / 'model.pth.tar')
    assert main(['encode', str(IMAGES / 'coffee.jpg'), '--model', ckpt, '--window-size', 'global',
                 '--resolution', '64', '--out', str(out)]) == 0
    assert out.is_file()
    # encode runs C-RADIO encoders: PE is refused with what to use instead
    rc = main(['encode', str(IMAGES / 'coffee.jpg'), '--model', 'pe', '--out', str(tmp_path / 'g.safetensors')])
    assert rc == 2 and 'C-RADIO' in capsys.readouterr().err


def test_encode_release_offline_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hf'))
    rc = main(['encode', str(IMAGES / 'coffee.jpg'), '--model', 'cradio_v4_so400m', '--out', str(tmp_path / 'f.st')])
    err = capsys.readouterr().err
    assert rc == 2 and 'nvidia/C-RADIOv4-SO400M' in err and 'hf download' in err


def test_ctrl_c_anywhere_in_a_command_is_one_line(monkeypatch, capsys):
    from sam3_cradio import cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, 'build_parser', interrupted)  # e.g. while the parser imports torch
    assert main(['segment', 'x.jpg', '--text', 'a']) == 130
    assert capsys.readouterr().err.strip() == 'interrupted'


@pytest.mark.slow
def test_the_command_starts_without_torch():
    """`sam3-cradio` imports nothing heavy before it runs (so Ctrl-C during start-up is handled by main), and
    every command's options are read without torch (`--help` and option errors are immediate)."""
    import subprocess
    import sys

    code = ('import sys, sam3_cradio, sam3_cradio.cli; sam3_cradio.cli.build_parser(); '
            'print("torch" in sys.modules, "sam3" in sys.modules)')
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split() == [
        'False', 'False']
