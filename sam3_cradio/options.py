"""Model options: what to build and how, as one checked value.

:class:`ModelOptions` is a :class:`~sam3_cradio.registry.ModelSpec` (backbone, window, resolution) plus the build
options every command shares (weights, device, precision, trunk runtime, extra hydra overrides). It is made once,
from keyword arguments (:meth:`ModelOptions.make`) or a command's parsed options, checked there, and handed as it is
to :func:`sam3_cradio.build.build_sam3` (``build_sam3(options, mode='video')``). Nothing below the command modules
sees an ``argparse.Namespace``; a resolution stays an int until the build composes its hydra config.

Torch-free on purpose: the demo and the command line check options before torch is imported.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .registry import DEFAULT_BACKBONE, ModelSpec, Window, resolve

__all__ = ['ModelOptions', 'DTYPES', 'TRUNK_RUNTIMES', 'resolve_build']

#: ``dtype`` names every command takes (``build.TORCH_DTYPES`` maps them to torch dtypes).
DTYPES = ('fp32', 'bf16')
#: where the trunk runs: torch, or an exported file in a CPU runtime (``sam3_cradio.export``).
TRUNK_RUNTIMES = ('torch', 'onnxruntime', 'openvino')

# Overrides that change a backbone fact: folded into resolve() so that they are checked like the arguments.
_FACT_KEYS = {'backbone.image_size': 'resolution', 'backbone.window_size': 'window'}


def _split_fact_overrides(overrides: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    facts, rest = {}, []
    for o in overrides:
        key, sep, value = o.lstrip('+').partition('=')
        if sep and key in _FACT_KEYS:
            facts[_FACT_KEYS[key]] = value
        else:
            rest.append(o)
    return facts, rest


def resolve_build(
        backbone: str | ModelSpec,
        window_size: Window | str | None = None,
        resolution: int | None = None,
        overrides: Sequence[str] = (),
) -> tuple[ModelSpec, list[str]]:
    """The checked :class:`ModelSpec` of a build and the overrides left once the backbone facts are taken out.

    ``backbone.image_size=`` / ``backbone.window_size=`` overrides are accepted as the ``resolution`` /
    ``window_size`` arguments are (and checked alike); giving both ways for one fact is an error.
    """
    facts, rest = _split_fact_overrides(overrides)
    if isinstance(backbone, ModelSpec):
        if window_size is not None or resolution is not None or facts:
            raise ValueError('a ModelSpec fixes window and resolution; do not pass them again')
        return backbone, rest
    if 'window' in facts:
        if window_size is not None:
            raise ValueError(f'window given twice: window_size={window_size!r} and backbone.window_size={facts["window"]}')
        window_size = 'global' if facts['window'] in ('null', 'None', '~') else facts['window']
    if 'resolution' in facts:
        if resolution is not None:
            raise ValueError(f'resolution given twice: {resolution} and backbone.image_size={facts["resolution"]}')
        try:
            resolution = int(facts['resolution'])
        except ValueError:
            raise ValueError(f'backbone.image_size must be a whole number of pixels, got {facts["resolution"]!r}') from None
    return resolve(backbone, window_size, resolution), rest


def _path(value: str | Path | None) -> Path | None:
    return None if value is None or value == '' else Path(value)


@dataclass(frozen=True)
class ModelOptions:
    """One model to build, checked.

    Attributes:
        spec: the backbone at its window and resolution (:func:`sam3_cradio.registry.resolve`).
        overrides: further hydra overrides of the model config (the backbone facts are in ``spec``).
        pretrained: load SAM3's and C-RADIO's weights (False: random weights, no downloads).
        sam3_checkpoint: a local sam3.pt instead of the HF download.
        cradio_checkpoint: a local C-RADIO checkpoint instead of the release (C-RADIO backbones only).
        device: 'cpu', 'cuda', 'cuda:N'; None: CUDA when available.
        dtype: 'fp32' or 'bf16' (:data:`DTYPES`).
        trunk_runtime: 'torch', 'onnxruntime' or 'openvino' (:data:`TRUNK_RUNTIMES`); None is torch.
        trunk_model: the exported trunk for an ONNX runtime (``sam3-cradio export``).
        seed: torch seed set right before building (random weights are then reproducible); None sets none.
    """

    spec: ModelSpec
    overrides: tuple[str, ...] = ()
    pretrained: bool = True
    sam3_checkpoint: Path | None = None
    cradio_checkpoint: Path | None = None
    device: str | None = None
    dtype: str = 'fp32'
    trunk_runtime: str | None = None
    trunk_model: Path | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.spec, ModelSpec):
            raise TypeError(f'spec must be a ModelSpec (registry.resolve), got {type(self.spec).__name__}; '
                            'use ModelOptions.make(backbone, ...)')
        if self.dtype not in DTYPES:
            raise ValueError(f'dtype must be one of {list(DTYPES)}, got {self.dtype!r}')
        if self.trunk_runtime is not None and self.trunk_runtime not in TRUNK_RUNTIMES:
            raise ValueError(f'trunk runtime must be one of {list(TRUNK_RUNTIMES)}, got {self.trunk_runtime!r}')
        if self.cradio_checkpoint is not None and not self.spec.backbone.is_cradio:
            raise ValueError(f'{self.spec.name} takes its weights from sam3.pt (--sam3-checkpoint), not a C-RADIO '
                             'checkpoint (--cradio-checkpoint)')
        if self.sam3_checkpoint is not None and not self.pretrained:
            raise ValueError('a SAM3 checkpoint was given with random weights (--random-weights); drop one of them')

    @classmethod
    def make(
            cls,
            backbone: str | ModelSpec = DEFAULT_BACKBONE,
            window_size: Window | str | None = None,
            resolution: int | None = None,
            overrides: Sequence[str] = (),
            *,
            pretrained: bool = True,
            sam3_checkpoint: str | Path | None = None,
            cradio_checkpoint: str | Path | None = None,
            device: str | None = None,
            dtype: str = 'fp32',
            trunk_runtime: str | None = None,
            trunk_model: str | Path | None = None,
            seed: int | None = None,
    ) -> ModelOptions:
        """Check a choice as a user gives it: ``backbone`` a name or ``NAME:WINDOW``, ``window_size`` 'global' or
        tokens, ``resolution`` px, hydra ``overrides`` (``backbone.image_size=`` / ``backbone.window_size=`` are
        taken as ``resolution`` / ``window_size``). Raises ValueError naming what is accepted."""
        spec, rest = resolve_build(backbone, window_size, resolution, overrides)
        return cls(spec, tuple(rest), bool(pretrained), _path(sam3_checkpoint), _path(cradio_checkpoint),
                   None if device in (None, '') else str(device), str(dtype), trunk_runtime, _path(trunk_model), seed)

    def replace(self, **changes: Any) -> ModelOptions:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    @property
    def name(self) -> str:
        return self.spec.name

    def build_kwargs(self) -> dict[str, Any]:
        """:func:`~sam3_cradio.build.build_sam3`'s keyword arguments for these options (``spec`` excluded)."""
        return {'overrides': list(self.overrides), 'pretrained': self.pretrained,
                'sam3_checkpoint': self.sam3_checkpoint, 'cradio_checkpoint': self.cradio_checkpoint,
                'device': self.device, 'dtype': self.dtype, 'trunk_runtime': self.trunk_runtime,
                'trunk_model': self.trunk_model}

    def fingerprint(self) -> dict[str, Any]:
        """What a model's predictions depend on, as JSON: the resolved model (backbone, window as 'global' or
        tokens, resolution), its weights and overrides; precision and trunk runtime only when not the defaults
        (so that output folders of float32 torch runs keep the fingerprint they were made with)."""
        out: dict[str, Any] = {
            'backbone': self.spec.name, 'window_size': self.spec.window, 'resolution': self.spec.resolution,
            'pretrained': self.pretrained, 'overrides': list(self.overrides),
            'seed': self.seed if not self.pretrained else None,
            'sam3_checkpoint': _resolved(self.sam3_checkpoint), 'cradio_checkpoint': _resolved(self.cradio_checkpoint)}
        if self.dtype != 'fp32':
            out['dtype'] = self.dtype
        if self.trunk_runtime not in (None, 'torch'):
            out['trunk_runtime'] = self.trunk_runtime
        if self.trunk_model is not None:
            out['trunk_model'] = _resolved(self.trunk_model)
        return out


def _resolved(path: Path | None) -> str | None:
    return str(path.resolve()) if path is not None else None
