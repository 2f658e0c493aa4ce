"""The loop every evaluation shares: shard over torchrun ranks, predict, stream one JSON record per unit to disk,
resume, merge once, report; and the model options, resolved through the backbone registry.

How a run, a resume and a side-by-side comparison work: ``docs/evaluation.md``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cli import window_arg
from ..files import write_atomic
from ..registry import ModelSpec, get_backbone, list_backbones, parse_model

__all__ = ['DistContext', 'RecordStore', 'Report', 'EvalSpec', 'InjectedCrash', 'init_distributed', 'run_eval',
           'run_models', 'model_configs', 'ModelConfig', 'resolve_model', 'add_run_args', 'add_model_args',
           'build_model', 'model_fingerprint', 'environment', 'sort_ids', 'markdown_table', 'CRASH_ENV']

_logger = logging.getLogger(__name__)

Id = int | str  # a work unit's id (a JSON key)
CRASH_ENV = 'SAM3C_EVAL_CRASH_AFTER'
_DIST_TIMEOUT = datetime.timedelta(hours=24)  # ranks wait for the slowest one at the end


class InjectedCrash(RuntimeError):
    """Raised by the ``SAM3C_EVAL_CRASH_AFTER`` test hook."""


# --------------------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------------------

@dataclass
class DistContext:
    """Where this process sits: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device('cpu'))
    initialized: bool = False  # this object started the process group (and closes it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            if dist.get_backend() == 'nccl':
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def close(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialized = False


def init_distributed(device: str | None = None) -> DistContext:
    """Read torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` and start a process group when ``WORLD_SIZE > 1``.

    Args:
        device: 'cpu', 'cuda' or 'cuda:N'; default CUDA when available. With several ranks, 'cuda' means
            ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local = int(os.environ.get('LOCAL_RANK', '0'))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f'RANK={rank} / WORLD_SIZE={world} are inconsistent; launch with torchrun or set neither')
    dev = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'--device {device} was asked for but CUDA is not available; use --device cpu')
        if dev.index is None:
            dev = torch.device('cuda', local if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    ctx = DistContext(rank, world, local, dev)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend='nccl' if dev.type == 'cuda' else 'gloo', timeout=_DIST_TIMEOUT)
            ctx.initialized = True
    return ctx


@contextlib.contextmanager
def single_process_env() -> Iterator[None]:
    """Hide torchrun's ``RANK`` / ``WORLD_SIZE`` while a model is built.

    sam3's video classes read them in ``__init__`` (``sam3_video_base.py``, ``sam3_image.py``
    ``Sam3ImageOnVideoMultiGPU``) to split one video's frames over GPUs. Here each rank runs whole sequences on its
    own, so every model must believe it is alone.
    """
    saved = {k: os.environ.get(k) for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')}
    os.environ.update(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0')
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------------------

def sort_ids(ids: Sequence[Id]) -> list[Id]:
    """Unique ids in a fixed order: ints before strs, each ascending."""
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, (int, str))]
    if bad:
        raise TypeError(f'record ids must be int or str (JSON keys), got e.g. {bad[0]!r}')
    return sorted(set(ids), key=lambda i: (isinstance(i, str), i))


class RecordStore:
    """JSON-lines records of one run: ``<root>/records/rank{r:05d}.jsonl``, one line ``{"id": ..., "data": ...}``
    per unit. Each rank appends only to its own file; :meth:`read_all` reads every rank's file."""

    def __init__(self, root: str | os.PathLike, rank: int = 0) -> None:
        self.dir = Path(root) / 'records'
        self.path = self.dir / f'rank{rank:05d}.jsonl'
        self._fd: int | None = None

    def read_all(self) -> dict[Id, Any]:
        """``{id: data}`` over all record files; the first record of an id wins. A torn last line is skipped."""
        out: dict[Id, Any] = {}
        for path in sorted(self.dir.glob('rank*.jsonl')):
            with open(path, 'rb') as f:
                lines = f.read().split(b'\n')
            for n, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    key, data = rec['id'], rec['data']
                except (ValueError, KeyError, TypeError):
                    if n == len(lines) - 1:  # no newline after it: a write cut short by a kill
                        _logger.warning('%s: skipping a torn last record (%d bytes)', path, len(line))
                        continue
                    raise ValueError(f'{path}:{n + 1} is not a record line ({{"id": ..., "data": ...}}); the records '
                                     'folder is corrupt: rerun with --overwrite') from None
                out.setdefault(key, data)
        return out

    def open(self) -> RecordStore:
        """Open this rank's file for appending, first cutting a torn last line (no trailing newline) off."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b'\n'):
                keep = data.rfind(b'\n') + 1
                _logger.warning('%s: dropping a torn last record (%d bytes)', self.path, len(data) - keep)
                with open(self.path, 'r+b') as f:
                    f.truncate(keep)
                    f.flush()
                    os.fsync(f.fileno())
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self

    def append(self, key: Id, data: Any) -> None:
        """Append one record as a single ``write`` of a whole line, then ``fsync``."""
        if self._fd is None:
            raise RuntimeError('RecordStore.open() first')
        line = (json.dumps({'id': key, 'data': data}, separators=(',', ':'), allow_nan=True) + '\n').encode()
        view = memoryview(line)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# --------------------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------------------

def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(['git', *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(dist_name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist_name)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> dict[str, Any]:
    """Git SHA (and whether the tree had local changes), device and library versions, for the metrics JSON."""
    sha = _git('rev-parse', 'HEAD')
    status = _git('status', '--porcelain', '--untracked-files=no')
    if device.type == 'cuda':
        dev = {'type': 'cuda', 'name': torch.cuda.get_device_name(device), 'index': device.index}
    else:
        dev = {'type': 'cpu', 'name': platform.processor() or platform.machine(), 'threads': torch.get_num_threads()}
    versions = {'python': platform.python_version(), 'torch': torch.__version__}
    for name in ('torchvision', 'sam3', 'sam3-cradio', 'timm', 'numpy', 'pycocotools', 'opencv-python-headless'):
        versions[name] = _version(name)
    return {'git_sha': sha, 'git_dirty': bool(status) if status is not None else None, 'device': dev,
            'versions': versions, 'host': platform.node(), 'command': ' '.join(sys.argv)}


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, os.PathLike):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None  # strict JSON: NaN (an empty bucket) and inf become null
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return str(x)


# --------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------

@dataclass
class Report:
    """What a runner's ``finalize`` returns: JSON metrics, a markdown table, optional printed detail, and the
    headline numbers a side-by-side comparison shows."""

    metrics: dict[str, Any]
    table: str
    text: str = ''
    headline: dict[str, Any] = field(default_factory=dict)  # a few numbers for side-by-side tables


@dataclass
class EvalSpec:
    """One eval, as a runner describes it to :func:`run_eval`.

    Attributes:
        name: e.g. 'coco'.
        ids: every work unit's id (the dataset), before ``--limit``.
        fingerprint: JSON dict of what the records depend on (model, dataset, protocol options).
        make_worker: called once per rank with at least one unit to do; returns ``work(id) -> JSON data``.
        finalize: rank 0 only: ``(records {id: data} of the selected ids, selected ids) -> Report``.
        unit: progress-bar unit ('img', 'seq').
        title: first line of the markdown report.
    """

    name: str
    ids: Sequence[Id]
    fingerprint: dict[str, Any]
    make_worker: Callable[[DistContext], Callable[[Id], Any]]
    finalize: Callable[[dict[Id, Any], list[Id]], Report]
    unit: str = 'img'
    title: str = ''


def _check_run_file(path: Path, expected: dict[str, Any]) -> None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f'{path} is unreadable ({e}); rerun with --overwrite to start this output folder afresh') \
            from None
    if found != expected:
        a, b = found.get('fingerprint', {}), expected['fingerprint']
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if found.get('eval') != expected['eval']:
            diff = ['eval'] + diff
        details = ', '.join(f'{k}: {a.get(k, found.get(k))!r} -> {b.get(k, expected.get(k))!r}' for k in diff[:6])
        raise ValueError(f'{path.parent} holds records of a different run ({details}); use another --out folder, '
                         'or --overwrite to discard them')


def _prepare_out(out: Path, run_info: dict[str, Any], overwrite: bool) -> None:
    run_file = out / 'run.json'
    if overwrite:
        for name in ('records', 'run.json', 'metrics.json', 'metrics.md'):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if run_file.exists():
        _check_run_file(run_file, run_info)
    else:
        write_atomic(run_file, json.dumps(run_info, indent=1))


def run_eval(spec: EvalSpec, args: argparse.Namespace, ctx: DistContext | None = None,
             echo: Callable[[str], Any] | None = None) -> dict[str, Any] | None:
    """Run ``spec`` with the common options in ``args`` (``out``, ``limit``, ``overwrite``, ``device``,
    ``progress``, ``threads``); returns the metrics JSON on rank 0 and None on other ranks.

    Without ``ctx`` the process group (if any) is started here and closed at the end. ``echo`` (e.g. ``print``,
    from a command) receives the report's text and markdown table on rank 0.
    """
    out = Path(args.out)
    ids = sort_ids(list(spec.ids))
    if not ids:
        raise ValueError(f'{spec.name}: the dataset has no {spec.unit}s to evaluate')
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f'--limit must be a positive number, got {args.limit}')
        ids = ids[:args.limit]
    if getattr(args, 'threads', None):
        torch.set_num_threads(args.threads)
    own = ctx is None
    ctx = init_distributed(args.device) if own else ctx
    try:
        return _run(spec, args, ctx, out, ids, echo or _quiet)
    finally:
        if own:
            ctx.close()


def _quiet(text: str) -> None:
    pass


def _run(spec: EvalSpec, args: argparse.Namespace, ctx: DistContext, out: Path, ids: list[Id],
         echo: Callable[[str], Any]) -> dict[str, Any] | None:
    from tqdm.auto import tqdm

    # records made in bf16 on CUDA and in float32 on CPU differ slightly: never mix them in one folder
    run_info = _jsonable({'eval': spec.name, 'fingerprint': {**spec.fingerprint, 'device_type': ctx.device.type}})
    if ctx.is_main:
        _prepare_out(out, run_info, args.overwrite)
    ctx.barrier()
    if not ctx.is_main:
        _check_run_file(out / 'run.json', run_info)
    store = RecordStore(out, ctx.rank)
    done = store.read_all()
    ctx.barrier()  # every rank has read the same done set before anyone appends
    todo = [i for i in ids if i not in done]
    mine = todo[ctx.rank::ctx.world_size]
    if ctx.is_main:
        _logger.info('%s: %d %ss selected, %d already recorded in %s, %d to do on %d process(es)', spec.name,
                     len(ids), spec.unit, len(ids) - len(todo), out, len(todo), ctx.world_size)
    t0 = time.perf_counter()
    if mine:
        work = spec.make_worker(ctx)
        crash_after = int(os.environ.get(CRASH_ENV, '0') or 0)
        store.open()
        bar = tqdm(total=len(mine), unit=spec.unit, desc=f'{spec.name} rank {ctx.rank}/{ctx.world_size}',
                   disable=not (args.progress and ctx.is_main), dynamic_ncols=True, smoothing=0.05)
        try:
            for n, key in enumerate(mine, 1):
                store.append(key, _jsonable(work(key)))
                bar.update(1)
                if crash_after and n >= crash_after:
                    raise InjectedCrash(f'{CRASH_ENV}={crash_after}: stopping after {n} records')
        finally:
            bar.close()
            store.close()
            del work
    seconds = time.perf_counter() - t0
    ctx.barrier()
    if not ctx.is_main:
        return None
    records = store.read_all()
    missing = [i for i in ids if i not in records]
    if missing:
        raise RuntimeError(f'{len(missing)} of {len(ids)} {spec.unit}s have no record after all ranks finished '
                           f'(e.g. {missing[:5]}); rerun the same command to fill them in')
    selected = {i: records[i] for i in ids}
    report = spec.finalize(selected, ids)
    result = {
        'eval': spec.name, 'headline': report.headline, 'metrics': report.metrics, 'num_units': len(ids),
        'unit': spec.unit, 'limit': args.limit, 'world_size': ctx.world_size,
        'predicted_this_run': len(todo), 'seconds_rank0': round(seconds, 3),
        'config': _jsonable({k: v for k, v in vars(args).items() if k != 'func'}),
        'fingerprint': run_info['fingerprint'],
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        **environment(ctx.device),
    }
    result = _jsonable(result)
    write_atomic(out / 'metrics.json', json.dumps(result, indent=1, allow_nan=False))
    md = (f'{spec.title}\n\n' if spec.title else '') + report.table + '\n'
    write_atomic(out / 'metrics.md', md)
    if report.text:
        echo(report.text)
    echo(md)
    _logger.info('wrote %s and %s', out / 'metrics.json', out / 'metrics.md')
    return result


@dataclass
class ModelConfig:
    """One model of a (side-by-side) run: its label (the output subfolder when there are several), its checked
    :class:`~sam3_cradio.registry.ModelSpec`, and the options to build it (``backbone`` one name)."""

    label: str
    spec: ModelSpec
    args: argparse.Namespace


def resolve_model(args: argparse.Namespace) -> tuple[ModelSpec, list[str]]:
    """The checked model of one :class:`ModelConfig`'s options (``backbone`` one ``NAME[:WINDOW]``,
    ``window_size``, ``override``) and the hydra overrides left once ``backbone.image_size`` /
    ``backbone.window_size`` are folded into it (see :func:`sam3_cradio.build.resolve_build`)."""
    from ..build import resolve_build

    return resolve_build(args.backbone, args.window_size, None, list(args.override))


def _label(spec: ModelSpec) -> str:
    b = spec.backbone
    label = spec.name if spec.window == b.default_window else f'{spec.name}-w{spec.window}'
    return label if spec.resolution == b.image_size else f'{label}-{spec.resolution}px'


def model_configs(args: argparse.Namespace) -> list[ModelConfig]:
    """The models named by ``--backbone`` (one or several, each ``NAME`` or ``NAME:WINDOW``), each checked by the
    registry before anything is built or written. ``--window-size`` and ``--cradio-checkpoint`` apply to the
    C-RADIO backbones (the window to those named without one); given when no backbone takes them, they are an
    error (the registry's: PE's window is fixed). With several models each gets ``args.out / label``."""
    texts = args.backbone if isinstance(args.backbone, (list, tuple)) else [args.backbone]
    window = getattr(args, 'window_size', None)
    named = [parse_model(t) for t in texts]
    cradio_open = any(b.is_cradio and w is None for b, w in named)  # C-RADIO models --window-size applies to
    if args.cradio_checkpoint is not None and not any(b.is_cradio for b, _ in named):
        raise ValueError(f'--cradio-checkpoint applies to C-RADIO backbones; {", ".join(b.name for b, _ in named)} '
                         'take their weights from sam3.pt (--sam3-checkpoint)')
    out: list[ModelConfig] = []
    for b, w in named:
        if w is None and window is not None and (b.is_cradio or not cradio_open):
            w = window
        m = argparse.Namespace(**{**vars(args), 'backbone': b.name, 'window_size': w,
                                  'cradio_checkpoint': args.cradio_checkpoint if b.is_cradio else None})
        spec, _ = resolve_model(m)
        out.append(ModelConfig(_label(spec), spec, m))
    labels = [c.label for c in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f'--backbone names a model twice: {labels}')
    if len(out) > 1:
        for c in out:
            c.args.out = Path(args.out) / c.label
    return out


def run_models(args: argparse.Namespace, make_spec: Callable[[ModelConfig], EvalSpec], anchor: str = '',
               configs: Sequence[ModelConfig] | None = None, echo: Callable[[str], Any] | None = None
               ) -> dict[str, Any] | None:
    """Run one eval for every model of :func:`model_configs` (or ``configs``, already made from ``args``), one
    after the other on the same ranks, then (rank 0, several models) write ``<out>/comparison.{json,md}``: the
    models' headline metrics side by side. ``echo`` as in :func:`run_eval`."""
    echo = echo or _quiet
    configs = list(configs) if configs is not None else model_configs(args)
    if getattr(args, 'threads', None):
        torch.set_num_threads(args.threads)
    ctx = init_distributed(args.device)
    try:
        results = {c.label: run_eval(make_spec(c), c.args, ctx, echo) for c in configs}
    finally:
        ctx.close()
    if not ctx.is_main:
        return None
    if len(configs) == 1:
        return results[configs[0].label]
    keys = list(dict.fromkeys(k for r in results.values() for k in r['headline']))
    rows = [[label] + [r['headline'].get(k) for k in keys] for label, r in results.items()]
    first = next(iter(results.values()))
    table = markdown_table(['model', *keys], rows, '{:.2f}')
    md = f'## {first["eval"]}: side by side ({first["num_units"]} {first["unit"]}s each)\n\n{table}\n'
    md += '\n' + '\n'.join(f'- {c.label}: {c.spec.title()}' for c in configs) + '\n'
    if anchor:
        md += f'\n{anchor}\n'
    out = Path(args.out)
    titles = {c.label: c.spec.title() for c in configs}
    comparison = _jsonable({'eval': first['eval'], 'models': {k: {
        'title': titles[k], 'headline': r['headline'], 'out': str(Path(r['config']['out']))}
        for k, r in results.items()}, 'git_sha': first['git_sha']})
    write_atomic(out / 'comparison.json', json.dumps(comparison, indent=1, allow_nan=False))
    write_atomic(out / 'comparison.md', md)
    echo(md)
    _logger.info('wrote %s', out / 'comparison.md')
    return comparison


