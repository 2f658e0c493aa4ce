"""The distillation loop: config -> student, teachers, EMA -> AdamW + cosine steps -> released-format checkpoint.

One optimizer step = ``optim.accum_steps`` micro-batches. Each micro-batch draws one resolution ``r`` (stochastic
multi-resolution), resizes its images to a square canvas of ``r + data.max_shift`` pixels, and cuts independently
shifted ``r x r`` crops for the student, every teacher and the EMA student (offsets: multiples of
``data.shift_step`` in [0, max_shift]). A teacher with a fixed input (PE) gets its crop resized to that input; the
losses align all maps through their crop boxes (see :mod:`sam3_cradio.distill.losses`).

Resume is exact: ``<out_dir>/checkpoint.pt`` (written atomically every ``run.save_every`` steps) holds the student,
EMA, optimizer, scheduler, sampler position, step, measured dispersions and every RNG state (torch, numpy, python,
the run's own generator). A run restarted with the same config continues as if never interrupted.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..build import CONFIG_DIR, compose_yaml
from ..cradio import CRadioEncoder, create_cradio, load_cradio, save_cradio
from ..files import save_atomic
from ..registry import get_backbone
from .data import EpochSampler, ImageSet, ResolutionSampler, crop_view, make_canvas, random_offset
from .losses import AngularDispersion, angle_loss, damp, dense_shift_loss, ema_update, mesa_loss
from .teachers import CRadioTeacher, PETeacher, freeze

_logger = logging.getLogger(__name__)

__all__ = ['DISTILL_CONFIG_DIR', 'TRAINABLE', 'load_distill_config', 'build_student', 'set_trainable',
           'build_teacher', 'evaluate_dense', 'measure_dispersion', 'DistillResult', 'train', 'dist_info']

DISTILL_CONFIG_DIR = CONFIG_DIR / 'distill'
TRAINABLE = ('head', 'last_k', 'all')
CHECKPOINT_NAME = 'checkpoint.pt'
STUDENT_NAME = 'student.pth.tar'


# --------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------

def load_distill_config(name: str = 'sam3_head', overrides: Sequence[str] = ()) -> Any:
    """Compose ``configs/distill/<name>.yaml`` with hydra ``overrides``."""
    if not (DISTILL_CONFIG_DIR / f'{name}.yaml').is_file():
        known = sorted(p.stem for p in DISTILL_CONFIG_DIR.glob('*.yaml'))
        raise ValueError(f'unknown distillation config {name!r}; known: {known}')
    return compose_yaml(DISTILL_CONFIG_DIR, name, overrides)


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------

def set_trainable(model: CRadioEncoder, mode: str, adaptors: Sequence[str], last_k: int = 0) -> list[nn.Parameter]:
    """Freeze everything, then unfreeze: 'head' (the named adaptors' heads), 'last_k' (those heads and the last
    ``last_k`` blocks) or 'all'. Returns the trainable parameters."""
    if mode not in TRAINABLE:
        raise ValueError(f'student.trainable must be one of {TRAINABLE}, got {mode!r}')
    for p in model.parameters():
        p.requires_grad_(False)
    modules: list[nn.Module] = [model.adaptors[a] for a in adaptors]
    if mode == 'last_k':
        depth = len(model.model.blocks)
        if not 1 <= last_k <= depth:
            raise ValueError(f'student.last_k must be in [1, {depth}] for trainable=last_k, got {last_k}')
        modules += list(model.model.blocks[depth - last_k:]) + [model.model.norm]
    elif mode == 'all':
        modules = [model]
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def _student_adaptors(cfg: Any) -> list[str]:
    return list(dict.fromkeys(t.student_adaptor for t in cfg.teachers.values()))


def build_student(cfg: Any, device: torch.device) -> CRadioEncoder:
    """The C-RADIO student of ``cfg.student`` (checkpoint or random ``variant``) in its window mode, trainable set."""
    s = cfg.student
    adaptors = _student_adaptors(cfg)
    if s.checkpoint:
        model = load_cradio(s.checkpoint, adaptor_names=adaptors, window_size=s.window_size, device=device)
    else:
        _logger.info('student %s with random weights (student.checkpoint is null)', s.variant)
        model = create_cradio(s.variant, adaptor_names=adaptors, window_size=s.window_size, device=device)
    set_trainable(model, s.trainable, adaptors, int(s.get('last_k') or 0))
    return model


def build_teacher(tcfg: Any, device: torch.device) -> nn.Module:
    """One teacher entry: kind 'pe' (a registered PE ``backbone``: SAM3's own with sam3.pt weights, or with
    ``pretrained: false`` a random trunk with ``overrides`` of its numbers) or 'cradio' (a C-RADIO checkpoint's
    ``adaptor``)."""
    if tcfg.kind == 'pe':
        backbone = get_backbone(tcfg.get('backbone') or 'pe')
        image_size = int(tcfg.image_size) if tcfg.get('image_size') is not None else None
        if tcfg.pretrained:
            if not backbone.pretrained:
                raise ValueError(f'PE teacher backbone {backbone.name!r} has no released weights; set '
                                 f"pretrained: false for a random trunk, or backbone: pe for SAM3's own PE")
            return PETeacher.from_sam3(tcfg.get('sam3_checkpoint'), image_size, device=device)
        return PETeacher.from_config(backbone.name, image_size, list(tcfg.get('overrides') or []), device=device)
    if tcfg.kind == 'cradio':
        if not tcfg.get('checkpoint'):
            raise ValueError('a cradio teacher needs checkpoint: a release name or .pth.tar path')
        return CRadioTeacher.from_checkpoint(tcfg.checkpoint, tcfg.adaptor, tcfg.get('window_size'), device=device)
    raise ValueError(f"teacher kind must be 'pe' or 'cradio', got {tcfg.kind!r}")


# --------------------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------------------

def _autocast(device: torch.device, bf16: bool):
    if device.type == 'cuda' and bf16:
        return torch.autocast('cuda', dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def measure_dispersion(teacher: nn.Module, images: ImageSet, resolution: int, batch_size: int,
                       device: torch.device, bf16: bool = False) -> float:
    """The teacher's :class:`AngularDispersion` over ``images`` (centre crops at ``resolution``)."""
    disp = AngularDispersion()
    for i in range(0, len(images), batch_size):
        canvas = make_canvas([images.load(j) for j in range(i, min(i + batch_size, len(images)))], resolution)
        x = crop_view(canvas, (0, 0, resolution, resolution), teacher.input_size(resolution, resolution))
        with _autocast(device, bf16):
            disp.update(teacher(x.to(device)).summary)
    return disp.compute()


