"""Distillation toolkit: losses on hand-computed cases, EMA/DAMP exactness, a tiny run on real photos, exact resume."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from sam3_cradio.cradio import create_cradio, load_cradio
from sam3_cradio.distill import (
    AngularDispersion,
    aligned_overlap,
    angle_loss,
    damp,
    dense_shift_loss,
    ema_update,
    load_distill_config,
    mesa_loss,
    overlap_box,
    set_trainable,
    train,
)
from sam3_cradio.distill.data import EpochSampler, ResolutionSampler


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _field(B=2, C=3, H=10, W=10, seed=0):
    return torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(seed))


def _view(field, oy, ox, cells, cell=16):
    """The slice of a canvas-wide feature field (one value per 16-px cell) seen by a crop at (oy, ox) px."""
    i, j = oy // cell, ox // cell
    return field[..., i:i + cells, j:j + cells], (oy, ox, cells * cell, cells * cell)


# ---- geometry and dense loss ---------------------------------------------------------------------------------

def test_overlap_box():
    assert overlap_box((0, 0, 64, 64), (32, 16, 64, 64)) == (32, 16, 32, 48)
    assert overlap_box((0, 0, 16, 16), (16, 0, 16, 16)) is None


@pytest.mark.parametrize('s_off,t_off', [((0, 0), (0, 0)), ((16, 32), (48, 0)), ((48, 16), (0, 48))])
def test_dense_loss_zero_when_features_agree_on_overlap(s_off, t_off):
    g = _field()
    s, s_box = _view(g, *s_off, cells=5)
    t, t_box = _view(g, *t_off, cells=5)
    assert float(dense_shift_loss(s, s_box, t, t_box)) == pytest.approx(0.0, abs=1e-10)
    # a teacher with a finer grid (8 px cells) that agrees with the field: still exactly 0
    t8 = t.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert float(dense_shift_loss(s, s_box, t8, t_box)) == pytest.approx(0.0, abs=1e-10)
    # and shifting by a cell where none is due is not 0
    s_wrong = (s_box[0] + 16, s_box[1], s_box[2], s_box[3])
    assert float(dense_shift_loss(s, s_wrong, t, t_box)) > 0.1


def test_dense_loss_hand_case_counts_only_overlap():
    s = torch.zeros(1, 1, 4, 4)
    t = torch.zeros(1, 1, 4, 4)
    t[..., :2, :] = 1.0    # teacher rows 0-1 overlap student rows 2-3
    t[..., 2:, :] = 100.0  # teacher rows 2-3 lie outside the student's view
    s_box, t_box = (0, 0, 64, 64), (32, 0, 64, 64)
    assert float(dense_shift_loss(s, s_box, t, t_box)) == pytest.approx(1.0)
    a, b = aligned_overlap(s, s_box, t, t_box)
    assert a.shape == b.shape == (1, 1, 2, 4)
    # changing the teacher outside the overlap changes nothing; inside it does
    t_out = t.clone()
    t_out[..., 2:, :] = -7.0
    assert float(dense_shift_loss(s, s_box, t_out, t_box)) == pytest.approx(1.0)
    t_in = t.clone()
    t_in[..., 0, 0] = 3.0
    assert float(dense_shift_loss(s, s_box, t_in, t_box)) == pytest.approx((9 + 7) / 8)


@pytest.mark.parametrize('shift', [(0, 0), (16, 0), (7, 33), (100, 50)])
def test_dense_loss_unchanged_when_both_views_shift_together(shift):
    s, t = _field(C=4, H=8, W=8, seed=1), _field(C=4, H=8, W=8, seed=2)  # patch 16 at 128 px, patch 14 at 112 px
    s_box, t_box = (16, 0, 128, 128), (0, 28, 112, 112)
    ref = dense_shift_loss(s, s_box, t, t_box)
    dy, dx = shift
    moved = dense_shift_loss(s, (16 + dy, dx, 128, 128), t, (dy, 28 + dx, 112, 112))
    torch.testing.assert_close(moved, ref, rtol=1e-6, atol=1e-7)


def test_dense_loss_errors_name_the_problem():
    with pytest.raises(ValueError, match='do not overlap'):
        dense_shift_loss(torch.zeros(1, 2, 2, 2), (0, 0, 32, 32), torch.zeros(1, 2, 2, 2), (40, 0, 32, 32))
    with pytest.raises(ValueError, match='channels'):
        dense_shift_loss(torch.zeros(1, 2, 2, 2), (0, 0, 32, 32), torch.zeros(1, 3, 2, 2), (0, 0, 32, 32))


def test_mesa_is_zero_for_per_position_affine_copies_and_aligns():
    g = _field(C=6, seed=3)
    s, s_box = _view(g, 0, 16, cells=6)
    e, e_box = _view(2.0 * g + 3.0, 32, 0, cells=6)  # LayerNorm over channels removes the per-position affine
    assert float(mesa_loss(s, s_box, e, e_box)) == pytest.approx(0.0, abs=1e-8)
    e_misaligned = (e_box[0] + 16, e_box[1], e_box[2], e_box[3])
    assert float(mesa_loss(s, s_box, e, e_misaligned)) > 0.1


# ---- summary loss ------------------------------------------------------------------------------------------

def test_angle_loss_hand_value():
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert float(angle_loss(s, t)) == pytest.approx(math.pi ** 2 / 16, rel=1e-5)
    assert float(angle_loss(s, t, dispersion=0.5)) == pytest.approx(math.pi ** 2 / 8, rel=1e-5)
    assert float(angle_loss(3 * t, t)) == pytest.approx(0.0, abs=1e-6)
    # batch mean of (pi/2)^2 and 0
    assert float(angle_loss(torch.tensor([[0.0, 1.0], [2.0, 0.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))) == \
        pytest.approx((math.pi / 2) ** 2 / 2, rel=1e-5)
    with pytest.raises(ValueError, match='dispersion'):
        angle_loss(s, t, dispersion=0.0)


def test_angular_dispersion_hand_values_and_normalisation():
    # an orthonormal basis of R^4: mean direction (1,1,1,1)/2, every angle acos(1/2) = pi/3
    assert AngularDispersion().update(torch.eye(4)).compute() == pytest.approx(math.pi ** 2 / 9)
    assert AngularDispersion().update(torch.ones(5, 3)).compute() == pytest.approx(0.0, abs=1e-10)

    g = torch.Generator().manual_seed(0)
    axis = torch.zeros(64)
    axis[0] = 1.0
    narrow = axis + 0.3 * torch.randn(256, 64, generator=g) / 8
    wide = axis + 3.0 * torch.randn(256, 64, generator=g) / 8
    results = {}
    for name, t in (('narrow', narrow), ('wide', wide)):
        disp = AngularDispersion().update(t[:128]).update(t[128:])
        d = disp.compute()
        mean_pred = disp.mean_direction().float().expand(len(t), -1)
        raw = float(angle_loss(mean_pred, t))
        results[name] = (d, raw, float(angle_loss(mean_pred, t, dispersion=d)))
    assert results['wide'][0] > 5 * results['narrow'][0]      # wider cone, larger dispersion
    assert results['wide'][1] > 5 * results['narrow'][1]      # raw loss would let the wide teacher dominate
    assert results['narrow'][2] == pytest.approx(1.0, rel=1e-4)  # normalised: predicting the mean scores 1 for both
    assert results['wide'][2] == pytest.approx(1.0, rel=1e-4)


# ---- EMA and DAMP ------------------------------------------------------------------------------------------

def test_ema_update_is_exact():
    ema, model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)), nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    for p in ema.parameters():
        nn.init.constant_(p, 1.0)
    for p in model.parameters():
        nn.init.constant_(p, 5.0)
    model[1].num_batches_tracked.fill_(7)
    ema_update(ema, model, decay=0.75)
    for p in ema.parameters():
        assert torch.equal(p, torch.full_like(p, 2.0))  # 0.75 * 1 + 0.25 * 5
    assert int(ema[1].num_batches_tracked) == 7
    ema_update(ema, model, decay=0.5)
    assert torch.equal(ema[0].weight, torch.full((2, 2), 3.5))
    with pytest.raises(ValueError, match='decay'):
        ema_update(ema, model, decay=1.5)


def test_damp_changes_weights_only_in_training():
    model = nn.Linear(8, 4)
    x = torch.randn(3, 8)
    clean = {k: v.clone() for k, v in model.state_dict().items()}
    ref = model(x)
    model.eval()
    with damp(model.parameters(), 0.1, torch.Generator().manual_seed(0), enabled=model.training):
        assert torch.equal(model(x), ref)
    model.train()
    with damp(model.parameters(), 0.1, torch.Generator().manual_seed(0), enabled=model.training):
        noisy = model(x)
        assert not torch.allclose(noisy, ref)
        noisy.sum().backward()
    for k, v in model.state_dict().items():
        assert torch.equal(v, clean[k]), k  # clean weights after the step: eval and saving never see noise
    assert model.weight.grad is not None
    # frozen parameters are never perturbed
    model.weight.requires_grad_(False)
    with damp(model.parameters(), 0.1, enabled=True):
        assert torch.equal(model.weight, clean['weight'])


# ---- sampling and student set-up ---------------------------------------------------------------------------

def test_resolution_sampler_rounds_to_window_step():
    rs = ResolutionSampler([128, 192, 224, 256, 384, 432], [512, 768, 1024, 1152], step=16 * 12)
    assert rs.low == [192, 384]
    assert rs.high == [576, 768, 960, 1152]
    g = torch.Generator().manual_seed(0)
    draws = {rs.sample(g) for _ in range(200)}
    assert draws == set(rs.low + rs.high)
    assert ResolutionSampler([128, 192], [512], step=16).low == [128, 192]


def test_epoch_sampler_resumes_and_shards():
    a = EpochSampler(5, seed=3)
    full = [a.next_batch(2) for _ in range(6)]
    b = EpochSampler(5, seed=3)
    first = [b.next_batch(2) for _ in range(3)]
    c = EpochSampler(5, seed=3)
    c.load_state_dict(b.state_dict())
    assert first + [c.next_batch(2) for _ in range(3)] == full
    r0, r1 = EpochSampler(6, 0, rank=0, world_size=2), EpochSampler(6, 0, rank=1, world_size=2)
    assert sorted(r0.next_batch(3) + r1.next_batch(3)) == list(range(6))


@pytest.mark.parametrize('mode,last_k', [('head', 0), ('last_k', 2), ('all', 0)])
def test_set_trainable(mode, last_k):
    model = create_cradio('cradio_test', adaptor_names=('sam3',))
    params = set_trainable(model, mode, ['sam3'], last_k)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(params) == len(names)
    assert all(n.startswith('adaptors.sam3.') or mode != 'head' for n in names)
    if mode == 'last_k':
        assert {n.split('.')[2] for n in names if n.startswith('model.blocks.')} == {'6', '7'}
    if mode == 'all':
        assert names == {n for n, _ in model.named_parameters()}
    with pytest.raises(ValueError, match='last_k'):
        set_trainable(model, 'last_k', ['sam3'], 0)


# ---- training runs -----------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def photos(tmp_path_factory) -> Path:
    """scikit-image's sample photos: six to train on, two held out."""
    skd = pytest.importorskip('skimage.data')
    from PIL import Image

    root = tmp_path_factory.mktemp('photos')
    for split, names in (('train', ['astronaut', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry',
                                    'hubble_deep_field']), ('held_out', ['cat', 'coins'])):
        (root / split).mkdir()
        for n in names:
            Image.fromarray(getattr(skd, n)()).save(root / split / f'{n}.png')
    return root


