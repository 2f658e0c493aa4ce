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

from .._lazy import lazy_getattr

# Imported on first use (torch, onnx and the runtimes load only when a name is used)
_LAZY = {
    'COMPAT_OPSET': 'export',
    'DEFAULT_OPSET': 'export',
    'ExportResult': 'export',
    'export_encoder': 'export',
    'export_trunk': 'export',
    'export_trunk_module': 'export',
    'ExportInfo': 'info',
    'check_info': 'info',
    'file_sha256': 'info',
    'read_info': 'info',
    'EXPORTED_RUNTIMES': 'runtimes',
    'PRECISIONS': 'runtimes',
    'RUNTIMES': 'runtimes',
    'ExportedModel': 'runtimes',
    'ExportedTrunk': 'runtimes',
    'RuntimeOptions': 'runtimes',
    'cpu_has_bf16': 'runtimes',
    'runtime_unavailable': 'runtimes',
    'trunk_config': 'runtimes',
}
__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = list(_LAZY)
