"""The loop every evaluation and folder job shares: shard over torchrun ranks, predict, stream one JSON record per
unit to disk, resume, merge once, report; several models one after the other, compared side by side.

The pieces it stands on have modules of their own: processes (:mod:`.distributed`), records (:mod:`.records`),
the models of a run (:mod:`.models`), provenance and tables (:mod:`sam3_cradio.reporting`). How a run, a resume and
a side-by-side comparison work: ``docs/evaluation.md``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files import write_atomic
from ..reporting import Report, environment, jsonable
from .distributed import DistContext, init_distributed
from .guards import FolderLock, InterruptGuard, RunInterrupted
from .records import Id, RecordStore, sort_ids

__all__ = ['RunOptions', 'EvalSpec', 'InjectedCrash', 'RunInterrupted', 'run_eval', 'quiet', 'CRASH_ENV']

_logger = logging.getLogger(__name__)

CRASH_ENV = 'SAM3C_EVAL_CRASH_AFTER'

class InjectedCrash(RuntimeError):
    """Raised by the ``SAM3C_EVAL_CRASH_AFTER`` test hook."""


@dataclass(frozen=True)
class RunOptions:
    """Where a run writes and how it goes: what ``--out``, ``--limit``, ``--overwrite``, ``--device``,
    ``--no-progress`` and ``--threads`` say.

    Attributes:
        out: the output folder (records/, run.json, the report).
        limit: only the first N units (sorted ids).
        overwrite: discard what an earlier run left in ``out``.
        device: 'cpu', 'cuda' or 'cuda:N'; None: ``cuda:LOCAL_RANK`` when available.
        progress: show a progress bar (rank 0).
        threads: torch CPU threads per process (None: torch decides).
        config: the command's own options, recorded under ``config`` in the report JSON.
    """

    out: Path
    limit: int | None = None
    overwrite: bool = False
    device: str | None = None
    progress: bool = True
    threads: int | None = None
    config: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> RunOptions:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """What the report records: these options and the command's."""
        own = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != 'config'}
        return jsonable({**self.config, **own})

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
    own = RecordStore(out, 0).path  # this rank's (0) own file, opened but empty: never another rank's
    if own.exists() and own.stat().st_size == 0:
        own.unlink()
    if wrote_run_file:
        (out / 'run.json').unlink(missing_ok=True)
    if made_folder:
        for p in (out / 'records', out):
            with contextlib.suppress(OSError):  # not empty: something else is there; keep it
                p.rmdir()


def run_eval(spec: EvalSpec, run: RunOptions, ctx: DistContext | None = None,
             echo: Callable[[str], Any] | None = None) -> dict[str, Any] | None:
    """Run ``spec`` with the options ``run``; returns the metrics JSON on rank 0 and None on other ranks.

    Without ``ctx`` the process group (if any) is started here and closed at the end. ``echo`` (e.g. ``print``,
    from a command) receives the report's text and markdown table on rank 0.

    Rank 0 holds ``<out>/.lock`` for the length of the run: a second run into the same folder is refused
    (:class:`~sam3_cradio.evaluation.guards.FolderBusy`, a ValueError naming the holder). Ctrl-C stops the run
    after at most the unit in progress, with every finished record kept, and raises
    :class:`~sam3_cradio.evaluation.guards.RunInterrupted` ("interrupted after N of M ...; run the same command
    to resume").
    """
    out = Path(run.out)
    ids = sort_ids(list(spec.ids))
    if not ids:
        raise ValueError(f'{spec.name}: the dataset has no {_plural(spec.unit)} to evaluate')
    if run.limit is not None:
        if run.limit < 1:
            raise ValueError(f'--limit must be a positive number, got {run.limit}')
        ids = ids[:run.limit]
    if run.threads:
        import torch

        torch.set_num_threads(run.threads)
    own = ctx is None
    ctx = init_distributed(run.device) if own else ctx
    try:
        return _run(spec, run, ctx, out, ids, echo or quiet)
    finally:
        if own:
            ctx.close()


