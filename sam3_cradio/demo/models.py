"""The demo's models and encoded images.

- :class:`ModelCache`: each (model spec, mode) model is built once, on first use, behind a lock, and the
  ``max_models`` last used are kept. A failed build is not cached: it is retried on the next request.
- :class:`FeatureCache`: encoded images per (model, image hash), LRU, so a new prompt on the same image skips the
  encoder.
- :class:`Sam3Builder`: builds models through :func:`sam3_cradio.build.build_sam3` from the start-up options,
  failing fast (with what to fetch) on local weight files that do not exist.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam3_cradio.assets import CRADIO_TINY_CHECKPOINT

if TYPE_CHECKING:
    from sam3_cradio.options import ModelOptions

    from .options import DemoOptions

from sam3_cradio.registry import Backbone, ModelSpec

from .options import TINY_BACKBONE

__all__ = ['ModelKey', 'ModelEntry', 'ModelCache', 'FeatureCache', 'Sam3Builder', 'WeightsError',
           'weights_message']

_logger = logging.getLogger(__name__)

ModelKey = tuple[ModelSpec, str]  # what to build, and the mode: 'image' or 'video'
Build = Callable[[ModelSpec, str], Any]


@dataclass
class ModelEntry:
    key: ModelKey
    model: Any = None
    error: str | None = None
    building: bool = False
    seconds: float = 0.0
    build_lock: threading.Lock = field(default_factory=threading.Lock)
    run_lock: threading.Lock = field(default_factory=threading.Lock)  # one inference at a time per model

    @property
    def spec(self) -> ModelSpec:
        return self.key[0]

    @property
    def mode(self) -> str:
        return self.key[1]

    @property
    def title(self) -> str:
        return self.spec.title()

    @property
    def short_title(self) -> str:
        return self.spec.title(short=True)


class ModelCache:
    """Builds each (spec, mode) model once, on first use, with ``build(spec, mode)``, and keeps the
    ``max_models`` last used; ``on_evict(key)`` is called for each model dropped."""

    def __init__(self, build: Build, max_models: int, on_evict: Callable[[ModelKey], None] | None = None) -> None:
        if max_models < 1:
            raise ValueError(f'max_models must be at least 1, got {max_models}')
        self.build = build
        self.max_models = int(max_models)
        self._lock = threading.Lock()
        self._entries: OrderedDict[ModelKey, ModelEntry] = OrderedDict()
        self._on_evict = on_evict
        self.builds = 0

    def entry(self, key: ModelKey) -> ModelEntry:
        """The entry of ``key`` (created empty if new), marked as the most recently used."""
        with self._lock:
            e = self._entries.get(key)
            if e is None:
                e = self._entries[key] = ModelEntry(key)
            self._entries.move_to_end(key)
            return e

    def peek(self, key: ModelKey) -> ModelEntry | None:
        with self._lock:
            return self._entries.get(key)

    def get(self, spec: ModelSpec, mode: str) -> ModelEntry:
        """The entry with its model built (now, if needed). Raises what the build raises."""
        e = self.entry((spec, mode))
        with e.build_lock:
            if e.model is None:
                self._evict(keep=e.key)  # make room first: never more than max_models in memory
                e.building, e.error = True, None
                t0 = time.perf_counter()
                try:
                    e.model = self.build(spec, mode)
                except Exception as exc:
                    e.error = str(exc) or type(exc).__name__
                    raise
                finally:
                    e.building = False
                e.seconds = time.perf_counter() - t0
                self.builds += 1
                _logger.info('built %s (%s) in %.1fs', e.title, mode, e.seconds)
        return e

    def _evict(self, keep: ModelKey) -> None:
        """Drop the least recently used models so that ``keep`` fits in ``max_models`` (a request still running
        on a dropped model finishes with it; later requests build it again)."""
        with self._lock:
            built = [k for k, e in self._entries.items() if e.model is not None and k != keep]
            drop = built[:max(0, len(built) + 1 - self.max_models)]
            for k in drop:
                self._entries[k].model = None
                _logger.info('dropped %s (%s) from memory (--max-models %d)', self._entries[k].title, k[1],
                             self.max_models)
        for k in drop:
            if self._on_evict:
                self._on_evict(k)
        if drop:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


class FeatureCache:
    """Encoded images keyed by (model key, image hash); LRU of ``size`` entries, thread-safe."""

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[ModelKey, Hashable], Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[ModelKey, Hashable]) -> Any | None:
        with self._lock:
            f = self._items.get(key)
            if f is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return f

    def put(self, key: tuple[ModelKey, Hashable], features: Any) -> None:
        with self._lock:
            self._items[key] = features
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop_model(self, model_key: ModelKey) -> None:
        """Forget the encoded images of a model (it was dropped from memory)."""
        with self._lock:
            for k in [k for k in self._items if k[0] == model_key]:
                del self._items[k]

    def __len__(self) -> int:
        return len(self._items)


class WeightsError(Exception):
    """A model could not be built; the message is page markdown saying what to fetch and where to put it."""


def weights_message(title: str, error: str) -> str:
    return (f'✖ **{title} cannot be loaded.**\n\n```\n{error.strip()}\n```\n\n'
            f'Put the files in place and select the backbone again (the build is retried on each request): either '
            f'in the Hugging Face cache (`~/.cache/huggingface/hub`, or `$HF_HOME/hub`), or give local paths when '
            f'starting the demo: `--sam3-checkpoint /path/sam3.pt`, '
            f'`--cradio-checkpoint cradio_v4_h=/path/c-radio_v4-h_half.pth.tar`. '
            f'`--tiny` runs the interface without any download.')


def _release_hint(backbone: Backbone) -> str:
    """Where a backbone's released C-RADIO weights live, for a missing-file message."""
    from sam3_cradio.cradio import RELEASES

    rel = RELEASES.get(backbone.release or '')
    if rel is None:
        return ''
    f = rel.checkpoint
    return (f'Fetch {f.filename!r} from the Hugging Face repo {f.repo_id!r}, e.g.\n'
            f'    hf download {f.repo_id} {f.filename}\n')


