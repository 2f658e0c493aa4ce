"""Semi-supervised video object segmentation (masks given on the first frame) with sam3's tracker.

SAM2's protocol (``tools/vos_inference.py``): every object's first-frame mask goes in with ``add_new_mask``, then
one forward ``propagate_in_video`` over the whole video; an output pixel belongs to an object where its mask
logit is > 0. :class:`~sam3_cradio.video.Sam3VideoPredictor` takes text, box and click prompts but no masks, so
this drives the tracker of the video model (``model.tracker``, sam3's ``Sam3TrackerPredictor``) directly, without
its detector. The tracker has no backbone of its own in the video model: sam3 feeds it the SAM2-style neck of the
shared vision backbone (``sam3_video_base.py``, ``run_backbone_and_detection`` step 3). :class:`FrameFeatures`
computes exactly those features, one frame at a time when the tracker asks for them, and keeps only the last two.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

__all__ = ['FrameFeatures', 'track_from_first_masks', 'load_frame']


def load_frame(path: Path, size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """A frame as sam3's video model takes it: RGB, resized (PIL bilinear) to ``size`` x ``size``, normalised with
    mean = std = 0.5 -> ((3, size, size) float32, (H, W) of the original)."""
    img = Image.open(path).convert('RGB')
    hw = (img.height, img.width)
    a = np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0
    return (torch.from_numpy(a).permute(2, 0, 1) - 0.5) / 0.5, hw


class FrameFeatures:
    """The tracker's ``inference_state['cached_features']``: ``get(frame_idx)`` returns ``(image, backbone_out)`` the
    way sam3's video model caches them, computing a frame on first access (LRU of ``keep`` frames)."""

    def __init__(self, model: torch.nn.Module, frames: Sequence[Path], size: int, device: torch.device,
                 expected_hw: Optional[Tuple[int, int]] = None, keep: int = 2) -> None:
        self.model, self.frames, self.size, self.device = model, list(frames), int(size), device
        self.expected_hw = expected_hw
        self.keep = keep
        self._cache: 'OrderedDict[int, Tuple[torch.Tensor, Dict[str, Any]]]' = OrderedDict()

    def get(self, frame_idx: int, default: Any = None) -> Any:
        if not isinstance(frame_idx, int) or not 0 <= frame_idx < len(self.frames):
            return default
        if frame_idx in self._cache:
            self._cache.move_to_end(frame_idx)
            return self._cache[frame_idx]
        image, hw = load_frame(self.frames[frame_idx], self.size)
        if self.expected_hw is not None and hw != tuple(self.expected_hw):
            raise ValueError(f'{self.frames[frame_idx]} is {hw[1]}x{hw[0]} but the annotations are '
                             f'{self.expected_hw[1]}x{self.expected_hw[0]} (W x H)')
        image = image.to(self.device)
        out = self.model.detector.backbone.forward_image(image[None])['sam2_backbone_out']
        decoder = self.model.tracker.sam_mask_decoder
        fpn = list(out['backbone_fpn'])
        fpn[0] = decoder.conv_s0(fpn[0])  # as sam3_video_base.py does before caching
        fpn[1] = decoder.conv_s1(fpn[1])
        tracker_out = {'vision_features': fpn[-1], 'vision_pos_enc': list(out['vision_pos_enc']), 'backbone_fpn': fpn}
        entry = (image, {'tracker_backbone_out': tracker_out})
        self._cache[frame_idx] = entry
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return entry


def track_from_first_masks(
        model: torch.nn.Module,
        frames: Sequence[Path],
        first_masks: Dict[int, np.ndarray],
        non_overlap: bool = True,
) -> Iterator[Tuple[int, Dict[int, np.ndarray]]]:
    """Track objects given by their first-frame masks through ``frames``.

    Args:
        model: a video model from ``build_sam3(..., mode='video')``.
        frames: frame image paths, in order.
        first_masks: object id -> (H, W) bool mask on frame 0, at the frames' resolution (an empty mask is allowed:
            the object is tracked from nothing, as SAM2's evaluation does).
        non_overlap: make objects' masks disjoint (each pixel to the highest-scoring object), as for DAVIS' label
            maps; SA-V objects may overlap (SAM2 evaluates SA-V with ``non_overlap_masks=false``).

    Yields:
        ``(frame_idx, {object id: (H, W) bool mask})`` for every frame, in order.
    """
    cfg = getattr(model, 'sam3_cradio_cfg', None)
    if cfg is None or cfg.get('mode') != 'video':
        raise ValueError('track_from_first_masks needs a video model from build_sam3(..., mode="video")')
    if not first_masks:
        raise ValueError('first_masks is empty: give at least one object mask on frame 0')
    shapes = {np.asarray(m).shape for m in first_masks.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f'first_masks must be (H, W) masks of one size, got shapes {sorted(shapes)}')
    height, width = next(iter(shapes))
    tracker = model.tracker
    device = next(model.parameters()).device
    features = FrameFeatures(model, frames, int(cfg['image_size']), device, (height, width))
    # bf16 on CUDA, as SAM2's VOS evaluation runs; on CPU float32 (compat shim B15 casts the tracker's bf16 memory)
    amp = torch.autocast('cuda', dtype=torch.bfloat16) if device.type == 'cuda' else contextlib.nullcontext()
    saved = tracker.non_overlap_masks_for_output
    tracker.non_overlap_masks_for_output = non_overlap
    try:
        with torch.inference_mode(), amp:
            state = tracker.init_state(video_height=height, video_width=width, num_frames=len(frames),
                                       cached_features=features)
            for obj_id in sorted(first_masks):
                tracker.add_new_mask(state, 0, int(obj_id), torch.from_numpy(np.asarray(first_masks[obj_id], bool)))
            stream = tracker.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=None, reverse=False,
                                                tqdm_disable=True, propagate_preflight=True)
            for frame_idx, obj_ids, _low_res, video_res, _scores in stream:
                masks = (video_res[:, 0] > 0).cpu().numpy()
                yield int(frame_idx), {int(o): masks[i] for i, o in enumerate(obj_ids)}
    finally:
        tracker.non_overlap_masks_for_output = saved
        with contextlib.suppress(Exception):
            features._cache.clear()