def quiet(text: str) -> None:
    """An ``echo`` that prints nothing."""
    pass


def _start(spec: EvalSpec, run: RunOptions, ctx: DistContext, out: Path, run_info: dict[str, Any],
           lock: FolderLock | None) -> bool:
    """Lock and prepare ``out`` on rank 0; every rank then raises rank 0's error, if any, so that a refused run
    ends on all ranks with the same line instead of leaving the others waiting. Returns whether rank 0 wrote
    ``run.json``."""
    error: Exception | None = None
    wrote = False
    if ctx.is_main:
        try:
            lock.acquire()
            wrote = _prepare_out(out, run_info, run.overwrite, (f'{spec.report_name}.json',
                                                                 f'{spec.report_name}.md', *spec.outputs))
        except (ValueError, FileNotFoundError, OSError) as e:
            error = e
    message = ctx.broadcast(None if error is None else str(error))
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError):  # a one-line error, not a traceback
        raise ValueError(f'cannot write in the output folder {out} ({type(error).__name__}: {error})') from None
    if error is not None:
        raise error
    if message is not None:
        raise ValueError(message)
    if not ctx.is_main:
        _check_run_file(out / 'run.json', run_info)
    return wrote


def _run(spec: EvalSpec, run: RunOptions, ctx: DistContext, out: Path, ids: list[Id],
         echo: Callable[[str], Any]) -> dict[str, Any] | None:
    # records made in bf16 on CUDA and in float32 on CPU differ slightly: never mix them in one folder
    run_info = jsonable({'eval': spec.name, 'fingerprint': {**spec.fingerprint, 'device_type': ctx.device.type}})
    lock = FolderLock(out) if ctx.is_main else None
    store = RecordStore(out, ctx.rank)
    sizes = spec.sizes or {}
    total = sum(sizes.get(i, 1) for i in ids)
    finished = wrote = False
    made = ctx.is_main and not out.exists()
    try:
        with InterruptGuard() as guard:
            try:
                wrote = _start(spec, run, ctx, out, run_info, lock)
                seconds, predicted = _predict(spec, run, ctx, out, ids, store, guard)
                finished = True
                ctx.barrier()
                if not ctx.is_main:
                    return None
                return _finish(spec, run, ctx, out, ids, store, run_info, seconds, predicted, echo)
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


def _predict(spec: EvalSpec, run: RunOptions, ctx: DistContext, out: Path, ids: list[Id],
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
    bar = tqdm(total=sum(sizes.get(i, 1) for i in mine), unit=spec.unit,
               desc=f'{spec.name} rank {ctx.rank}/{ctx.world_size}',
               disable=not (run.progress and ctx.is_main), dynamic_ncols=True, smoothing=0.05)
    expected = iter(mine)
    try:
        for n, (key, data) in enumerate(stream, 1):
            if key != next(expected, None):
                raise RuntimeError(f'{spec.name}: the work stream gave unit {key!r} out of order')
            if n == 1:  # opened with the first record: a stream that fails first (building its model) leaves none
                store.open()
            store.append(key, jsonable(data))
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


def _finish(spec: EvalSpec, run: RunOptions, ctx: DistContext, out: Path, ids: list[Id],
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
        'unit': spec.unit, 'limit': run.limit, 'world_size': ctx.world_size,
        'predicted_this_run': predicted, 'seconds_rank0': round(seconds, 3),
        'config': run.to_json(),
        'fingerprint': run_info['fingerprint'],
        'created': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        **environment(ctx.device),
    }
    result = jsonable(result)
    name = spec.report_name
    write_atomic(out / f'{name}.json', json.dumps(result, indent=1, allow_nan=False))
    md = (f'{spec.title}\n\n' if spec.title else '') + report.table + '\n'
    write_atomic(out / f'{name}.md', md)
    if report.text:
        echo(report.text)
    echo(md)
    _logger.info('wrote %s and %s', out / f'{name}.json', out / f'{name}.md')
    return result
