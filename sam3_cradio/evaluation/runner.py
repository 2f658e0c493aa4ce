"""The loop every eval runner shares: shard, predict, stream records to disk, resume, merge once, report.

A run is a list of work units (an image, an image file with several phrases, a video sequence), each with a
JSON id (int or str). :func:`run_eval`:

1. sorts the ids deterministically and keeps the first ``--limit`` of them;
2. reads the records already in ``<out>/records/*.jsonl`` (from an interrupted run, any number of ranks) and
   skips those ids;
3. gives rank ``r`` of ``W`` the units ``todo[r::W]`` (``torchrun`` sets ``RANK`` / ``WORLD_SIZE``; one process
   otherwise);
4. appends one JSON line per unit to its own ``records/rank{r:05d}.jsonl`` as soon as the unit is done (one
   ``write`` per line, then ``fsync``; a line cut short by a kill is dropped when the file is reopened), with a
   tqdm bar (units/s, ETA) on rank 0;
5. waits for every rank, then rank 0 alone reads every record file, keeps the first record of each id, checks that
   every expected id is there (none missed, none twice), and hands them to the runner's ``finalize``, which feeds
   the metric once;
6. writes ``metrics.json`` (metrics, config, git SHA, device, versions) and ``metrics.md`` (a short table).

Records of ids outside the current selection (e.g. of an earlier run without ``--limit``) are kept on disk and
ignored. ``<out>/run.json`` holds the run's fingerprint (model, dataset, protocol options, CPU or CUDA); a rerun
with another fingerprint into the same folder is refused, so records of two different models never mix.

Several models in one command (``--backbone pe cradio_v4_h cradio_v4_h:12``, :func:`run_models`) run one after
the other on the same ranks, each into ``<out>/<label>/`` as above, then rank 0 writes ``<out>/comparison.md``
and ``comparison.json`` with their headline numbers side by side.

``torch.distributed`` is used only when ``WORLD_SIZE > 1``: gloo on CPU, nccl on CUDA (device ``cuda:LOCAL_RANK``);
it only synchronises the ranks, data goes through the record files (so several machines need a shared ``--out``).

Test hook: with ``SAM3C_EVAL_CRASH_AFTER=k`` in the environment, a process raises :class:`InjectedCrash` right
after writing its k-th record, as if it had been killed there.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ..cradio import parse_window_size

__all__ = ['DistContext', 'RecordStore', 'Report', 'EvalSpec', 'InjectedCrash', 'init_distributed', 'run_eval',
           'run_models', 'model_configs', 'ModelConfig',
           'add_run_args', 'add_model_args', 'parse_window', 'build_model', 'model_fingerprint', 'environment',
           'sort_ids',
           'markdown_table', 'cli', 'CRASH_ENV']

_logger = logging.getLogger(__name__)

Id = Union[int, str]
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


def init_distributed(device: Optional[str] = None) -> DistContext:
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

def sort_ids(ids: Sequence[Id]) -> List[Id]:
    """Unique ids in a fixed order: ints before strs, each ascending."""
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, (int, str))]
    if bad:
        raise TypeError(f'record ids must be int or str (JSON keys), got e.g. {bad[0]!r}')
    return sorted(set(ids), key=lambda i: (isinstance(i, str), i))


class RecordStore:
    """JSON-lines records of one run: ``<root>/records/rank{r:05d}.jsonl``, one line ``{"id": ..., "data": ...}``
    per unit. Each rank appends only to its own file; :meth:`read_all` reads every rank's file."""

    def __init__(self, root: Union[str, os.PathLike], rank: int = 0) -> None:
        self.dir = Path(root) / 'records'
        self.path = self.dir / f'rank{rank:05d}.jsonl'
        self._fd: Optional[int] = None

    def read_all(self) -> Dict[Id, Any]:
        """``{id: data}`` over all record files; the first record of an id wins. A torn last line is skipped."""
        out: Dict[Id, Any] = {}
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

    def open(self) -> 'RecordStore':
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

