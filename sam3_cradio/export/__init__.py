"""Deploying the trunk: ONNX export (:mod:`.export`), what an exported file is for (:mod:`.info`) and the
exported trunk in onnxruntime or OpenVINO as a SAM3 trunk (:mod:`.runtimes`). Needs the optional extra:
``pip install "sam3-cradio[export]"``; importing this package does not import onnx or the runtimes.

    from sam3_cradio.export import export_trunk
    from sam3_cradio import build_sam3

    export_trunk('trunk.onnx', 'cradio_v4_so400m', window_size=12, resolution=1152)
    model = build_sam3('cradio_v4_so400m', 12, trunk_runtime='openvino', trunk_model='trunk.onnx')

Guide, options and timings: ``docs/deploy.md``.
"""
from __future__ import annotations

from .export import (
    COMPAT_OPSET,
    DEFAULT_OPSET,
    ExportResult,
    export_encoder,
    export_trunk,
    export_trunk_module,
)
from .info import ExportInfo, check_info, file_sha256, read_info
from .runtimes import (
    EXPORTED_RUNTIMES,
    PRECISIONS,
    RUNTIMES,
    ExportedModel,
    ExportedTrunk,
    RuntimeOptions,
    cpu_has_bf16,
    runtime_unavailable,
    trunk_config,
)

__all__ = [
    'COMPAT_OPSET', 'DEFAULT_OPSET', 'ExportInfo', 'ExportResult', 'check_info', 'export_encoder', 'export_trunk',
    'export_trunk_module', 'file_sha256', 'read_info', 'EXPORTED_RUNTIMES', 'PRECISIONS', 'RUNTIMES',
    'ExportedModel', 'ExportedTrunk', 'RuntimeOptions', 'cpu_has_bf16', 'runtime_unavailable', 'trunk_config',
]
