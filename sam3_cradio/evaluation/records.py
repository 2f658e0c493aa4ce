"""A run's records: one JSON line per work unit, streamed to ``<out>/records/rank*.jsonl``, read back on demand."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ['Id', 'sort_ids', 'RecordStore', 'RecordIndex']

_logger = logging.getLogger(__name__)

Id = int | str  # a work unit's id (a JSON key)


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
