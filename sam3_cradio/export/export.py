"""ONNX export of the C-RADIO trunk (SAM3's input in, the ``sam3`` adaptor's feature map out) or of the encoder
alone (summaries and features of chosen adaptors), with torch's current exporter (``torch.onnx.export(...,
dynamo=True)``, onnxscript).

What a file is for is written into it: :class:`~.info.ExportInfo` goes to the model's ``metadata_props``
(``sam3_cradio.*`` keys: backbone, input side, window, adaptors, the weights' sha256 or ``random``), and
:func:`~.info.read_info` / :func:`~.info.check_info` (:mod:`.info`) refuse a file made for another backbone, size or
window, a corrupted file and an ONNX file this package did not write, before any runtime loads it.

The input side and the window are fixed (C-RADIO's position embedding and ViTDet windows follow the token grid);
the batch dimension is dynamic.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..registry import ModelSpec, Window, format_window, resolve, window_from_tokens
from .info import COMPAT_OPSET, DEFAULT_OPSET, RANDOM_WEIGHTS, ExportInfo, file_sha256

_logger = logging.getLogger(__name__)

__all__ = ['DEFAULT_OPSET', 'COMPAT_OPSET', 'ExportResult', 'export_trunk', 'export_encoder', 'export_trunk_module',
           'onnx_files']

# Weights above this go to an external data file (<name>.onnx.data) beside the graph, so that reading the
# metadata (and protobuf's 2 GiB limit) never means parsing a gigabyte of weights.
EXTERNAL_DATA_BYTES = 256 * 2 ** 20


@dataclass
class ExportResult:
    """An export: the recorded :class:`ExportInfo`, the files written (the .onnx and, for large models, its
    external data file, which must stay beside it), the seconds taken, and the largest absolute difference from
    the torch module per runtime that checked the file (empty when not verified)."""
    info: ExportInfo
    path: Path
    files: list[Path]
    seconds: float
    max_abs: dict[str, float] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


# --------------------------------------------------------------------------------------------------------------
# What is traced
# --------------------------------------------------------------------------------------------------------------

class _TrunkGraph(nn.Module):
    """The trunk contract as a single-output graph: (B, 3, H, W) in [-1, 1] -> (B, C, H/16, W/16)."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images)[-1]


class _EncoderGraph(nn.Module):
    """The encoder: RGB in [0, 1] -> (summary, NCHW features) of the backbone, then of each adaptor in order."""

    def __init__(self, encoder: nn.Module, adaptors: Sequence[str]) -> None:
        super().__init__()
        self.encoder = encoder
        self.adaptors = tuple(adaptors)

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.encoder(rgb, feature_fmt='NCHW')
        return tuple(t for name in ('backbone', *self.adaptors) for t in (out[name].summary, out[name].features))


def encoder_output_names(adaptors: Sequence[str]) -> tuple[str, ...]:
    """'backbone.summary', 'backbone.features', then '<adaptor>.summary', '<adaptor>.features' per adaptor."""
    return tuple(f'{n}.{part}' for n in ('backbone', *adaptors) for part in ('summary', 'features'))


# --------------------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------------------

def _cradio_spec(backbone: str | ModelSpec, window_size: Window | str | None, resolution: int | None) -> ModelSpec:
    """The registry's check of the request, before anything is built or traced."""
    if isinstance(backbone, ModelSpec):
        if window_size is not None or resolution is not None:
            raise ValueError('a ModelSpec fixes window and resolution; do not pass them again')
        spec = backbone
    else:
        spec = resolve(backbone, window_size, resolution)
    if not spec.backbone.is_cradio:
        raise ValueError(f'{spec.name} is SAM3\'s own encoder; export handles C-RADIO backbones '
                         f'(cradio_v4_h, cradio_v4_so400m, cradio_tiny)')
    return spec