# --------------------------------------------------------------------------------------------------------------
# Command-line pieces
# --------------------------------------------------------------------------------------------------------------

def add_run_args(p: argparse.ArgumentParser) -> None:
    """``--out``, ``--limit``, ``--overwrite``, ``--device``, ``--no-progress``, ``--threads``."""
    g = p.add_argument_group('run')
    g.add_argument('--out', type=Path, required=True,
                   help='output folder: records/ (streamed predictions), run.json, metrics.json, metrics.md; '
                        'rerunning the same command resumes')
    g.add_argument('--limit', type=int, default=None, help='only the first N units (sorted ids), for quick runs')
    g.add_argument('--overwrite', action='store_true', help='discard records already in --out')
    g.add_argument('--device', default=None, help='cpu, cuda or cuda:N (default: cuda:LOCAL_RANK if available)')
    g.add_argument('--no-progress', dest='progress', action='store_false', help='no progress bar')
    g.add_argument('--threads', type=int, default=None, help='torch CPU threads per process (default: torch decides)')


def add_model_args(p: argparse.ArgumentParser, default_backbone: str = 'cradio_v4_h') -> None:
    """The model options every evaluation shares (same names as the ``sam3-cradio`` commands')."""
    cradio = [n for n in list_backbones() if get_backbone(n).is_cradio]
    g = p.add_argument_group('model')
    g.add_argument('--backbone', nargs='+', default=[default_backbone], metavar='NAME[:WINDOW]',
                   help=f'one or several of {", ".join(list_backbones())} (pe: SAM3\'s own encoder); several '
                        '(e.g. pe cradio_v4_h cradio_v4_h:12) are evaluated one after the other, each into '
                        '--out/<name>[-w<window>], and compared side by side in --out/comparison.md')
    g.add_argument('--window-size', type=window_arg, default=None, metavar='global|N',
                   help=f'ViTDet window in tokens, or "global", for the C-RADIO backbones ({", ".join(cradio)}) '
                        'named without one; it must divide the token grid (72 at 1152 px: 6, 8, 9, 12, 18, 24). '
                        "Default: global. PE's window is fixed (24)")
    g.add_argument('--sam3-checkpoint', default=None, help='local sam3.pt (default: HF facebook/sam3)')
    g.add_argument('--cradio-checkpoint', default=None,
                   help='local C-RADIO .pth.tar for the C-RADIO backbones (default: the release)')
    g.add_argument('--random-weights', action='store_true', help='random SAM3 weights (tests; no downloads)')
    g.add_argument('--override', action='append', default=[], metavar='KEY=VALUE',
                   help='hydra override of the model config (repeatable), e.g. backbone.image_size=768')
    g.add_argument('--seed', type=int, default=0, help='torch seed set before building (random weights)')


