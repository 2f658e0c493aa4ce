"""What an exported file is for, written into it and read back: :class:`ExportInfo` in the model's
``metadata_props`` (``sam3_cradio.*`` keys), :func:`read_info` (without loading the weights), :func:`check_info`
(refuse a file made for another backbone, size, window or weights) and :func:`file_sha256` of the checkpoint the
weights came from.

The exporter (:mod:`.export`) writes it and the runtimes (:mod:`.runtimes`) check it; neither imports the other
for it. Reading needs the onnx package (``pip install "sam3-cradio[export]"``); importing this module does not.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..registry import ModelSpec, Window, format_window, get_backbone, parse_window, window_tokens

__all__ = [
    'METADATA_PREFIX', 'FORMAT_VERSION', 'RANDOM_WEIGHTS', 'INPUT_RANGE', 'Kind', 'ExportInfo', 'read_info',
    'check_info', 'file_sha256',
]

METADATA_PREFIX = 'sam3_cradio.'
FORMAT_VERSION = 1
RANDOM_WEIGHTS = 'random'
# Opset 23 writes attention as one ONNX `Attention` op instead of MatMul-Softmax-MatMul. onnxruntime runs that op
# with a fused kernel: at 1152 px (SO400M, window 12, 2 threads) 2.2x faster and 40% less memory than the opset-18
# graph, whose global blocks hold (16, 5184, 5184) score matrices. OpenVINO fuses either form itself (same speed).
# COMPAT_OPSET (18) is for older runtimes and TensorRT's ONNX parser.
DEFAULT_OPSET = 23
COMPAT_OPSET = 18
Kind = Literal['trunk', 'encoder']
INPUT_RANGE = {'trunk': '[-1, 1]', 'encoder': '[0, 1]'}


@dataclass(frozen=True)
class ExportInfo:
    """What an exported file holds, as recorded in its ``metadata_props``.

    Attributes:
        kind: 'trunk' (SAM3's input (B, 3, H, W) in [-1, 1] -> the adaptor's (B, C, H/16, W/16) map) or 'encoder'
            (RGB (B, 3, H, W) in [0, 1] -> summary and NCHW features of the backbone and each adaptor).
        backbone: registry name ('cradio_v4_so400m').
        resolution: the input side in px (fixed).
        window: 'global' or the ViTDet window in tokens (fixed).
        adaptors: the adaptor heads in the graph (trunk: one, 'sam3').
        weights_sha256: sha256 of the C-RADIO checkpoint the weights came from, or 'random'.
        weights_source: the checkpoint's file name or release (informative; the hash is what is checked).
        patch_size: pixels per token.
        channels: the trunk's output channels (``channel_list[-1]``); 0 for encoder files.
        input_name / output_names: the graph's tensor names.
        opset: the ONNX opset of the default domain.
        versions: torch, onnxscript and sam3_cradio versions that wrote the file.
    """
    kind: Kind
    backbone: str
    resolution: int
    window: Window
    adaptors: tuple[str, ...]
    weights_sha256: str
    weights_source: str
    patch_size: int
    channels: int
    input_name: str
    output_names: tuple[str, ...]
    opset: int
    versions: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def window_size(self) -> int | None:
        return window_tokens(self.window)

    @property
    def input_range(self) -> str:
        return INPUT_RANGE[self.kind]

    @property
    def spec(self) -> ModelSpec | None:
        """What the file was made for, as the registry names it; None for a backbone this version does not know (a
        file from a newer sam3-cradio)."""
        try:
            backbone = get_backbone(self.backbone)
        except ValueError:
            return None
        return ModelSpec(backbone, self.window, self.resolution)

    def describe(self) -> str:
        """'cradio_v4_so400m trunk: C-RADIOv4-SO400M · window 12 · 1152 px, adaptor sam3, weights c-radio_v4-so400m
        (sha256 1a2b..)': the registry's :meth:`~sam3_cradio.registry.ModelSpec.title`, with the input side always
        (the file's size is fixed)."""
        spec = self.spec
        if spec is None:
            title = f'{self.backbone} · window {format_window(self.window)} · {self.resolution} px'
        else:
            title = spec.title()
            if self.resolution == spec.backbone.image_size:  # the title leaves the native size out
                title += f' · {self.resolution} px'
        weights = ('random weights' if self.weights_sha256 == RANDOM_WEIGHTS
                   else f'weights {self.weights_source} (sha256 {self.weights_sha256[:12]}..)')
        return (f'{self.backbone} {self.kind}: {title}, adaptor{"s" if len(self.adaptors) > 1 else ""} '
                f'{",".join(self.adaptors)}, {weights}')

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries (strings)."""
        props = {
            'format': str(FORMAT_VERSION), 'kind': self.kind, 'backbone': self.backbone,
            'resolution': str(self.resolution), 'window': format_window(self.window),
            'adaptors': ','.join(self.adaptors), 'weights_sha256': self.weights_sha256,
            'weights_source': self.weights_source, 'patch_size': str(self.patch_size),
            'channels': str(self.channels), 'input_name': self.input_name, 'input_range': self.input_range,
            'output_names': ','.join(self.output_names), 'opset': str(self.opset),
            **{f'version.{k}': v for k, v in self.versions.items()},
        }
        return {METADATA_PREFIX + k: v for k, v in props.items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str | Path = '<props>') -> ExportInfo:
        """Read :meth:`to_props` back; an ONNX file without them was not written by ``sam3-cradio export``."""
        ours = {k[len(METADATA_PREFIX):]: v for k, v in props.items() if k.startswith(METADATA_PREFIX)}
        if 'format' not in ours:
            raise ValueError(
                f'{source} is an ONNX model, but not one written by sam3-cradio export (it has no '
                f'{METADATA_PREFIX}* metadata), so what it computes cannot be checked; export the trunk with '
                f'`sam3-cradio export --backbone NAME --window-size W --resolution PX --out FILE.onnx`')
        if int(ours['format']) > FORMAT_VERSION:
            raise ValueError(f'{source} was written by a newer sam3-cradio (metadata format {ours["format"]}, this '
                             f'version reads {FORMAT_VERSION}); upgrade sam3-cradio or export the file again')
        try:
            return cls(
                kind=ours['kind'], backbone=ours['backbone'], resolution=int(ours['resolution']),
                window=parse_window(ours['window']), adaptors=tuple(filter(None, ours['adaptors'].split(','))),
                weights_sha256=ours['weights_sha256'], weights_source=ours['weights_source'],
                patch_size=int(ours['patch_size']), channels=int(ours['channels']), input_name=ours['input_name'],
                output_names=tuple(ours['output_names'].split(',')), opset=int(ours['opset']),
                versions={k[len('version.'):]: v for k, v in ours.items() if k.startswith('version.')})
        except (KeyError, ValueError) as e:
            raise ValueError(f'{source}: its sam3_cradio metadata is incomplete or damaged ({e}); export it again') from None


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a checkpoint file; of a folder (an HF layout), over its files' relative names and contents in
    sorted order."""
    path = Path(path)
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob('*') if p.is_file())
    if not files:
        raise FileNotFoundError(f'checkpoint {str(path)!r} does not exist or holds no files')
    for p in files:
        if path.is_dir():
            h.update(str(p.relative_to(path)).encode() + b'\0')
        with open(p, 'rb') as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def read_info(path: str | os.PathLike) -> ExportInfo:
    """The :class:`ExportInfo` of an exported file, read without loading its weights.

    Raises:
        FileNotFoundError: no such file, or its external data file (``<name>.onnx.data``) is missing.
        ValueError: not an ONNX file (corrupted, truncated), an ONNX model without sam3_cradio metadata, or
            external data shorter than the graph says (a truncated copy).
    """
    try:
        import onnx
    except ImportError:
        raise ValueError('reading an exported trunk needs the onnx package: pip install "sam3-cradio[export]"') from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'exported model {str(path)!r} does not exist; make it with `sam3-cradio export`')
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: anything unreadable means the same thing
        raise ValueError(f'{path} is not a readable ONNX file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else "parse error"}); '
                         f'it is corrupted or truncated: export it again (sam3-cradio export)') from None
    if not model.graph.node:
        raise ValueError(f'{path} is not a readable ONNX model (no graph); it is corrupted or not ONNX: export it again')
    info = ExportInfo.from_props({p.key: p.value for p in model.metadata_props}, path)
    _check_external_data(model, path)
    return info