def _load_encoder(spec: ModelSpec, adaptors: Sequence[str], cradio_checkpoint: str | os.PathLike | None,
                  pretrained: bool, seed: int) -> tuple[nn.Module, str, str]:
    """The encoder with ``adaptors``, at the spec's window; returns it, the weights' sha256 (or 'random') and
    their source."""
    from ..checkpoint import hub_download
    from ..cradio import RELEASES, VARIANTS, create_cradio, load_cradio

    b = spec.backbone
    if cradio_checkpoint is not None:
        path = Path(cradio_checkpoint)
        if not path.exists():
            raise FileNotFoundError(f'C-RADIO checkpoint {str(path)!r} does not exist')
        encoder = load_cradio(path, adaptor_names=adaptors, window_size=spec.window_size)
        sha, source = file_sha256(path), path.name
    elif pretrained:
        if not b.pretrained or b.release not in RELEASES:
            from ..assets import CRADIO_TINY_CHECKPOINT
            raise ValueError(f'{b.name} has no released weights; pass a checkpoint (cradio_checkpoint=, '
                             f'--cradio-checkpoint; the shipped fixture is {CRADIO_TINY_CHECKPOINT}) or random '
                             f'weights (pretrained=False, --random-weights)')
        path = hub_download(RELEASES[b.release].checkpoint, f'C-RADIO {b.release!r}')
        encoder = load_cradio(b.release, adaptor_names=adaptors, window_size=spec.window_size)
        sha, source = file_sha256(path), b.release
    else:
        torch.manual_seed(seed)
        encoder = create_cradio(b.release, adaptor_names=tuple(adaptors), window_size=spec.window_size)
        sha, source = RANDOM_WEIGHTS, f'random (seed {seed})'
    # the file will say "this is <backbone>": the weights must have its architecture
    ref = VARIANTS.get(b.release)
    arch = encoder.arch
    if ref is not None and (arch.embed_dim, arch.depth) != (ref.embed_dim, ref.depth):
        raise ValueError(
            f'the checkpoint holds a {arch.embed_dim}-wide, {arch.depth}-block C-RADIO, but {b.name} is '
            f'{ref.embed_dim}-wide with {ref.depth} blocks; pass the backbone this checkpoint belongs to')
    return encoder.eval(), sha, source


# --------------------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------------------

def _versions() -> dict[str, str]:
    from .. import __version__

    out = {'torch': torch.__version__, 'sam3_cradio': __version__}
    try:
        import onnxscript
        out['onnxscript'] = onnxscript.__version__
    except ImportError:
        pass
    return out


def onnx_files(path: str | os.PathLike) -> list[Path]:
    """The files of an exported model: the .onnx and its external data file when it has one."""
    path = Path(path)
    data = path.with_name(path.name + '.data')
    return [path] + ([data] if data.is_file() else [])


def _require_exporter() -> None:
    missing = []
    for name in ('onnx', 'onnxscript'):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ValueError(f'ONNX export needs {" and ".join(missing)}: pip install "sam3-cradio[export]"')


def _export(graph: nn.Module, example: torch.Tensor, info: ExportInfo, out: Path) -> list[Path]:
    """Trace ``graph`` with torch.export (dynamic batch), translate to ONNX at ``info.opset``, write the metadata,
    and save next to ``out`` atomically (a temporary folder, then renamed into place)."""
    batch = torch.export.Dim('batch', min=1, max=4096)
    graph = graph.eval()
    # An example batch of 2: torch.export specialises a dimension of size 1 to a constant.
    with torch.no_grad():
        program = torch.onnx.export(
            graph, (example,), dynamo=True, input_names=[info.input_name], output_names=list(info.output_names),
            dynamic_shapes={info.input_name: {0: batch}}, opset_version=info.opset, verbose=False, optimize=True)
    if program is None:  # the legacy exporter's return; dynamo=True always gives a program
        raise RuntimeError('torch.onnx.export(dynamo=True) returned no program')
    program.model.metadata_props.update(info.to_props())
    weight_bytes = sum(p.numel() * p.element_size() for p in graph.parameters())
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f'.{out.name}.') as tmp:
        staged = Path(tmp) / out.name
        program.save(staged, external_data=weight_bytes > EXTERNAL_DATA_BYTES)
        written = onnx_files(staged)
        stale = out.with_name(out.name + '.data')
        for f in written:
            os.replace(f, out.parent / f.name)
        if len(written) == 1 and stale.exists():  # an older export's weights would look like this file's
            stale.unlink()
    return onnx_files(out)