def _checkpoint(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def model_fingerprint(args: argparse.Namespace) -> dict[str, Any]:
    """What the predictions depend on, from one :class:`ModelConfig`'s options: the resolved model (backbone,
    window as 'global' or tokens, resolution), its weights and overrides."""
    spec, overrides = resolve_model(args)
    return {'backbone': spec.name, 'window_size': spec.window, 'resolution': spec.resolution,
            'pretrained': not args.random_weights, 'overrides': overrides,
            'seed': args.seed if args.random_weights else None,
            'sam3_checkpoint': _checkpoint(args.sam3_checkpoint),
            'cradio_checkpoint': _checkpoint(args.cradio_checkpoint)}


def build_model(args: argparse.Namespace, mode: str, device: torch.device, interactive: bool = True
                ) -> torch.nn.Module:
    """``build_sam3`` of one :class:`ModelConfig`'s options, seeded, as if in a single process."""
    from ..build import build_sam3

    spec, overrides = resolve_model(args)
    torch.manual_seed(args.seed)
    with single_process_env():
        return build_sam3(spec, mode=mode, overrides=overrides, pretrained=not args.random_weights,
                          sam3_checkpoint=args.sam3_checkpoint, cradio_checkpoint=args.cradio_checkpoint,
                          interactive=interactive, device=device)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = '{:.1f}') -> str:
    """A markdown table; floats through ``fmt`` (NaN and negative pycocotools placeholders as '-')."""
    def cell(v: Any) -> str:
        if v is None:
            return '-'
        if isinstance(v, float):
            return '-' if v != v else fmt.format(v)
        return str(v)

    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines)