@torch.no_grad()
def evaluate_dense(student: CRadioEncoder, teacher: nn.Module, adaptor: str, images: ImageSet, resolution: int,
                   shift: int, batch_size: int = 4, device: torch.device | None = None) -> float:
    """Mean shift-equivariant dense loss on ``images`` with a fixed geometry: student crop at (0, 0), teacher crop
    at (shift, shift), both ``resolution`` px on a ``resolution + shift`` canvas. Deterministic."""
    device = device or next(student.parameters()).device
    was_training = student.training
    student.eval()
    total, n = 0.0, 0
    s_box = (0, 0, resolution, resolution)
    t_box = (shift, shift, resolution, resolution)
    for i in range(0, len(images), batch_size):
        idx = range(i, min(i + batch_size, len(images)))
        canvas = make_canvas([images.load(j) for j in idx], resolution + shift).to(device)
        s = student(crop_view(canvas, s_box, (resolution, resolution)), feature_fmt='NCHW')[adaptor].features
        t = teacher(crop_view(canvas, t_box, teacher.input_size(resolution, resolution))).features
        total += float(dense_shift_loss(s, s_box, t, t_box)) * len(idx)
        n += len(idx)
    student.train(was_training)
    return total / n


# --------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------

@dataclass
class DistillResult:
    """What a run produced: final step, last losses, held-out dense loss before/after, files written."""
    step: int
    losses: dict[str, float]
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    student_path: Path | None = None
    interrupted: bool = False
    model: nn.Module | None = field(default=None, repr=False)  # the trained student (eval mode)


def dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get('WORLD_SIZE', '1'))
    return int(os.environ.get('RANK', '0')), int(os.environ.get('LOCAL_RANK', '0')), world


def _rng_state(gen: torch.Generator, noise_gen: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        'gen': gen.get_state(),
        'noise_gen': noise_gen.get_state().cpu(),
        'torch': torch.get_rng_state(),
        'numpy': [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        'python': random.getstate(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(gen: torch.Generator, noise_gen: torch.Generator, state: dict[str, Any]) -> None:
    gen.set_state(state['gen'])
    noise_gen.set_state(state['noise_gen'])
    torch.set_rng_state(state['torch'])
    n = state['numpy']
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def _lr_lambda(warmup: int, total: int, min_ratio: float):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def _param_groups(params: Sequence[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]  # biases, norms, tokens' scales
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': rest, 'weight_decay': 0.0}]


def train(cfg: Any, stop_after: int | None = None) -> DistillResult:
    """Run (or resume) the distillation described by ``cfg`` (see ``configs/distill/sam3_head.yaml``).

    Args:
        cfg: a composed distillation config (:func:`load_distill_config`).
        stop_after: return right after the checkpoint of this step, as if the run had been killed there (tests).

    Returns:
        A :class:`DistillResult`; the student is written to ``<out_dir>/student.pth.tar`` in NVIDIA's released
        layout (loadable by ``load_cradio`` and ``build_sam3(cradio_checkpoint=...)``) when the run completes.
    """
    from omegaconf import OmegaConf
    from tqdm.auto import tqdm

    rank, local_rank, world = dist_info()
    distributed = world > 1
    run, optim_cfg, data_cfg, loss_cfg = cfg.run, cfg.optim, cfg.data, cfg.loss
    if run.device:
        device = torch.device(run.device)
    else:
        device = torch.device(f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu')
    if distributed:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    out_dir = Path(run.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_NAME
    is_main = rank == 0

    # models (built from the seed; a resume overwrites their weights)
    torch.manual_seed(int(run.seed))
    random.seed(int(run.seed))
    np.random.seed(int(run.seed))
    student = build_student(cfg, device)
    student.train()
    trainable = [p for p in student.parameters() if p.requires_grad]
    teachers = {name: build_teacher(t, device) for name, t in cfg.teachers.items()}
    use_mesa = float(loss_cfg.mesa_weight) > 0
    if use_mesa and not any(p.requires_grad for p in student.model.parameters()):
        _logger.info('MESA acts on backbone features; no backbone weight trains (student.trainable=%s): MESA off',
                     cfg.student.trainable)
        use_mesa = False
    ema = freeze(copy.deepcopy(student)) if use_mesa else None

    model: nn.Module = student
    if distributed:
        from torch.nn.parallel import DistributedDataParallel
        model = DistributedDataParallel(student, device_ids=[device.index] if device.type == 'cuda' else None,
                                        find_unused_parameters=True)

    optimizer = torch.optim.AdamW(_param_groups(trainable, float(optim_cfg.weight_decay)), lr=float(optim_cfg.lr),
                                  betas=tuple(optim_cfg.betas))
    total_steps = int(optim_cfg.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _lr_lambda(int(optim_cfg.warmup_steps), total_steps, float(optim_cfg.min_lr_ratio)))

    images = ImageSet.from_source(data_cfg.images)
    held_out = ImageSet.from_source(data_cfg.held_out) if data_cfg.get('held_out') else None
    sampler = EpochSampler(len(images), int(run.seed), rank, world)
    res_sampler = ResolutionSampler(data_cfg.low_res, data_cfg.high_res, student.min_resolution_step,
                                    float(data_cfg.p_high), student.max_resolution)
    # geometry and resolution draws (CPU), DAMP noise (on the model's device); one stream per rank
    gen = torch.Generator().manual_seed(int(run.seed) + 7919 * rank)
    noise_gen = torch.Generator(device=device).manual_seed(int(run.seed) + 104729 + 7919 * rank)
    max_shift, shift_step = int(data_cfg.max_shift), int(data_cfg.shift_step)
    smallest = min(res_sampler.low + res_sampler.high)
    if shift_step < 1 or max_shift < 0 or max_shift >= smallest:
        raise ValueError(
            f'data.max_shift={max_shift} must be in [0, {smallest}) (the smallest crop) and data.shift_step='
            f'{shift_step} >= 1, so that every pair of views overlaps')
    eval_res = student.nearest_supported_resolution(int(data_cfg.eval_resolution), int(data_cfg.eval_resolution))[0]

    step = 0
    dispersions: dict[str, float] = {}
    eval_before: dict[str, float] = {}
    if ckpt_path.is_file() and run.resume:
        state = torch.load(ckpt_path, map_location='cpu', weights_only=True)
        student.load_state_dict(state['student'])
        optimizer.load_state_dict(state['optimizer'])
        scheduler.load_state_dict(state['scheduler'])
        sampler.load_state_dict(state['sampler'])
        if ema is not None:
            ema.load_state_dict(state['ema'])
        step, dispersions, eval_before = int(state['step']), dict(state['dispersions']), dict(state['eval_before'])
        rng = state['rng']
        if rank > 0:  # every rank keeps its own streams beside the main checkpoint
            rank_file = out_dir / f'rng.rank{rank}.pt'
            if rank_file.is_file():
                rng = torch.load(rank_file, map_location='cpu', weights_only=True)
            else:
                _logger.warning('%s is missing; rank %d continues with rank 0\'s random streams', rank_file, rank)
        _set_rng_state(gen, noise_gen, rng)
        log_path = out_dir / 'log.jsonl'
        if is_main and log_path.is_file():  # drop steps logged after the checkpoint by the interrupted run
            kept = [line for line in log_path.read_text().splitlines() if line and json.loads(line)['step'] <= step]
            log_path.write_text(''.join(line + '\n' for line in kept))
        _logger.info('resumed %s at step %d', ckpt_path, step)
    else:
        for name, t in cfg.teachers.items():
            if float(t.summary_weight) > 0:
                if not teachers[name].has_summary:
                    raise ValueError(f'teacher {name!r} ({t.kind}) has no summary; set its summary_weight to 0')
                dispersions[name] = float(t.dispersion) if t.get('dispersion') else measure_dispersion(
                    teachers[name], images, eval_res, int(data_cfg.batch_size), device, bool(run.bf16))
                _logger.info('teacher %s angular dispersion %.4f rad^2', name, dispersions[name])
        if held_out is not None:
            eval_before = {name: evaluate_dense(student, teachers[name], t.student_adaptor, held_out, eval_res,
                                                max_shift, int(data_cfg.batch_size), device)
                           for name, t in cfg.teachers.items() if float(t.dense_weight) > 0}

    def checkpoint() -> None:
        if not is_main:
            rng = _rng_state(gen, noise_gen)
            save_atomic(out_dir / f'rng.rank{rank}.pt', lambda tmp: torch.save(rng, tmp))
        else:
            state = {
                'step': step, 'student': student.state_dict(), 'optimizer': optimizer.state_dict(),
                'scheduler': scheduler.state_dict(), 'sampler': sampler.state_dict(),
                'ema': ema.state_dict() if ema is not None else None, 'rng': _rng_state(gen, noise_gen),
                'dispersions': dispersions, 'eval_before': eval_before,
                'config': OmegaConf.to_container(cfg, resolve=True),
            }
            save_atomic(ckpt_path, lambda tmp: torch.save(state, tmp))
        if distributed:
            torch.distributed.barrier()

    def draw_box(r: int) -> tuple[int, int, int, int]:
        # an r x r crop of the (r + max_shift)^2 canvas at an independent shifted offset
        return (random_offset(max_shift, shift_step, gen), random_offset(max_shift, shift_step, gen), r, r)

    accum = int(optim_cfg.accum_steps)
    bf16 = bool(run.bf16)
    losses: dict[str, float] = {}
    bar = tqdm(total=total_steps, initial=step, disable=not (is_main and run.progress), desc='distill')
    log_file = open(out_dir / 'log.jsonl', 'a') if is_main else None
    try:
        while step < total_steps:
            sums: dict[str, float] = {}
            for micro in range(accum):
                r = res_sampler.sample(gen)
                canvas = make_canvas([images.load(i) for i in sampler.next_batch(int(data_cfg.batch_size))],
                                     r + max_shift).to(device)
                s_box = draw_box(r)
                t_boxes = {n: draw_box(r) for n in teachers}
                e_box = draw_box(r)
                sync = nullcontext() if (not distributed or micro == accum - 1) else model.no_sync()
                with sync, damp(trainable, float(loss_cfg.damp_std), noise_gen, enabled=student.training):
                    with _autocast(device, bf16):
                        out = model(crop_view(canvas, s_box, (r, r)), feature_fmt='NCHW')
                        terms: dict[str, torch.Tensor] = {}
                        total = torch.zeros((), device=device)
                        for name, t in cfg.teachers.items():
                            teacher, box = teachers[name], t_boxes[name]
                            with torch.no_grad():
                                target = teacher(crop_view(canvas, box, teacher.input_size(r, r)))
                            so = out[t.student_adaptor]
                            if float(t.dense_weight) > 0:
                                terms[f'dense/{name}'] = dense_shift_loss(so.features, s_box, target.features, box)
                                total = total + float(t.dense_weight) * terms[f'dense/{name}']
                            if float(t.summary_weight) > 0:
                                terms[f'angle/{name}'] = angle_loss(so.summary, target.summary, dispersions[name])
                                total = total + float(t.summary_weight) * terms[f'angle/{name}']
                        if ema is not None:
                            with torch.no_grad():
                                e_feat = ema(crop_view(canvas, e_box, (r, r)), feature_fmt='NCHW')['backbone'].features
                            terms['mesa'] = mesa_loss(out['backbone'].features, s_box, e_feat, e_box)
                            total = total + float(loss_cfg.mesa_weight) * terms['mesa']
                    (total / accum).backward()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) / accum
                sums['loss'] = sums.get('loss', 0.0) + float(total.detach()) / accum
            if float(optim_cfg.grad_clip) > 0:
                torch.nn.utils.clip_grad_norm_(trainable, float(optim_cfg.grad_clip))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema_update(ema, student, float(loss_cfg.ema_decay))
            step += 1
            losses = sums
            bar.update(1)
            bar.set_postfix({k: f'{v:.4g}' for k, v in losses.items()})
            if log_file is not None:
                log_file.write(json.dumps({'step': step, 'lr': scheduler.get_last_lr()[0], **losses}) + '\n')
                log_file.flush()
            if step % int(run.save_every) == 0 or step == total_steps:
                checkpoint()
            if stop_after is not None and step >= stop_after and step < total_steps:
                return DistillResult(step, losses, eval_before, checkpoint=ckpt_path, interrupted=True)
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()

    student.eval()
    eval_after: dict[str, float] = {}
    if held_out is not None:
        eval_after = {name: evaluate_dense(student, teachers[name], t.student_adaptor, held_out, eval_res, max_shift,
                                           int(data_cfg.batch_size), device)
                      for name, t in cfg.teachers.items() if float(t.dense_weight) > 0}
    student_path = None
    if is_main:
        student_path = out_dir / STUDENT_NAME
        save_cradio(student, student_path, half=bool(run.save_half))
        with open(out_dir / 'result.json', 'w') as f:
            json.dump({'step': step, 'losses': losses, 'eval_before': eval_before, 'eval_after': eval_after,
                       'dispersions': dispersions, 'student': str(student_path),
                       'window_size': cfg.student.window_size}, f, indent=2)
        _logger.info('wrote %s (held-out dense loss %s -> %s)', student_path, eval_before, eval_after)
    return DistillResult(step, losses, eval_before, eval_after, ckpt_path, student_path, model=student)
