"""What a benchmark run measures (:class:`BenchConfig`) and the command-line options that describe it."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..assets import CRADIO_TINY_DIR
from ..options import DTYPES  # the dtypes --dtype takes everywhere
from ..registry import BACKBONES, GLOBAL, Backbone, Window, get_backbone, parse_model, parse_window, speed_models

__all__ = ['BenchConfig', 'BenchCommand', 'DTYPES', 'OFF_GRID', 'RSS_METHODS', 'cradio_models']

OFF_GRID = ('skip', 'nearest')
RSS_METHODS = ('auto', 'vmhwm', 'sampler')


def _registered(cradio: bool, tiny: bool) -> list[Backbone]:
    """The C-RADIO (or PE) backbones of a mode: released ones for full size, random-weight ones for ``tiny``."""
    return [b for b in BACKBONES.values() if b.is_cradio == cradio and b.pretrained != tiny]


@dataclass
class BenchConfig:
    """What to run. :meth:`resolved` fills the mode's defaults from the registry and checks every field.

    Attributes:
        backbones: C-RADIO backbones (registry names or aliases: 'h', 'so400m', 'tiny'); default: the released
            ones (``tiny``: the random-weight ones).
        sizes: C-RADIO input sides in px (multiples of the patch size); each is a size level, a token grid that
            PE runs at too (``grid * 14`` px). Default: the reference PE's native grid and half of it (72 and 36:
            C-RADIO 1152 and 576 px, PE 1008 and 504; ``tiny``: 12 and 6).
        windows: 'global' and ViTDet windows in tokens (global is always added); default: each backbone's
            ``window_choices`` at the largest size. Windows that do not divide a smaller level's grid are skipped
            there (``off_grid='skip'``) or run at the nearest size they allow (``'nearest'``).
        reference: the PE backbone every row is compared with; default ``pe`` (``tiny``: ``pe_tiny``).
        pe: time the reference (False: no ratios to PE).
        tf32: CUDA only. None keeps what importing sam3 sets (TF32 on for Ampere and newer, as SAM3 runs); False
            gives true float32 matmuls for the fp32 rows and the fp32 ``torch.mm`` peak alike.
        fixture: the C-RADIO tiny fixture folder for the bf16 deviation check (run when bf16 is among ``dtypes``).
        op_profile: profile one more call of each encoder row and split its time into linear layers, attention
            and the rest (``EncoderResult.ops``).
    """
    backbones: Sequence[str] | None = None
    sizes: Sequence[int] | None = None
    windows: Sequence[Window | str] | None = None
    reference: str | None = None
    pe: bool = True
    dtypes: Sequence[str] = ('fp32',)
    batch: int = 1
    repeats: int = 3
    warmup: int = 1
    device: str = 'cpu'
    compile: bool = False
    inference: bool = False
    text: str = 'cat'
    inference_threshold: float = 1.0
    image_hw: tuple[int, int] = (768, 1024)
    mm_size: int | None = None
    off_grid: str = 'skip'
    rss_method: str = 'auto'
    fixture: Path | None = CRADIO_TINY_DIR
    seed: int = 0
    tiny: bool = False
    tf32: bool | None = None
    op_profile: bool = False

    def resolved(self) -> BenchConfig:
        """A copy with the mode's defaults filled in, names and windows in canonical form, every field checked."""
        c = replace(self)
        ref = get_backbone(c.reference) if c.reference is not None else _registered(False, c.tiny)[0]
        if ref.is_cradio:
            raise ValueError(f'the reference must be a PE backbone ({[b.name for b in _registered(False, c.tiny)]}), '
                             f'got {c.reference!r}')
        c.reference = ref.name
        backbones = [get_backbone(b) for b in c.backbones] if c.backbones is not None else _registered(True, c.tiny)
        if not backbones:
            raise ValueError('no C-RADIO backbone to benchmark; name at least one (h, so400m, tiny)')
        pe_given = [b.name for b in backbones if not b.is_cradio]
        if pe_given:
            raise ValueError(f'{pe_given} is the reference every row is compared with, not a benchmarked backbone; '
                             f'list C-RADIO backbones only (--no-pe leaves PE out)')
        c.backbones = tuple(dict.fromkeys(b.name for b in backbones))
        patches = {b.patch_size for b in backbones}
        if len(patches) > 1:
            raise ValueError(f'the C-RADIO backbones have different patch sizes {sorted(patches)}, so sizes would '
                             f'not be one token grid; benchmark them in separate runs')
        patch = patches.pop()
        c.sizes = tuple(c.sizes or (ref.grid * patch, ref.grid // 2 * patch))
        for s in c.sizes:
            if isinstance(s, bool) or not isinstance(s, int) or s <= 0:
                raise ValueError(f'sizes must be positive numbers of pixels, got {s!r}')
            for b in backbones:
                b.grid_at(s)  # raises, naming the nearest size, unless a multiple of the patch size
        if c.windows is not None:
            windows = [parse_window(w) for w in c.windows]
            if None in windows:
                raise ValueError("windows are 'global' or positive numbers of tokens, got None")
        else:
            windows = [w for b in backbones for w in b.window_choices(max(c.sizes))]
        # global first: every ViTDet row is compared with it
        c.windows = (GLOBAL, *sorted({int(w) for w in windows if w != GLOBAL}))
        c.mm_size = c.mm_size or (256 if c.tiny else 2048)
        c.dtypes = tuple(dict.fromkeys(c.dtypes))
        bad = [d for d in c.dtypes if d not in DTYPES]
        if bad or not c.dtypes:
            raise ValueError(f'dtypes must be among {sorted(DTYPES)}, got {list(self.dtypes)}')
        if c.off_grid not in OFF_GRID:
            raise ValueError(f"off_grid must be 'skip' or 'nearest', got {c.off_grid!r}")
        if c.rss_method not in RSS_METHODS:
            raise ValueError(f"rss_method must be 'auto', 'vmhwm' or 'sampler', got {c.rss_method!r}")
        if c.repeats < 1 or c.warmup < 0 or c.batch < 1:
            raise ValueError(f'need repeats >= 1, warmup >= 0, batch >= 1; got {c.repeats}, {c.warmup}, {c.batch}')
        if not 0.0 <= c.inference_threshold <= 1.0:
            raise ValueError(f'inference_threshold must be in [0, 1], got {c.inference_threshold}')
        c.image_hw = (int(c.image_hw[0]), int(c.image_hw[1]))
        return c

    def cradio_backbones(self) -> list[Backbone]:
        """The benchmarked C-RADIO backbones, from the registry."""
        return [get_backbone(b) for b in self.resolved().backbones]

    def pe_backbone(self) -> Backbone | None:
        """The reference PE, or None when ``pe`` is False."""
        return get_backbone(self.resolved().reference) if self.pe else None

    def patch_size(self) -> int:
        """The C-RADIO patch size: a size level's grid is ``size // patch_size``."""
        return self.cradio_backbones()[0].patch_size

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d['fixture'] = str(self.fixture) if self.fixture is not None else None
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchConfig:
        return cls(**{**d, 'image_hw': tuple(d['image_hw']),
                      'fixture': Path(d['fixture']) if d.get('fixture') is not None else None})


def cradio_models(models: Sequence[str] | None, tiny: bool, why: str) -> list[tuple[str, Window | None]]:
    """(name, window) of ``models`` ('NAME:WINDOW'; default: the registry's ``speed_models``), C-RADIO only: a PE
    name is refused, ``why`` saying what the C-RADIO models are for."""
    out = []
    for m in models or speed_models(tiny):
        b, w = parse_model(m)
        if not b.is_cradio:
            raise ValueError(f"{b.name} is SAM3's own encoder; {why}")
        out.append((b.name, w))
    return out


@dataclass(frozen=True)
class BenchCommand:
    """What ``sam3-cradio bench`` was asked (:mod:`sam3_cradio.commands.bench` makes it): the benchmark's
    :class:`BenchConfig` and the options of the chosen mode (encoder rows by default; ``runtimes``, ``pipeline`` or
    ``exemplars``)."""

    config: BenchConfig
    json: Path = Path('bench.json')
    plot: Path | None = None
    dry_run: bool = False
    models: Sequence[str] | None = None  # NAME:WINDOW of the runtime and whole-folder modes
    runtimes: Sequence[str] | None = None
    pipeline: bool = False
    pipeline_runtimes: Sequence[str] = ('torch',)
    pipeline_batches: Sequence[int] = (1, 4)
    pipeline_images: int = 16
    pipeline_image_size: tuple[int, int] = (1200, 1600)
    pipeline_folder: Path | None = None
    pipeline_workers: int | None = None
    pipeline_threshold: float = 0.5
    pipeline_rounds: int = 1
    exemplars: bool = False
    exemplar_counts: Sequence[int] = (1, 10, 100)
    exemplar_baseline_max: int = 10