def _cfg(photos: Path, out: Path, *extra: str):
    return load_distill_config('tiny', [f'data.images={photos / "train"}', f'data.held_out={photos / "held_out"}',
                                        f'run.out_dir={out}', *extra])


def test_tiny_run_lowers_held_out_loss_and_round_trips(photos, tmp_path):
    result = train(_cfg(photos, tmp_path, 'optim.steps=12'))
    assert result.step == 12 and not result.interrupted
    assert result.eval_after['pe'] < 0.7 * result.eval_before['pe']
    assert (tmp_path / 'result.json').is_file() and (tmp_path / 'log.jsonl').read_text().count('\n') == 12

    loaded = load_cradio(result.student_path, adaptor_names=['sam3'])
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        a, b = result.model(x, feature_fmt='NCHW'), loaded(x, feature_fmt='NCHW')
    for name in ('backbone', 'sam3'):
        assert torch.equal(a[name].features, b[name].features) and torch.equal(a[name].summary, b[name].summary)


@pytest.mark.slow
def test_interrupt_and_resume_matches_uninterrupted_run(photos, tmp_path):
    # ViTDet student training its last block: EMA/MESA, DAMP, accumulation and multi-resolution all active
    extra = ['optim.steps=6', 'optim.accum_steps=2', 'run.save_every=3', 'student.window_size=2',
             'student.trainable=last_k', 'student.last_k=1', 'loss.mesa_weight=0.5', 'loss.damp_std=0.05',
             'data.held_out=null']
    full = train(_cfg(photos, tmp_path / 'full', *extra))
    part = train(_cfg(photos, tmp_path / 'resumed', *extra), stop_after=3)
    assert part.interrupted and part.step == 3
    with open(tmp_path / 'resumed' / 'log.jsonl', 'a') as f:  # a step the killed run logged but never saved
        f.write('{"step": 4, "loss": 123.0}\n')
    resumed = train(_cfg(photos, tmp_path / 'resumed', *extra))
    assert resumed.step == 6 and 'mesa' in resumed.losses
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.losses == full.losses
    assert (tmp_path / 'resumed' / 'log.jsonl').read_text() == (tmp_path / 'full' / 'log.jsonl').read_text()
    ckpt_a = torch.load(tmp_path / 'full' / 'checkpoint.pt', weights_only=True)
    ckpt_b = torch.load(tmp_path / 'resumed' / 'checkpoint.pt', weights_only=True)
    for k in ckpt_a['ema']:
        assert torch.equal(ckpt_a['ema'][k], ckpt_b['ema'][k]), k