def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(['git', *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(dist_name: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist_name)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device) -> Dict[str, Any]:
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

    metrics: Dict[str, Any]
    table: str
    text: str = ''
    headline: Dict[str, Any] = field(default_factory=dict)  # a few numbers for side-by-side tables


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
    fingerprint: Dict[str, Any]
    make_worker: Callable[[DistContext], Callable[[Id], Any]]
    finalize: Callable[[Dict[Id, Any], List[Id]], Report]
    unit: str = 'img'
    title: str = ''


def _check_run_file(path: Path, expected: Dict[str, Any]) -> None:
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


def _prepare_out(out: Path, run_info: Dict[str, Any], overwrite: bool) -> None:
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
        tmp = run_file.with_suffix('.tmp')
        tmp.write_text(json.dumps(run_info, indent=1))
        os.replace(tmp, run_file)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(text)
    os.replace(tmp, path)


def run_eval(spec: EvalSpec, args: argparse.Namespace, ctx: Optional[DistContext] = None
             ) -> Optional[Dict[str, Any]]:
    """Run ``spec`` with the common options in ``args`` (``out``, ``limit``, ``overwrite``, ``device``,
    ``progress``, ``threads``); returns the metrics JSON on rank 0 and None on other ranks.

    Without ``ctx`` the process group (if any) is started here and closed at the end.
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
        return _run(spec, args, ctx, out, ids)
    finally:
        if own:
            ctx.close()


def _run(spec: EvalSpec, args: argparse.Namespace, ctx: DistContext, out: Path, ids: List[Id]
         ) -> Optional[Dict[str, Any]]:
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
    _write_atomic(out / 'metrics.json', json.dumps(result, indent=1, allow_nan=False))
    md = (f'{spec.title}\n\n' if spec.title else '') + report.table + '\n'
    _write_atomic(out / 'metrics.md', md)
    if report.text:
        print(report.text)
    print(md)
    print(f'wrote {out / "metrics.json"} and {out / "metrics.md"}')
    return result


@dataclass
class ModelConfig:
    """One model of a side-by-side run: a label (its output subfolder) and the options to build it."""

    label: str
    args: argparse.Namespace


def model_configs(args: argparse.Namespace) -> List[ModelConfig]:
    """The models named by ``--backbone`` (one or several, each ``NAME`` or ``NAME:WINDOW``); ``--window-size``
    applies to the C-RADIO ones given without a window. Each gets ``args.out / label`` when there are several."""
    specs = args.backbone if isinstance(args.backbone, (list, tuple)) else [args.backbone]
    out: List[ModelConfig] = []
    for spec in specs:
        name, sep, win = spec.partition(':')
        window = parse_window(win) if sep else (None if name == 'pe' else args.window_size)
        if name == 'pe' and window is not None:
            raise ValueError(f'{spec!r}: PE\'s windows are fixed by its checkpoint; give window sizes to C-RADIO '
                             'backbones only')
        label = name if window is None else f'{name}-w{window}'
        out.append(ModelConfig(label, argparse.Namespace(**{**vars(args), 'backbone': name, 'window_size': window})))
    labels = [c.label for c in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f'--backbone names a model twice: {labels}')
    if len(out) > 1:
        for c in out:
            c.args.out = Path(args.out) / c.label
    return out


def run_models(args: argparse.Namespace, make_spec: Callable[[argparse.Namespace], EvalSpec],
               anchor: str = '') -> Optional[Dict[str, Any]]:
    """Run one eval for every model of :func:`model_configs`, one after the other on the same ranks, then (rank 0,
    several models) write ``<out>/comparison.{json,md}``: the models' headline metrics side by side."""
    configs = model_configs(args)
    if getattr(args, 'threads', None):
        torch.set_num_threads(args.threads)
    ctx = init_distributed(args.device)
    try:
        results = {c.label: run_eval(make_spec(c.args), c.args, ctx) for c in configs}
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
    if anchor:
        md += f'\n{anchor}\n'
    out = Path(args.out)
    comparison = _jsonable({'eval': first['eval'], 'models': {k: {'headline': r['headline'], 'out': str(
        Path(r['config']['out']))} for k, r in results.items()}, 'git_sha': first['git_sha']})
    _write_atomic(out / 'comparison.json', json.dumps(comparison, indent=1, allow_nan=False))
    _write_atomic(out / 'comparison.md', md)
    print(md)
    print(f'wrote {out / "comparison.md"}')
    return comparison


# --------------------------------------------------------------------------------------------------------------
# Command-line pieces
# --------------------------------------------------------------------------------------------------------------

def parse_window(value: str) -> Union[str, int]:
    """Like :func:`~sam3_cradio.cradio.parse_window_size`, but global attention is 'global': None here means
    "the config's default window"."""
    w = parse_window_size(value)
    return 'global' if w is None else w


def add_run_args(p: argparse.ArgumentParser) -> None:
    """``--out``, ``--limit``, ``--overwrite``, ``--device``, ``--no-progress``."""
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
    """The model options every runner shares (same names as the ``sam3-cradio`` CLI)."""
    g = p.add_argument_group('model')
    g.add_argument('--backbone', nargs='+', default=[default_backbone], metavar='NAME[:WINDOW]',
                   help="pe (SAM3's own encoder), cradio_v4_h, cradio_v4_so400m, cradio_tiny (tests); several "
                        "(e.g. pe cradio_v4_h cradio_v4_h:12) are evaluated one after the other, each into "
                        "--out/<name>[-w<window>], and compared side by side in --out/comparison.md")
    g.add_argument('--window-size', type=parse_window, default=None,
                   help='C-RADIO ViTDet window in tokens, or "global" (default: the config\'s; at 1152 px it must '
                        'divide 72: 6, 8, 12, 18, 24)')
    g.add_argument('--sam3-checkpoint', default=None, help='local sam3.pt (default: HF facebook/sam3)')
    g.add_argument('--cradio-checkpoint', default=None, help='local C-RADIO .pth.tar (default: the release)')
    g.add_argument('--random-weights', action='store_true', help='random SAM3 weights (tests; no downloads)')
    g.add_argument('--override', action='append', default=[], metavar='KEY=VALUE',
                   help='hydra override of the model config (repeatable), e.g. backbone.image_size=768')
    g.add_argument('--seed', type=int, default=0, help='torch seed set before building (random weights)')


def model_fingerprint(args: argparse.Namespace) -> Dict[str, Any]:
    """What the predictions depend on, from :func:`add_model_args` options."""
    ckpt = {k: (str(Path(v).resolve()) if v else None) for k, v in
            (('sam3_checkpoint', args.sam3_checkpoint), ('cradio_checkpoint', args.cradio_checkpoint))}
    return {'backbone': args.backbone, 'window_size': args.window_size, 'pretrained': not args.random_weights,
            'overrides': list(args.override), 'seed': args.seed if args.random_weights else None, **ckpt}


def build_model(args: argparse.Namespace, mode: str, device: torch.device, interactive: bool = True) -> torch.nn.Module:
    """``build_sam3`` from :func:`add_model_args` options, seeded, as if in a single process."""
    from ..build import build_sam3

    kwargs: Dict[str, Any] = {}
    if args.window_size is not None:
        kwargs['window_size'] = None if args.window_size == 'global' else args.window_size
    torch.manual_seed(args.seed)
    with single_process_env():
        return build_sam3(args.backbone, mode=mode, overrides=args.override, pretrained=not args.random_weights,
                          sam3_checkpoint=args.sam3_checkpoint, cradio_checkpoint=args.cradio_checkpoint,
                          interactive=interactive, device=device, **kwargs)


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


def cli(main: Callable[[Optional[List[str]]], int], argv: Optional[List[str]] = None) -> int:
    """Run an eval ``main`` as a command: logging on, user errors as one line (exit 2), no traceback."""
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        return main(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