def _check_external_data(model: Any, path: Path) -> None:
    """Every external tensor's file exists and is long enough: a missing or cut ``.onnx.data`` fails here with its
    name, not deep inside a runtime."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    sizes: dict[str, int] = {}
    for t in model.graph.initializer:
        if not uses_external_data(t):
            continue
        ext = ExternalDataInfo(t)
        f = path.parent / ext.location
        if ext.location not in sizes:
            if not f.is_file():
                raise FileNotFoundError(f'{path} keeps its weights in {f.name}, which is not beside it; copy '
                                        f'{f.name} together with {path.name}')
            sizes[ext.location] = f.stat().st_size
        end = (ext.offset or 0) + (ext.length or 0)
        if end > sizes[ext.location]:
            raise ValueError(f'{f} is truncated ({sizes[ext.location]} bytes, the graph needs {end}); copy it '
                             f'again or export again')


def check_info(
        info: ExportInfo,
        source: str | os.PathLike,
        *,
        kind: Kind | None = None,
        backbone: str | None = None,
        resolution: int | None = None,
        window: Window | None = None,
        adaptor: str | None = None,
        weights_sha256: str | None = None,
        weights_required: bool = False,
) -> None:
    """Refuse a file made for something else than what the caller builds (None: not checked).

    ``weights_sha256`` is the sha256 of the checkpoint the caller names: the file must hold exactly those
    weights. ``weights_required``: the caller loads pretrained SAM3 weights, so random trunk weights are refused.
    """
    wrong = []
    if kind is not None and info.kind != kind:
        wrong.append(f'it is an {info.kind} export, this needs a {kind} export'
                     + (' (export without --encoder)' if kind == 'trunk' else ''))
    if backbone is not None and info.backbone != backbone:
        wrong.append(f'backbone {info.backbone}, not {backbone}')
    if resolution is not None and info.resolution != resolution:
        wrong.append(f'{info.resolution} px inputs, not {resolution} px')
    if window is not None and info.window != window:
        wrong.append(f'window {format_window(info.window)}, not {format_window(window)}')
    if adaptor is not None and adaptor not in info.adaptors:
        wrong.append(f'adaptor {",".join(info.adaptors)}, not {adaptor}')
    if weights_sha256 is not None and info.weights_sha256 != weights_sha256:
        got = 'random weights' if info.weights_sha256 == RANDOM_WEIGHTS else f'the weights of {info.weights_source}'
        wrong.append(f'{got} (sha256 {info.weights_sha256[:12]}..), not the given checkpoint\'s '
                     f'(sha256 {weights_sha256[:12]}..)')
    elif weights_required and info.weights_sha256 == RANDOM_WEIGHTS:
        wrong.append('random weights, while the model loads pretrained SAM3 weights (pass pretrained=False / '
                     '--random-weights, or export from a checkpoint)')
    if wrong:
        raise ValueError(
            f'{source} was exported as {info.describe()}: ' + '; '.join(wrong) + '. Export the trunk for this model '
            f'(sam3-cradio export --backbone {backbone or info.backbone} --window-size '
            f'{format_window(window if window is not None else info.window)} --resolution '
            f'{resolution or info.resolution} --out FILE.onnx) or build the model the file was made for')
