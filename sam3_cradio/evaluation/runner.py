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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cli import window_arg
from ..files import write_atomic
from ..registry import ModelSpec, get_backbone, list_backbones, parse_model
from .guards import FolderLock, InterruptGuard, RunInterrupted

__all__ = ['DistContext', 'RecordStore', 'RecordIndex', 'Report', 'EvalSpec', 'InjectedCrash', 'RunInterrupted',
           'init_distributed', 'run_eval', 'run_models', 'model_configs', 'ModelConfig', 'resolve_model',
           'check_model_config', 'add_run_args', 'add_model_args', 'build_model', 'model_fingerprint',
           'environment', 'sort_ids', 'markdown_table', 'CRASH_ENV']

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

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable) on every rank; ``obj`` itself in a single process."""
        if not self.initialized:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if dist.get_backend() == 'nccl' else None)
        return box[0]

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
    per unit. Each rank appends only to its own file; :meth:`read_all` and :meth:`index` read every rank's file.

    A line is complete once its newline is written (each record is one ``write``): the one line of a file that
    lacks it was cut short by a kill, and is skipped (and cut off when the file is reopened for appending)."""

    def __init__(self, root: str | os.PathLike, rank: int = 0) -> None:
        self.dir = Path(root) / 'records'
        self.path = self.dir / f'rank{rank:05d}.jsonl'
        self._fd: int | None = None

    def _lines(self) -> Iterator[tuple[Path, int, bytes]]:
        """``(file, offset, line)`` of every complete line of every rank's file, files in name order."""
        for path in sorted(self.dir.glob('rank*.jsonl')):
            with open(path, 'rb') as f:
                offset = 0
                for line in f:
                    if not line.endswith(b'\n'):  # no newline after it: a write cut short by a kill
                        _logger.warning('%s: skipping a torn last record (%d bytes)', path, len(line))
                        break
                    yield path, offset, line
                    offset += len(line)

    @staticmethod
    def _parse(path: Path, offset: int, line: bytes) -> tuple[Id, Any]:
        try:
            rec = json.loads(line)
            return rec['id'], rec['data']
        except (ValueError, KeyError, TypeError):
            raise ValueError(f'{path} (byte {offset}) is not a record line ({{"id": ..., "data": ...}}); the '
                             'records folder is corrupt: rerun with --overwrite') from None

    def read_all(self) -> dict[Id, Any]:
        """``{id: data}`` over all record files; the first record of an id wins. A torn last line is skipped."""
        out: dict[Id, Any] = {}
        for path, offset, line in self._lines():
            if line.strip():
                key, data = self._parse(path, offset, line)
                out.setdefault(key, data)
        return out

    def index(self) -> RecordIndex:
        """The records as a read-on-demand mapping (only ids and file offsets in memory): first record wins."""
        where: dict[Id, tuple[Path, int, int]] = {}
        decoder = json.JSONDecoder()
        for path, offset, line in self._lines():
            if not line.strip():
                continue
            text = line.decode('utf-8', errors='replace')
            try:  # the id alone, without parsing the (large) data: lines start {"id":<id>,"data":
                if not text.startswith('{"id":'):
                    raise ValueError
                key = decoder.raw_decode(text, 6)[0]
            except ValueError:
                key = self._parse(path, offset, line)[0]
            if isinstance(key, (int, str)) and not isinstance(key, bool):
                where.setdefault(key, (path, offset, len(line)))
        return RecordIndex(where)

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