def _verify(result: ExportResult, graph: nn.Module, runtimes: Sequence[str], seed: int) -> None:
    """Largest |difference| between the torch graph and each runtime on a batch of 1 (the traced example had 2,
    so this also checks the dynamic batch)."""
    from .runtimes import ExportedModel

    info = result.info
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, info.resolution, info.resolution, generator=gen)
    if info.kind == 'trunk':
        x = x * 2 - 1
    with torch.inference_mode():
        ref = graph(x)
    ref = (ref,) if isinstance(ref, torch.Tensor) else tuple(ref)
    for rt in runtimes:
        model = ExportedModel(result.path, rt, precision='fp32')
        outs = model.run(x)
        result.max_abs[rt] = max(float((outs[n] - r).abs().max()) for n, r in zip(info.output_names, ref))
        _logger.info('%s vs torch: max |diff| %.3g', rt, result.max_abs[rt])
        del model


def export_trunk_module(
        trunk: nn.Module,
        spec: ModelSpec,
        out: str | os.PathLike,
        *,
        weights_sha256: str = RANDOM_WEIGHTS,
        weights_source: str = RANDOM_WEIGHTS,
        opset: int = DEFAULT_OPSET,
        verify: Sequence[str] = (),
        seed: int = 0,
) -> ExportResult:
    """Export an already-built trunk (a :class:`~sam3_cradio.trunk.CRadioTrunk` set to ``spec``'s window), e.g. the
    benchmark's random-weight trunks. :func:`export_trunk` builds the trunk from a checkpoint and calls this."""
    _require_exporter()
    spec = _cradio_spec(spec, None, None)
    encoder = getattr(trunk, 'encoder', None)
    if encoder is None or not hasattr(trunk, 'channel_list'):
        raise ValueError(f'expected a C-RADIO trunk (sam3_cradio.trunk.CRadioTrunk), got {type(trunk).__name__}')
    if encoder.window_size != spec.window_size:
        raise ValueError(f'the trunk runs window {format_window(window_from_tokens(encoder.window_size))}, the spec says '
                         f'{format_window(spec.window)}; set trunk.encoder.set_window_size first')
    out = Path(out)
    info = ExportInfo(
        kind='trunk', backbone=spec.name, resolution=spec.resolution, window=spec.window,
        adaptors=(trunk.adaptor,), weights_sha256=weights_sha256, weights_source=weights_source,
        patch_size=spec.backbone.patch_size, channels=int(trunk.channel_list[-1]), input_name='images',
        output_names=('features',), opset=opset, versions=_versions())
    # SAM3's normalisation: inputs in [-1, 1]
    return _export_timed(_TrunkGraph(trunk), info, out, -1.0, verify, seed)


def _export_timed(graph: nn.Module, info: ExportInfo, out: Path, low: float, verify: Sequence[str],
                  seed: int) -> ExportResult:
    """Trace ``graph`` on a seeded batch of 2 inputs uniform in [``low``, 1] at ``info``'s size, write ``out``,
    time it, and run it once in each runtime of ``verify``."""
    gen = torch.Generator().manual_seed(seed)
    example = torch.rand(2, 3, info.resolution, info.resolution, generator=gen) * (1 - low) + low
    t0 = time.perf_counter()
    _logger.info('exporting %s to %s', info.describe(), out)
    files = _export(graph, example, info, out)
    result = ExportResult(info, out, files, time.perf_counter() - t0)
    _verify(result, graph, verify, seed + 1)
    return result


