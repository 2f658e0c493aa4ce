"""A whole run: environment, the resolved config, matmul peaks, the rows, the bf16 fixture check and notes; its
JSON form (:meth:`BenchResult.to_dict` / :meth:`BenchResult.from_dict`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .config import BenchConfig
from .fixture import FixtureCheck
from .measure import MatmulPeak
from .rows import Row, RowTable

__all__ = ['MatmulReport', 'BenchResult']


@dataclass(kw_only=True)
class MatmulReport:
    """``torch.mm`` throughput per dtype before and after the measurements; ``peak_gflops`` is the better of the
    two, the denominator of every row's ``fraction_of_mm``."""
    before: dict[str, MatmulPeak]
    after: dict[str, MatmulPeak]

    @property
    def peak_gflops(self) -> dict[str, float]:
        return {d: max(self.before[d].gflops_best, self.after[d].gflops_best) for d in self.before}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), 'peak_gflops': self.peak_gflops}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MatmulReport:
        return cls(before={k: MatmulPeak(**v) for k, v in d['before'].items()},
                   after={k: MatmulPeak(**v) for k, v in d['after'].items()})


@dataclass(kw_only=True)
class BenchResult:
    meta: dict[str, Any]              # machine, versions, git, seconds
    config: BenchConfig               # resolved
    matmul: MatmulReport | None
    rows: list[Row]
    bf16_fixture: FixtureCheck | None = None
    bf16_fixture_skipped: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def table(self) -> RowTable:
        return RowTable(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {'meta': self.meta, 'config': self.config.to_dict(),
                'matmul': self.matmul.to_dict() if self.matmul is not None else None,
                'rows': [r.to_dict() for r in self.rows],
                'bf16_fixture': asdict(self.bf16_fixture) if self.bf16_fixture is not None else None,
                'bf16_fixture_skipped': self.bf16_fixture_skipped, 'notes': list(self.notes)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchResult:
        """Read back :meth:`to_dict` (``json.loads`` of a ``bench.json`` this version wrote)."""
        return cls(meta=d['meta'], config=BenchConfig.from_dict(d['config']),
                   matmul=MatmulReport.from_dict(d['matmul']) if d.get('matmul') else None,
                   rows=[Row.from_dict(r) for r in d['rows']],
                   bf16_fixture=FixtureCheck.from_dict(d['bf16_fixture']) if d.get('bf16_fixture') else None,
                   bf16_fixture_skipped=d.get('bf16_fixture_skipped'), notes=list(d.get('notes', [])))