class RecordIndex(Mapping):
    """``{id: data}`` of a run's records, each read from its file when asked for (see :meth:`RecordStore.index`).
    What ``finalize`` receives: a folder of many large records never has to fit in memory at once."""

    def __init__(self, where: dict[Id, tuple[Path, int, int]]) -> None:
        self._where = where

    def __getitem__(self, key: Id) -> Any:
        path, offset, length = self._where[key]
        with open(path, 'rb') as f:
            f.seek(offset)
            line = f.read(length)
        return RecordStore._parse(path, offset, line)[1]

    def __contains__(self, key: object) -> bool:
        return key in self._where

    def __iter__(self) -> Iterator[Id]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def restrict(self, ids: Iterable[Id]) -> RecordIndex:
        """The records of ``ids`` only, in that order."""
        return RecordIndex({i: self._where[i] for i in ids})


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
    """One eval (or job), as a runner describes it to :func:`run_eval`.

    Attributes:
        name: e.g. 'coco'.
        ids: every work unit's id (the dataset), before ``--limit``.
        fingerprint: JSON dict of what the records depend on (model, dataset, protocol options).
        make_worker: called once per rank with at least one unit to do; returns ``work(id) -> JSON data``.
        finalize: rank 0 only: ``(records {id: data} of the selected ids, selected ids) -> Report``. ``records``
            is a read-on-demand mapping (:class:`RecordIndex`).
        unit: progress-bar unit ('img', 'seq').
        title: first line of the markdown report.
        make_stream: instead of ``make_worker``: ``(ctx, ids) -> iterator of (id, JSON data)`` over this rank's
            units in order, for work that loads ahead (a DataLoader) or batches units.
        sizes: ``{id: n}`` when a unit holds several ``unit``s (a batch of images): the progress bar and the
            interrupt message count those.
        report_name: ``<out>/<report_name>.json`` / ``.md`` (default ``metrics``).
        outputs: further names under ``<out>`` that ``finalize`` writes; ``--overwrite`` removes them too.
    """

    name: str
    ids: Sequence[Id]
    fingerprint: dict[str, Any]
    make_worker: Callable[[DistContext], Callable[[Id], Any]] | None
    finalize: Callable[[Mapping[Id, Any], list[Id]], Report]
    unit: str = 'img'
    title: str = ''
    make_stream: Callable[[DistContext, list[Id]], Iterable[tuple[Id, Any]]] | None = None
    sizes: Mapping[Id, int] | None = None
    report_name: str = 'metrics'
    outputs: Sequence[str] = ()


_PLURALS = {'img': 'images', 'seq': 'sequences'}


def _plural(unit: str) -> str:
    return _PLURALS.get(unit, unit + 's')


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


def _has_records(out: Path) -> bool:
    return any(p.stat().st_size > 0 for p in (out / 'records').glob('rank*.jsonl'))


def _prepare_out(out: Path, run_info: dict[str, Any], overwrite: bool, names: Sequence[str]) -> bool:
    """Rank 0, holding the folder's lock: start ``out`` afresh (``overwrite``), or check that its records are of
    this run. A ``run.json`` of a run that recorded nothing (it failed or was stopped before its first unit)
    protects nothing and is replaced, so that it never blocks the corrected command. Returns whether it wrote
    ``run.json``."""
    run_file = out / 'run.json'
    if overwrite:
        for name in ('records', 'run.json', *names):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if run_file.exists():
        if _has_records(out):
            _check_run_file(run_file, run_info)
            return False
        _logger.info('%s: replacing the run.json of a run that recorded nothing', out)
    write_atomic(run_file, json.dumps(run_info, indent=1))
    return True


def _undo_start(out: Path, made_folder: bool, wrote_run_file: bool) -> None:
    """After a run that failed or was stopped before its first record: leave ``out`` as it was found."""
    if _has_records(out):
        return
    if wrote_run_file:
        (out / 'run.json').unlink(missing_ok=True)
    if made_folder:
        for p in (out / 'records', out):
            with contextlib.suppress(OSError):  # not empty: something else is there; keep it
                p.rmdir()