def export_trunk(
        out: str | os.PathLike,
        backbone: str | ModelSpec = 'cradio_v4_h',
        window_size: Window | str | None = None,
        resolution: int | None = None,
        *,
        cradio_checkpoint: str | os.PathLike | None = None,
        pretrained: bool = True,
        adaptor: str = 'sam3',
        opset: int = DEFAULT_OPSET,
        verify: Sequence[str] = (),
        seed: int = 0,
) -> ExportResult:
    """Export C-RADIO plus its ``adaptor`` head as SAM3's trunk: ``images`` (B, 3, H, W) in [-1, 1] (SAM3's
    normalisation) -> ``features`` (B, C, H/16, W/16), at a fixed size and window, batch dynamic.

    Args:
        out: the .onnx path; models over 256 MiB of weights also write ``<out>.data`` beside it.
        backbone, window_size, resolution: as :func:`~sam3_cradio.build.build_sam3` takes them; checked by the
            registry before anything is built (a size the window does not divide is refused with the nearest).
        cradio_checkpoint: a C-RADIO .pth.tar / .safetensors; default: the backbone's release (Hugging Face
            cache), or random weights with ``pretrained=False``.
        adaptor: the head SAM3 reads ('sam3').
        opset: ONNX opset (default 23: attention as one op; 18 for older runtimes and TensorRT).
        verify: runtimes ('onnxruntime', 'openvino') that run the written file once against torch; the largest
            absolute difference is in the result's ``max_abs``.
        seed: random weights (``pretrained=False``) and the example inputs.

    Returns:
        :class:`ExportResult`; the file's metadata holds :class:`ExportInfo`.
    """
    spec = _cradio_spec(backbone, window_size, resolution)  # refuse bad sizes and windows before any work
    _require_exporter()
    from ..trunk import CRadioTrunk

    encoder, sha, source = _load_encoder(spec, [adaptor], cradio_checkpoint, pretrained, seed)
    trunk = CRadioTrunk(encoder, adaptor).eval()
    trunk.image_size = spec.resolution
    return export_trunk_module(trunk, spec, out, weights_sha256=sha, weights_source=source, opset=opset,
                               verify=verify, seed=seed)


def export_encoder(
        out: str | os.PathLike,
        backbone: str | ModelSpec = 'cradio_v4_h',
        window_size: Window | str | None = None,
        resolution: int | None = None,
        *,
        adaptors: Sequence[str] = ('sam3',),
        cradio_checkpoint: str | os.PathLike | None = None,
        pretrained: bool = True,
        opset: int = DEFAULT_OPSET,
        verify: Sequence[str] = (),
        seed: int = 0,
) -> ExportResult:
    """Export the C-RADIO encoder alone: ``rgb`` (B, 3, H, W) in [0, 1] -> ``backbone.summary`` (B, S),
    ``backbone.features`` (B, D, H/16, W/16), and ``<adaptor>.summary`` / ``<adaptor>.features`` for each of
    ``adaptors`` (names from the checkpoint's teachers: 'sam3', 'siglip2-g', 'dino_v3_7b'); fixed size and
    window, dynamic batch. Other arguments as :func:`export_trunk`."""
    spec = _cradio_spec(backbone, window_size, resolution)
    _require_exporter()
    adaptors = tuple(dict.fromkeys(adaptors))
    encoder, sha, source = _load_encoder(spec, adaptors, cradio_checkpoint, pretrained, seed)
    out = Path(out)
    info = ExportInfo(
        kind='encoder', backbone=spec.name, resolution=spec.resolution, window=spec.window, adaptors=adaptors,
        weights_sha256=sha, weights_source=source, patch_size=spec.backbone.patch_size, channels=0,
        input_name='rgb', output_names=encoder_output_names(adaptors), opset=opset, versions=_versions())
    # the encoder's own input: RGB in [0, 1]
    return _export_timed(_EncoderGraph(encoder, adaptors), info, out, 0.0, verify, seed)