def test_main_distill_cli(photos, tmp_path, capsys):
    from conftest import run_command

    assert run_command(['distill', '--config', 'tiny', '--print-config', 'student.window_size=2']) == 0
    assert 'window_size: 2' in capsys.readouterr().out
    with pytest.raises(ValueError, match='data.images'):
        run_command(['distill', '--config', 'tiny', f'run.out_dir={tmp_path}'])
    with pytest.raises(ValueError, match='known'):
        run_command(['distill', '--config', 'nope'])


def test_cradio_adaptor_teacher_with_angle_loss(photos, tmp_path, tiny_ckpt):
    """A frozen C-RADIO teacher (NVIDIA's tiny fixture) gives dense and summary targets of its dino_v3_7b adaptor;
    the dispersion is measured on the data and kept in the checkpoint."""
    teacher = (f'+teachers.radio={{kind: cradio, checkpoint: "{tiny_ckpt}", adaptor: dino_v3_7b, '
               f'student_adaptor: dino_v3_7b, dense_weight: 1.0, summary_weight: 1.0, dispersion: null}}')
    result = train(_cfg(photos, tmp_path, 'optim.steps=3', 'data.held_out=null', teacher))
    assert {'dense/pe', 'dense/radio', 'angle/radio'} <= result.losses.keys()
    disp = torch.load(tmp_path / 'checkpoint.pt', weights_only=True)['dispersions']
    assert set(disp) == {'radio'} and 0 < disp['radio'] < math.pi ** 2
    assert sorted(result.model.adaptor_names) == ['dino_v3_7b', 'sam3']