def run_eval(spec: EvalSpec, args: argparse.Namespace, ctx: DistContext | None = None,
             echo: Callable[[str], Any] | None = None) -> dict[str, Any] | None:
    """Run ``spec`` with the common options in ``args`` (``out``, ``limit``, ``overwrite``, ``device``,
    ``progress``, ``threads``); returns the metrics JSON on rank 0 and None on other ranks.

    Without ``ctx`` the process group (if any) is started here and closed at the end. ``echo`` (e.g. ``print``,
    from a command) receives the report's text and markdown table on rank 0.

    Rank 0 holds ``<out>/.lock`` for the length of the run: a second run into the same folder is refused
    (:class:`~sam3_cradio.evaluation.guards.FolderBusy`, a ValueError naming the holder). Ctrl-C stops the run
    after at most the unit in progress, with every finished record kept, and raises
    :class:`~sam3_cradio.evaluation.guards.RunInterrupted` ("interrupted after N of M ...; run the same command
    to resume").
    """
    out = Path(args.out)
    ids = sort_ids(list(spec.ids))
    if not ids:
        raise ValueError(f'{spec.name}: the dataset has no {_plural(spec.unit)} to evaluate')
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


def _start(spec: EvalSpec, args: argparse.Namespace, ctx: DistContext, out: Path, run_info: dict[str, Any],
           lock: FolderLock | None) -> bool:
    """Lock and prepare ``out`` on rank 0; every rank then raises rank 0's error, if any, so that a refused run
    ends on all ranks with the same line instead of leaving the others waiting. Returns whether rank 0 wrote
    ``run.json``."""
    error: Exception | None = None
    wrote = False
    if ctx.is_main:
        try:
            lock.acquire()
            wrote = _prepare_out(out, run_info, args.overwrite, (f'{spec.report_name}.json',
                                                                 f'{spec.report_name}.md', *spec.outputs))
        except (ValueError, FileNotFoundError, OSError) as e:
            error = e
    message = ctx.broadcast(None if error is None else str(error))
    if error is not None:
        raise error
    if message is not None:
        raise ValueError(message)
    if not ctx.is_main:
        _check_run_file(out / 'run.json', run_info)
    return wrote


def _run(spec: EvalSpec, args: argparse.Namespace, ctx: DistContext, out: Path, ids: list[Id],
         echo: Callable[[str], Any]) -> dict[str, Any] | None:
    # records made in bf16 on CUDA and in float32 on CPU differ slightly: never mix them in one folder
    run_info = _jsonable({'eval': spec.name, 'fingerprint': {**spec.fingerprint, 'device_type': ctx.device.type}})
    lock = FolderLock(out) if ctx.is_main else None
    store = RecordStore(out, ctx.rank)
    sizes = spec.sizes or {}
    total = sum(sizes.get(i, 1) for i in ids)
    finished = wrote = False
    made = ctx.is_main and not out.exists()
    try:
        with InterruptGuard() as guard:
            try:
                wrote = _start(spec, args, ctx, out, run_info, lock)
                seconds, predicted = _predict(spec, args, ctx, out, ids, store, guard)
                finished = True
                ctx.barrier()
                if not ctx.is_main:
                    return None
                return _finish(spec, args, ctx, out, ids, store, run_info, seconds, predicted, echo)
            except KeyboardInterrupt:
                guard.quiet()  # a second Ctrl-C must not cut the cleanup short
                if finished:
                    raise RunInterrupted(f'interrupted while writing the results (all {total} {_plural(spec.unit)} '
                                         f'are recorded in {out}); run the same command to write them') from None
                selected = set(ids)
                done = sum(sizes.get(i, 1) for i in store.index() if i in selected)
                raise RunInterrupted(f'interrupted after {done} of {total} {_plural(spec.unit)} ({out}); run the '
                                     'same command to resume') from None
    finally:
        if lock is not None and lock.held:
            lock.release()
            if not finished:
                _undo_start(out, made, wrote)


