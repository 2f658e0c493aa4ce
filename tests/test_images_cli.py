"""Image decoding edge cases and the `sam3-cradio encode` command."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sam3_cradio.cli import main
from sam3_cradio.images import image_to_tensor, to_rgb_array


@pytest.fixture(scope='module')
def astronaut() -> np.ndarray:
    import skimage.data
    return skimage.data.astronaut()  # a real photo, (512, 512, 3) uint8


def test_odd_images_become_rgb(tmp_path, astronaut):
    gray = astronaut.mean(axis=2).astype(np.uint8)
    assert to_rgb_array(gray).shape == (512, 512, 3)
    rgba = np.concatenate([astronaut, np.full((512, 512, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(to_rgb_array(rgba), astronaut)                      # alpha dropped
    sixteen = astronaut.astype(np.uint16) * 257                              # full 16-bit range
    assert np.array_equal(to_rgb_array(sixteen), astronaut)
    path16 = tmp_path / 'gray16.png'
    Image.fromarray(gray.astype(np.uint16) * 257).save(path16)               # PIL mode I;16
    assert np.array_equal(to_rgb_array(path16)[..., 0], gray)
    assert np.array_equal(to_rgb_array(astronaut / 255.0), astronaut)        # float in [0, 1]
    Image.fromarray(astronaut).convert('P').save(tmp_path / 'palette.png')
    assert to_rgb_array(tmp_path / 'palette.png').shape == (512, 512, 3)


@pytest.mark.parametrize('make,match', [
    (lambda a: a.astype(np.float32), r'float image with values .*must hold values in \[0, 1\].*divide by 255'),
    (lambda a: a.astype(np.float64) * 2 - 1, r'must hold values in \[0, 1\]'),
    (lambda a: a.astype(np.int32) * 16, r'int32 image with values 0\.\.\d+: .*8-bit values'),
    (lambda a: a.astype(np.int16) - 128, r'int16 image with values -128'),
    (lambda a: a.astype(np.complex64), 'unsupported image dtype complex64'),
])
def test_ambiguous_pixel_values_are_refused_with_the_rule(astronaut, make, match):
    """A [0, 255] float photo used to be clipped to [0, 1] (90% of it white); now every dtype follows one rule."""
    with pytest.raises(ValueError, match=match):
        to_rgb_array(make(astronaut))


def test_pixel_value_rule(astronaut):
    assert np.array_equal(to_rgb_array(astronaut.astype(np.int64)), astronaut)        # 8-bit values in any int
    assert np.array_equal(to_rgb_array(astronaut.astype(np.float32) / 255), astronaut)
    assert np.array_equal(to_rgb_array(np.clip(astronaut / 255 + 5e-4, 0, 1.0005)), to_rgb_array(astronaut / 255 + 5e-4))
    assert to_rgb_array(np.ones((2, 2), bool)).max() == 255


def test_animated_gif_uses_the_first_frame_and_says_so(tmp_path, astronaut):
    frames = [Image.fromarray(astronaut), Image.fromarray(255 - astronaut)]
    frames[0].save(tmp_path / 'anim.gif', save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match='anim.gif has 2 frames; using the first'):
        first = to_rgb_array(tmp_path / 'anim.gif')
    assert np.abs(first.astype(int) - astronaut).mean() < 40  # palette-quantised frame 0, not the inverted frame 1
    with Image.open(tmp_path / 'anim.gif') as im:               # an opened animated image says so too
        with pytest.warns(UserWarning, match='anim.gif has 2 frames; using frame 0'):
            assert np.array_equal(to_rgb_array(im), first)


def test_one_size_rule_for_every_input():
    """Any image of at least 1 x 1 pixel, arrays and PIL images alike; only an empty one is refused."""
    assert to_rgb_array(np.zeros((1, 1), np.uint8)).shape == (1, 1, 3)
    assert to_rgb_array(Image.new('RGB', (1, 1))).shape == (1, 1, 3)
    assert to_rgb_array(np.zeros((1, 300, 4), np.uint8)).shape == (1, 300, 3)
    for empty in (np.zeros((0, 5, 3), np.uint8), Image.new('RGB', (0, 3)), Image.new('L', (4, 0))):
        with pytest.raises(ValueError, match='empty'):
            to_rgb_array(empty)


def test_bad_images(tmp_path):
    (tmp_path / 'notes.txt').write_text('not an image')
    with pytest.raises(ValueError, match='not an image'):
        to_rgb_array(tmp_path / 'notes.txt')
    (tmp_path / 'empty.png').write_bytes(b'')
    with pytest.raises(ValueError, match='not an image'):
        to_rgb_array(tmp_path / 'empty.png')
    with pytest.raises(FileNotFoundError):
        to_rgb_array(tmp_path / 'missing.png')
    with pytest.raises(ValueError, match='shape'):
        to_rgb_array(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match='NaN'):
        to_rgb_array(np.full((4, 4, 3), np.nan))


def test_image_to_tensor(astronaut):
    x = image_to_tensor(astronaut, (256, 128))
    assert x.shape == (1, 3, 256, 128) and x.dtype == torch.float32
    # an antialiased bilinear downscale: each output pixel is close to the mean of its 2 x 4 source block
    blocks = torch.from_numpy(astronaut).float().div(255).permute(2, 0, 1).reshape(3, 256, 2, 128, 4).mean((2, 4))
    assert (x[0] - blocks).abs().mean() < 0.02
    # a constant image stays that constant at any size (no ringing, no range change)
    flat = image_to_tensor(np.full((37, 53, 3), 200, np.uint8), (64, 96))
    torch.testing.assert_close(flat, torch.full((1, 3, 64, 96), 200 / 255), rtol=0, atol=1e-6)
    # the channel order is RGB, as read
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    assert image_to_tensor(red, (4, 4))[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_encode_command(tmp_path, tiny_ckpt, astronaut, capsys):
    Image.fromarray(astronaut).save(tmp_path / 'astronaut.png')
    out = tmp_path / 'feats.safetensors'
    # a size the window does not take is refused, naming the nearest (as every command does), not rounded
    rc = main(['encode', str(tmp_path / 'astronaut.png'), '--cradio-checkpoint', str(tiny_ckpt), '--adaptor', 'sam3',
               '--window-size', '4', '--resolution', '200', '--out', str(out)])
    assert rc == 2 and 'nearest: 192x192' in capsys.readouterr().err and not out.exists()
    rc = main(['encode', str(tmp_path / 'astronaut.png'), '--model', str(tiny_ckpt), '--adaptor', 'sam3',
               '--window-size', '4', '--resolution', '192', '--out', str(out)])
    assert rc == 0
    assert '--model FILE is now --cradio-checkpoint FILE' in capsys.readouterr().err
    feats = load_file(str(out))
    assert feats['astronaut.png/backbone/features'].shape == (192, 12, 12)
    assert feats['astronaut.png/sam3/features'].shape == (64, 12, 12)
    assert feats['astronaut.png/backbone/summary'].shape == (384,)


def test_encode_command_errors(tmp_path, tiny_ckpt, capsys):
    (tmp_path / 'bad.png').write_text('nope')
    rc = main(['encode', str(tmp_path / 'bad.png'), '--model', str(tiny_ckpt), '--out', str(tmp_path / 'o.st')])
    assert rc == 2 and 'not an image' in capsys.readouterr().err
    rc = main(['encode', str(tmp_path / 'bad.png'), '--model', str(tiny_ckpt), '--adaptor', 'dino_v3'])
    assert rc == 2 and 'dino_v3_7b' in capsys.readouterr().err