def test_distilled_student_loads_into_sam3(photos, tmp_path):
    from sam3_cradio.build import build_sam3

    result = train(_cfg(photos, tmp_path, 'optim.steps=1', 'data.held_out=null'))
    model = build_sam3('cradio_tiny', pretrained=False, cradio_checkpoint=result.student_path, interactive=False,
                       device='cpu')
    encoder = model.backbone.vision_backbone.trunk.encoder
    a, b = encoder.state_dict(), result.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_pe_teacher_is_frozen_and_sees_sam3_normalisation():
    from sam3_cradio.distill import PETeacher
    from sam3_cradio.distill.train import build_teacher

    cfg = load_distill_config('tiny', ['data.images=x', 'run.out_dir=y'])
    t = cfg.teachers.pe
    teacher = PETeacher.from_config(t.backbone, t.image_size, t.overrides)
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert teacher.input_size(96, 64) == (112, 112) and teacher.patch_size == 14
    # the tiny config's numbers on pe_tiny's layout; the window is the registry's (pe_tiny: 4), not an override
    blocks = teacher.trunk.blocks
    assert len(blocks) == 2 and [b.window_size for b in blocks] == [4, 0]
    assert not any('window' in o for o in t.overrides)
    x = torch.rand(1, 3, 112, 112)
    with torch.no_grad():
        out = teacher(x)
        ref = teacher.trunk((x - 0.5) / 0.5)[-1]
    assert out.summary is None and out.features.shape == (1, 64, 8, 8)
    torch.testing.assert_close(out.features, ref)
    # the trainer builds the same teacher from the config entry
    torch.manual_seed(0)
    a = build_teacher(t, torch.device('cpu'))
    torch.manual_seed(0)
    b = PETeacher.from_config('pe_tiny', 112, t.overrides)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_pe_teacher_refuses_windows_and_non_pe_backbones():
    from sam3_cradio.distill import PETeacher
    from sam3_cradio.distill.train import build_teacher

    with pytest.raises(ValueError, match='ModelSpec fixes window and resolution'):
        PETeacher.from_config('pe_tiny', 112, ['backbone.window_size=2'])
    with pytest.raises(ValueError, match="needs a PE backbone.*'cradio_tiny'"):
        PETeacher.from_config('cradio_tiny')
    with pytest.raises(ValueError, match='not a multiple of pe_tiny'):
        PETeacher.from_config('pe_tiny', 100)
    cfg = load_distill_config('tiny', ['data.images=x', 'run.out_dir=y', 'teachers.pe.pretrained=true'])
    with pytest.raises(ValueError, match="'pe_tiny' has no released weights"):
        build_teacher(cfg.teachers.pe, torch.device('cpu'))


def test_shift_larger_than_crop_is_refused(photos, tmp_path):
    with pytest.raises(ValueError, match='max_shift'):
        train(_cfg(photos, tmp_path, 'data.max_shift=64'))