class Sam3Builder:
    """``build(spec, mode)`` for :class:`ModelCache`: SAM3 through ``build_sam3`` with the options' weights.

    The tiny backbone gets the shipped fixture's C-RADIO weights and the same random SAM3 weights every run;
    the others load sam3.pt and their C-RADIO release (or the local files given at start-up).
    """

    def __init__(self, args: DemoOptions) -> None:
        self.sam3_checkpoint: str | None = args.sam3_checkpoint
        self.cradio_checkpoints: dict[str, str] = dict(args.cradio_checkpoints)
        self.device: str | None = args.device
        self.dtype: str = args.dtype
        # an exported trunk is made for one backbone, window and size: the page's default model
        self.runtime: tuple[str, str | None] | None = None
        if args.trunk_runtime not in (None, 'torch'):
            self.runtime = (args.trunk_runtime, args.trunk_model)
            self.runtime_spec = args.spec

    def preflight(self, backbone: Backbone) -> None:
        """Fail fast, with what to do, on local weight files that do not exist."""
        local = self.cradio_checkpoints.get(backbone.name)
        if backbone.name == TINY_BACKBONE:  # random SAM3 weights: only the C-RADIO file matters
            if local is None and not CRADIO_TINY_CHECKPOINT.is_file():
                raise FileNotFoundError(
                    f'the tiny C-RADIO fixture {CRADIO_TINY_CHECKPOINT.name} is missing from the installed package '
                    f'(sam3_cradio/assets/cradio_tiny): reinstall sam3-cradio')
        elif self.sam3_checkpoint is not None and not Path(self.sam3_checkpoint).is_file():
            raise FileNotFoundError(
                f'--sam3-checkpoint {self.sam3_checkpoint} does not exist.\n'
                f'Fetch sam3.pt from the Hugging Face repo facebook/sam3 (gated: accept its license first), e.g.\n'
                f'    hf download facebook/sam3 sam3.pt\n'
                f'and pass its path with --sam3-checkpoint, or drop the flag to use the Hugging Face cache.')
        if local is not None and not Path(local).is_file():
            hint = _release_hint(backbone)
            todo = (f'{hint}and pass its path, or drop the flag to use the Hugging Face cache.' if hint else
                    'Pass a C-RADIO .pth.tar / .safetensors file that exists.')
            raise FileNotFoundError(f'--cradio-checkpoint {backbone.name}={local} does not exist.\n{todo}')

    def options(self, spec: ModelSpec) -> ModelOptions:
        """The checked :class:`~sam3_cradio.options.ModelOptions` of the page's choice ``spec``."""
        from sam3_cradio.options import ModelOptions

        if spec.backbone.name == TINY_BACKBONE:  # the same random SAM3 weights every run
            return ModelOptions(spec, pretrained=False, device=self.device, dtype=self.dtype, seed=0,
                                cradio_checkpoint=Path(self.cradio_checkpoints.get(spec.name, CRADIO_TINY_CHECKPOINT)))
        runtime = self.runtime if self.runtime is not None and spec == self.runtime_spec else (None, None)
        local = self.cradio_checkpoints.get(spec.name)
        return ModelOptions(spec, pretrained=True, device=self.device, dtype=self.dtype,
                            sam3_checkpoint=Path(self.sam3_checkpoint) if self.sam3_checkpoint else None,
                            cradio_checkpoint=Path(local) if local else None, trunk_runtime=runtime[0],
                            trunk_model=Path(runtime[1]) if runtime[1] else None)

    def __call__(self, spec: ModelSpec, mode: str) -> Any:
        from sam3_cradio.build import build_sam3

        self.preflight(spec.backbone)
        return build_sam3(self.options(spec), mode=mode)