def _predict(spec: EvalSpec, args: argparse.Namespace, ctx: DistContext, out: Path, ids: list[Id],
             store: RecordStore, guard: InterruptGuard) -> tuple[float, int]:
    """This rank's share of the units not yet recorded, streamed to its record file. Returns (seconds, number of
    units to do over all ranks)."""
    from tqdm.auto import tqdm

    done = store.index()
    ctx.barrier()  # every rank has read the same done set before anyone appends
    todo = [i for i in ids if i not in done]
    mine = todo[ctx.rank::ctx.world_size]
    sizes = spec.sizes or {}
    if ctx.is_main:
        n_ids, n_todo = (sum(sizes.get(i, 1) for i in x) for x in (ids, todo))
        _logger.info('%s: %d %s selected, %d already recorded in %s, %d to do on %d process(es)', spec.name,
                     n_ids, _plural(spec.unit), n_ids - n_todo, out, n_todo, ctx.world_size)
    t0 = time.perf_counter()
    if not mine:
        return time.perf_counter() - t0, len(todo)
    if spec.make_stream is not None:
        stream = spec.make_stream(ctx, mine)
    else:
        work = spec.make_worker(ctx)
        stream = ((key, work(key)) for key in mine)
    guard.check()  # a Ctrl-C swallowed while the model was built
    crash_after = int(os.environ.get(CRASH_ENV, '0') or 0)
    store.open()
    bar = tqdm(total=sum(sizes.get(i, 1) for i in mine), unit=spec.unit,
               desc=f'{spec.name} rank {ctx.rank}/{ctx.world_size}',
               disable=not (args.progress and ctx.is_main), dynamic_ncols=True, smoothing=0.05)
    expected = iter(mine)
    try:
        for n, (key, data) in enumerate(stream, 1):
            if key != next(expected, None):
                raise RuntimeError(f'{spec.name}: the work stream gave unit {key!r} out of order')
            store.append(key, _jsonable(data))
            bar.update(sizes.get(key, 1))
            guard.check()  # stop after this unit, even if the KeyboardInterrupt was swallowed inside it
            if crash_after and n >= crash_after:
                raise InjectedCrash(f'{CRASH_ENV}={crash_after}: stopping after {n} records')
    finally:
        bar.close()
        store.close()
        close = getattr(stream, 'close', None)
        if close is not None:
            close()  # a generator's cleanup (DataLoader workers) now, not at garbage collection
    return time.perf_counter() - t0, len(todo)


def _finish(spec: EvalSpec, args: argparse.Namespace, ctx: DistContext, out: Path, ids: list[Id],
            store: RecordStore, run_info: dict[str, Any], seconds: float, predicted: int,
            echo: Callable[[str], Any]) -> dict[str, Any]:
    records = store.index()
    missing = [i for i in ids if i not in records]
    if missing:
        raise RuntimeError(f'{len(missing)} of {len(ids)} {_plural(spec.unit)} have no record after all ranks '
                           f'finished (e.g. {missing[:5]}); rerun the same command to fill them in')
    report = spec.finalize(records.restrict(ids), ids)
    result = {
        'eval': spec.name, 'headline': report.headline, 'metrics': report.metrics, 'num_units': len(ids),
        'unit': spec.unit, 'limit': args.limit, 'world_size': ctx.world_size,
        'predicted_this_run': predicted, 'seconds_rank0': round(seconds, 3),
        'config': _jsonable({k: v for k, v in vars(args).items() if k != 'func'}),
        'fingerprint': run_info['fingerprint'],
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        **environment(ctx.device),
    }
    result = _jsonable(result)
    name = spec.report_name
    write_atomic(out / f'{name}.json', json.dumps(result, indent=1, allow_nan=False))
    md = (f'{spec.title}\n\n' if spec.title else '') + report.table + '\n'
    write_atomic(out / f'{name}.md', md)
    if report.text:
        echo(report.text)
    echo(md)
    _logger.info('wrote %s and %s', out / f'{name}.json', out / f'{name}.md')
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


