"""The backbone registry: the one place where backbones, their sizes and their attention windows are written.

What timm's ``default_cfgs`` + ``@register_model`` are for timm users, this is for SAM3 backbones: each
:class:`Backbone` names its hydra config (``configs/<config>.yaml``, which holds the model's structure only), the
C-RADIO release it loads, its patch size and native input size, whether its window is fixed by its checkpoint
(SAM3's PE) and the labels shown in tables and the demo. The windows a backbone accepts at a size are derived
from its token grid, never listed.

Window values, everywhere in the package:

* ``'global'`` (:data:`GLOBAL`): global attention in every block;
* an ``int`` ``w``: ViTDet windows of ``w`` x ``w`` tokens (``w`` must divide the token grid);
* ``None`` as an *argument*: "not given", i.e. the backbone's default (global for C-RADIO, 24 for PE).

:func:`resolve` turns (backbone, window, resolution) into a checked :class:`ModelSpec`; every entry point
(``build_sam3``, the CLI, the demo, the evaluations, the benchmark) builds models through it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    'GLOBAL', 'Window', 'Backbone', 'ModelSpec', 'BACKBONES', 'register_backbone', 'get_backbone', 'list_backbones',
    'resolve', 'parse_window', 'parse_model', 'format_window', 'format_model', 'window_tokens', 'window_from_tokens',
    'window_to_hydra', 'speed_models', 'DEFAULT_BACKBONE', 'name_key',
]

GLOBAL = 'global'
# An explicit window choice: 'global' or a ViTDet window in tokens.
Window = int | Literal['global']
# The backbone every command and ``build_sam3`` use when none is named.
DEFAULT_BACKBONE = 'cradio_v4_h'


@dataclass(frozen=True)
class Backbone:
    """One image backbone for SAM3.

    Attributes:
        name: the name users pass (``build_sam3(backbone=name)``, ``--backbone name``).
        config: hydra config under ``configs/`` holding the model's structure.
        label: display name (tables, plots, the demo's selector).
        short_label: compact name for side-by-side titles.
        patch_size: pixels per token.
        image_size: native input side in px (the size SAM3's decoder was trained with on this trunk).
        release: C-RADIO release (:data:`sam3_cradio.cradio.RELEASES` key) whose weights it loads, or the
            random-weight variant name for test models; None for PE.
        fixed_window: the window its checkpoint fixes (PE: 24), or None when the window is the user's choice.
        pretrained: released weights exist (False: random weights only, e.g. the tiny test models).
        aliases: other names accepted for it (short names, release names).
        overrides: extra hydra overrides that make this backbone from its config (tiny variants of a config).
        speed_window: the ViTDet window of its speed targets against PE (SO400M 12 and H 8 at 1152 px; the tiny
            test model 3, for the tiny benchmarks' 12 and 6-token grids): the model the runtime and whole-folder
            benchmarks time by default (:func:`speed_models`).
    """
    name: str
    config: str
    label: str
    short_label: str
    patch_size: int
    image_size: int
    release: str | None = None
    fixed_window: int | None = None
    pretrained: bool = True
    aliases: tuple[str, ...] = ()
    overrides: tuple[str, ...] = field(default=())
    speed_window: int | None = None

    @property
    def is_cradio(self) -> bool:
        return self.fixed_window is None

    @property
    def grid(self) -> int:
        """Token grid side at the native size."""
        return self.image_size // self.patch_size

    @property
    def default_window(self) -> Window:
        return GLOBAL if self.fixed_window is None else self.fixed_window

    def grid_at(self, resolution: int) -> int:
        """Token grid side at ``resolution`` px (a multiple of the patch size)."""
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution % self.patch_size:
            raise ValueError(f'{resolution!r} px is not a multiple of {self.name}\'s patch size {self.patch_size}; '
                             f'nearest: {self.nearest_resolution(int(resolution), GLOBAL)}')
        return resolution // self.patch_size

    def resolution_step(self, window: Window) -> int:
        """Input sides must be multiples of this: the patch size, times the window for a C-RADIO ViTDet window
        (PE pads its windows, so any multiple of its patch works)."""
        if not self.is_cradio or window == GLOBAL:
            return self.patch_size
        return self.patch_size * int(window)

    def nearest_resolution(self, resolution: int, window: Window) -> int:
        """The size closest to ``resolution`` that takes ``window`` (ties go up)."""
        step = self.resolution_step(window)
        return max(step, int((resolution + step / 2) // step) * step)

    def windows(self, resolution: int | None = None) -> list[int]:
        """Every ViTDet window this backbone accepts at ``resolution`` (default: native): the divisors of the
        token grid smaller than it. Empty for a backbone whose window is fixed."""
        if not self.is_cradio:
            return []
        grid = self.grid_at(resolution or self.image_size)
        return [w for w in range(1, grid) if grid % w == 0]

    def suggested_windows(self, resolution: int | None = None) -> list[int]:
        """The windows worth offering in menus and sweeps: accepted ones with 3 to 12 windows per side
        (72 tokens: 6, 8, 9, 12, 18, 24)."""
        grid = (resolution or self.image_size) // self.patch_size
        return [w for w in self.windows(resolution) if w >= 2 and grid // 12 <= w <= grid // 3]

    def window_choices(self, resolution: int | None = None) -> list[Window]:
        """'global' and the suggested windows; PE: its fixed window only."""
        if not self.is_cradio:
            return [self.fixed_window]
        return [GLOBAL, *self.suggested_windows(resolution)]


@dataclass(frozen=True)
class ModelSpec:
    """A backbone at a checked window and resolution: what to build."""
    backbone: Backbone
    window: Window
    resolution: int

    @property
    def name(self) -> str:
        return self.backbone.name

    @property
    def grid(self) -> int:
        return self.resolution // self.backbone.patch_size

    @property
    def window_size(self) -> int | None:
        """The window as the model takes it (None = global attention)."""
        return window_tokens(self.window)

    def hydra_overrides(self) -> list[str]:
        """The overrides that fill the config's backbone facts (``configs/<config>.yaml`` leaves them ``???``)."""
        b = self.backbone
        return [*b.overrides,
                f'backbone.name={b.name}',
                f'backbone.release={b.release if b.release is not None else "null"}',
                f'backbone.patch_size={b.patch_size}',
                f'backbone.image_size={self.resolution}',
                f'backbone.window_size={window_to_hydra(self.window)}']

    def title(self, short: bool = False) -> str:
        """'C-RADIOv4-H · window 8', 'SAM3 PE (Meta)'; PE's fixed window is not a choice, so it is not shown."""
        b = self.backbone
        name = b.short_label if short else b.label
        parts = [name]
        if b.is_cradio:
            parts.append(('global' if short else 'global attention') if self.window == GLOBAL else f'window {self.window}')
        if self.resolution != b.image_size:
            parts.append(f'{self.resolution} px')
        return ' · '.join(parts)


BACKBONES: dict[str, Backbone] = {}


def name_key(name: str) -> str:
    """How backbone and release names compare: case, '-', '_', surrounding spaces and an 'nvidia/' prefix
    ignored ('C-RADIOv4-H', 'nvidia/C-RADIOv4-H' and 'c-radio_v4-h' are one name)."""
    return name.strip().lower().replace('nvidia/', '').replace('-', '').replace('_', '')


def register_backbone(backbone: Backbone) -> Backbone:
    """Add a backbone (a new C-RADIO release, a distilled checkpoint's config) under its name and aliases."""
    taken = {name_key(k) for b in BACKBONES.values() for k in (b.name, b.label, *b.aliases)}
    clash = [k for k in (backbone.name, backbone.label, *backbone.aliases) if name_key(k) in taken]
    if clash:
        raise ValueError(f'backbone names already registered: {clash}')
    BACKBONES[backbone.name] = backbone
    return backbone


register_backbone(Backbone(
    'cradio_v4_h', 'sam3_cradio', 'C-RADIOv4-H', 'RADIOv4-H', patch_size=16, image_size=1152,
    release='c-radio_v4-h', speed_window=8, aliases=('h', 'c-radio_v4-h', 'C-RADIOv4-H', 'nvidia/C-RADIOv4-H')))
register_backbone(Backbone(
    'cradio_v4_so400m', 'sam3_cradio', 'C-RADIOv4-SO400M', 'RADIOv4-SO400M', patch_size=16, image_size=1152,
    release='c-radio_v4-so400m', speed_window=12, aliases=('so400m', 'c-radio_v4-so400m', 'C-RADIOv4-SO400M', 'nvidia/C-RADIOv4-SO400M')))
register_backbone(Backbone(
    'pe', 'sam3_pe', 'SAM3 PE (Meta)', 'PE', patch_size=14, image_size=1008, fixed_window=24,
    aliases=('pe-l+', 'sam3')))
# The C-RADIO architecture of the public test fixture (192 wide, 8 blocks) under SAM3's tiny dims: tests, --tiny.
register_backbone(Backbone(
    'cradio_tiny', 'sam3_cradio', 'C-RADIO tiny (random weights)', 'tiny', patch_size=16, image_size=256,
    release='cradio_test', pretrained=False, speed_window=3, aliases=('tiny', 'cradio_test'),
    overrides=('dims=tiny', 'sam3_checkpoint=null')))
# PE's layout at the tiny numbers: 192 wide, 8 blocks, 3 heads, global every 2nd block, 4-token windows (3 per
# side at a 12-token grid, as 24 at 72), abs pos tiled from a 4 x 4 pretrain grid. Benchmarks and distillation.
register_backbone(Backbone(
    'pe_tiny', 'sam3_pe', 'PE tiny (random weights)', 'PE tiny', patch_size=14, image_size=168, fixed_window=4,
    pretrained=False, overrides=(
        'dims=tiny', 'sam3_checkpoint=null', 'trunk.embed_dim=192', 'trunk.depth=8', 'trunk.num_heads=3', 'trunk.global_att_blocks=[1,3,5,7]',
        'trunk.pretrain_img_size=56')))


def get_backbone(name: str | Backbone) -> Backbone:
    """A registered backbone by name or alias (case, '-' and '_' ignored): 'cradio_v4_h', 'h', 'C-RADIOv4-H'."""
    if isinstance(name, Backbone):
        return name
    if not isinstance(name, str):
        raise TypeError(f'backbone must be a name, got {type(name).__name__}')
    key = name_key(name)
    for b in BACKBONES.values():
        if key in {name_key(a) for a in (b.name, b.label, *b.aliases)}:
            return b
    raise ValueError(f'unknown backbone {name!r}; choose one of {list_backbones()}')


def speed_models(tiny: bool = False) -> list[str]:
    """``NAME:WINDOW`` of every C-RADIO backbone with a :attr:`Backbone.speed_window`: the released ones, or the
    random-weight ones for ``tiny`` (['cradio_v4_h:8', 'cradio_v4_so400m:12']; tiny: ['cradio_tiny:3'])."""
    return [f'{b.name}:{b.speed_window}' for b in BACKBONES.values()
            if b.is_cradio and b.speed_window is not None and b.pretrained != tiny]


def list_backbones(pretrained_only: bool = False, cradio_only: bool = False) -> list[str]:
    """Registered names: all, those with released weights, and / or the C-RADIO ones (not PE)."""
    return [n for n, b in BACKBONES.items()
            if (b.pretrained or not pretrained_only) and (b.is_cradio or not cradio_only)]


def parse_window(value: str | int | None) -> Window | None:
    """One parser for every window spelling users type: 'global' -> 'global', '12' / 12 -> 12, None / '' -> None
    (not given). Anything else, 0 and negatives included, is refused with the accepted forms."""
    if value is None or value == '':
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == GLOBAL:
            return GLOBAL
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"window must be 'global' or a positive number of tokens, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"window must be 'global' or a positive number of tokens, got {value!r}")
    return value


def format_window(window: Window) -> str:
    return GLOBAL if window == GLOBAL else str(int(window))


def format_model(name: str, window: Window | None) -> str:
    """``NAME:WINDOW`` (a window not given reads 'global'): 'cradio_v4_so400m:12', 'cradio_v4_h:global'."""
    return f'{name}:{format_window(GLOBAL if window is None else window)}'


def window_tokens(window: Window | None) -> int | None:
    """The one conversion to what the models take (timm's convention): tokens per window side, None for global
    attention (or no window given)."""
    return None if window is None or window == GLOBAL else int(window)


def window_from_tokens(value: int | None) -> Window:
    """The inverse of :func:`window_tokens`: a model's (or a config's) ``window_size`` as a :data:`Window`."""
    return GLOBAL if value is None else int(value)


def window_to_hydra(window: Window) -> str:
    """The hydra override value: ``null`` is global attention in the configs."""
    w = window_tokens(window)
    return 'null' if w is None else str(w)


def parse_model(text: str) -> tuple[Backbone, Window | None]:
    """'cradio_v4_h' -> (H, None); 'cradio_v4_h:8' -> (H, 8); 'so400m:global' -> (SO400M, 'global')."""
    name, sep, window = text.partition(':')
    if sep and not window:
        raise ValueError(f'{text!r}: give a window after the colon (NAME:global or NAME:12) or none at all')
    return get_backbone(name), parse_window(window) if sep else None


def resolve(backbone: str | Backbone, window: Window | str | None = None, resolution: int | None = None) -> ModelSpec:
    """Check a (backbone, window, resolution) choice and fill the defaults.

    Args:
        backbone: a registered name or alias, or ``NAME:WINDOW``.
        window: 'global', a window in tokens, or None for the backbone's default. PE's window is fixed by its
            checkpoint: any window passed for it is an error.
        resolution: input side in px (default: the backbone's native size). It must be a multiple of the patch
            size, and of patch x window for a C-RADIO ViTDet window; errors name the nearest valid size.

    Raises:
        ValueError: naming what is accepted.
    """
    if isinstance(backbone, str) and ':' in backbone:
        b, spec_window = parse_model(backbone)
        if spec_window is not None and window is not None and parse_window(window) != spec_window:
            raise ValueError(f'two windows given: {backbone!r} and window={window!r}; give one')
        window = window if window is not None else spec_window
    else:
        b = get_backbone(backbone)
    w = parse_window(window)
    if not b.is_cradio and w is not None:
        raise ValueError(
            f"{b.name}'s attention window is fixed at {b.fixed_window} by its checkpoint; "
            f'drop the window (windows apply to C-RADIO backbones: {list_backbones(cradio_only=True)})')
    w = b.default_window if w is None else w
    res = b.image_size if resolution is None else resolution
    if isinstance(res, bool) or not isinstance(res, int) or res <= 0:
        raise ValueError(f'resolution must be a positive number of pixels, got {res!r}')
    if res % b.resolution_step(w):
        near = b.nearest_resolution(res, w)
        if res % b.patch_size:
            raise ValueError(f'{res} px is not a multiple of {b.name}\'s patch size {b.patch_size}; '
                             f'nearest size for window {format_window(w)}: {near}')
        grid = res // b.patch_size
        raise ValueError(
            f'window {w} does not divide the {grid}x{grid} token grid of {b.name} at {res} px; '
            f"use 'global' or one of {b.windows(res)}, or resolution {near} for window {w}")
    return ModelSpec(b, w, res)
