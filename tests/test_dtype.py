"""dtype='bf16': the trunk's weights cast once, the model run under bf16 autocast by the predictors, on the CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CRADIO_TINY, IMAGES
from sam3_cradio.build import autocast_for, build_sam3
from sam3_cradio.cli import main
from sam3_cradio.predictor import Sam3ImagePredictor


@pytest.mark.parametrize('backbone', ['cradio_tiny', 'pe_tiny'])
def test_bf16_trunk_weights_and_float32_rest(backbone):
    model = build_sam3(backbone, pretrained=False, device='cpu', dtype='bf16')
    trunk = model.backbone.vision_backbone.trunk
    assert {p.dtype for p in trunk.parameters()} == {torch.bfloat16}
    assert {p.dtype for n, p in model.named_parameters() if '.trunk.' not in n} == {torch.float32}
    assert model.sam3_cradio_cfg['dtype'] == 'bf16'
    result = Sam3ImagePredictor(model, confidence_threshold=0.0).set_image(IMAGES / 'coffee.jpg').predict_text('cup')
    assert len(result) > 0 and np.isfinite(result.scores).all()


def test_bf16_trunk_stays_close_to_float32_on_the_fixture():
    kw = dict(pretrained=False, device='cpu', cradio_checkpoint=CRADIO_TINY / 'model.pth.tar')
    fp32 = build_sam3('cradio_tiny', **kw).backbone.vision_backbone.trunk
    bf16 = build_sam3('cradio_tiny', dtype='bf16', **kw)
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        ref = fp32(x)[-1]
        plain = bf16.backbone.vision_backbone.trunk(x)[-1]   # a C-RADIO trunk casts its input itself
        with autocast_for(bf16):
            autocast = bf16.backbone.vision_backbone.trunk(x)[-1]
    assert plain.dtype == torch.float32
    for out in (plain, autocast):
        assert ((out - ref).norm() / ref.norm()).item() < 0.03


@pytest.mark.slow
def test_bf16_video_on_cpu(tmp_path):
    from sam3_cradio.video import Sam3VideoPredictor

    frames = np.asarray(Image.open(IMAGES / 'astronaut.jpg').convert('RGB').resize((96, 96)))
    model = build_sam3('pe_tiny', mode='video', pretrained=False, device='cpu', dtype='bf16')
    tracker = Sam3VideoPredictor(model)
    tracker.open([frames, frames[:, ::-1].copy(), frames])
    tracker.add_box(0, [20, 20, 70, 80])
    assert [r.frame_idx for r in tracker.propagate('forward')] == [0, 1, 2]


def test_dtype_option_and_errors(tmp_path, capsys):
    out = tmp_path / 'seg.png'
    assert main(['segment', str(IMAGES / 'coffee.jpg'), '--text', 'cup', '--backbone', 'cradio_tiny', '--random-weights',
                 '--dtype', 'bf16', '--device', 'cpu', '--out', str(out)]) == 0
    assert out.is_file()
    with pytest.raises(ValueError, match=r"dtype must be one of \['fp32', 'bf16'\], got 'fp16'"):
        build_sam3('cradio_tiny', pretrained=False, dtype='fp16')