def check_model_config(spec: ModelSpec, overrides: Sequence[str]) -> None:
    """Compose and resolve the model config of ``spec`` with the hydra ``overrides``, as the build will: an unknown
    key (with the nearest known one), a malformed override or a value of the wrong type is a one-line ValueError
    here, before any output is written or any model built."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..build import compose_config

    # the build fills the tokenizer's vocabulary path, the one mandatory value the registry does not
    cfg = compose_config(spec, ['bpe_path=filled-by-the-build', *overrides])
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        raise ValueError(f'the {spec.name} config does not resolve with overrides {list(overrides)}: '
                         f'{str(e).splitlines()[0]}') from None


def _label(spec: ModelSpec) -> str:
    b = spec.backbone
    label = spec.name if spec.window == b.default_window else f'{spec.name}-w{spec.window}'
    return label if spec.resolution == b.image_size else f'{label}-{spec.resolution}px'


def model_configs(args: argparse.Namespace) -> list[ModelConfig]:
    """The models named by ``--backbone`` (one or several, each ``NAME`` or ``NAME:WINDOW``), each checked by the
    registry before anything is built or written. ``--window-size`` and ``--cradio-checkpoint`` apply to the
    C-RADIO backbones (the window to those named without one); given when no backbone takes them, they are an
    error (the registry's: PE's window is fixed). Each model's hydra overrides are composed into its config here
    (:func:`check_model_config`). With several models each gets ``args.out / label``."""
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
        spec, overrides = resolve_model(m)
        check_model_config(spec, overrides)
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
                   help='hydra override of the model config (repeatable), e.g. backbone.image_size=768 (the input '
                        'size: checked like --resolution elsewhere, the error names the nearest valid size)')
    g.add_argument('--seed', type=int, default=0, help='torch seed set before building (random weights)')
    g.add_argument('--dtype', choices=('fp32', 'bf16'), default='fp32',
                   help="bf16: the trunk's weights in bfloat16 and the model under bf16 autocast (CPU and CUDA); "
                        'its records differ slightly from fp32 ones, so the two never share an --out folder')
    g.add_argument('--trunk-runtime', choices=('torch', 'onnxruntime', 'openvino'), default=None,
                   help='run the trunk in torch (default) or, from --trunk-model, in onnxruntime / OpenVINO on the CPU')
    g.add_argument('--trunk-model', type=Path, default=None, metavar='FILE.onnx',
                   help='the trunk exported by "sam3-cradio export" for this backbone, window and resolution')


def _checkpoint(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def model_fingerprint(args: argparse.Namespace) -> dict[str, Any]:
    """What the predictions depend on, from one :class:`ModelConfig`'s options: the resolved model (backbone,
    window as 'global' or tokens, resolution), its weights and overrides."""
    spec, overrides = resolve_model(args)
    out = {'backbone': spec.name, 'window_size': spec.window, 'resolution': spec.resolution,
           'pretrained': not args.random_weights, 'overrides': overrides,
           'seed': args.seed if args.random_weights else None,
           'sam3_checkpoint': _checkpoint(args.sam3_checkpoint),
           'cradio_checkpoint': _checkpoint(args.cradio_checkpoint)}
    # only when set: folders of float32 torch runs keep the fingerprint they were made with
    out.update(_build_extras(args, for_fingerprint=True))
    return out


def _build_extras(args: argparse.Namespace, for_fingerprint: bool = False) -> dict[str, Any]:
    """``build_sam3``'s precision and trunk-runtime options, when ``args`` sets them to other than the defaults."""
    extra: dict[str, Any] = {}
    dtype = getattr(args, 'dtype', None) or 'fp32'
    if dtype != 'fp32':
        extra['dtype'] = str(dtype)
    runtime = getattr(args, 'trunk_runtime', None)
    if runtime not in (None, 'torch'):
        extra['trunk_runtime'] = runtime
    model = getattr(args, 'trunk_model', None)
    if model is not None:
        extra['trunk_model'] = _checkpoint(model) if for_fingerprint else model
    return extra


def build_model(args: argparse.Namespace, mode: str, device: torch.device, interactive: bool = True
                ) -> torch.nn.Module:
    """``build_sam3`` of one :class:`ModelConfig`'s options, seeded, as if in a single process."""
    from ..build import build_sam3

    spec, overrides = resolve_model(args)
    extra = _build_extras(args)
    torch.manual_seed(args.seed)
    with single_process_env():
        return build_sam3(spec, mode=mode, overrides=overrides, pretrained=not args.random_weights,
                          sam3_checkpoint=args.sam3_checkpoint, cradio_checkpoint=args.cradio_checkpoint,
                          interactive=interactive, device=device, **extra)


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
