"""Decoding and resizing images in DataLoader worker processes, so that it overlaps the model.

Each image is read with the package's one pixel-value rule (:func:`sam3_cradio.images.to_rgb_array`) and resized
straight to the model's input side exactly as sam3's ``Sam3Processor`` resizes (torchvision v2, bilinear,
antialiased, on uint8), so that a batch from here gives what ``Sam3ImagePredictor.set_image`` gives. An image
that cannot be read becomes an error entry, not an exception: a job reports it and goes on.
"""
from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ['LoadedImage', 'ImageDataset', 'iter_batches']


@dataclass
class LoadedImage:
    """One decoded image: ``image`` (3, R, R) uint8 at the model's side R, ``size`` the original (H, W); or
    ``error`` (and no image) when it could not be read."""

    index: int
    image: torch.Tensor | None
    size: tuple[int, int]
    error: str | None = None


class ImageDataset(Dataset):
    """``paths[i]`` -> :class:`LoadedImage` resized to ``resolution`` x ``resolution``."""

    def __init__(self, paths: Sequence[Path], resolution: int) -> None:
        self.paths = list(paths)
        self.resolution = int(resolution)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> LoadedImage:
        from PIL import Image
        from torchvision.transforms.v2 import functional as F

        from ..images import to_rgb_array

        try:
            rgb = to_rgb_array(self.paths[i])
            # PIL -> tensor as Sam3Processor.set_image does, so that the resize takes the same kernel path
            x = F.to_image(Image.fromarray(rgb))
            x = F.resize(x, [self.resolution, self.resolution], antialias=True)
            # handed over as a numpy array: pickled through the worker's pipe, where a tensor would be passed as a
            # file descriptor by a sharing thread that prints a traceback when Ctrl-C stops the workers
            image = x.as_subclass(torch.Tensor).contiguous().numpy()
            return LoadedImage(i, image, (int(rgb.shape[0]), int(rgb.shape[1])))
        except (ValueError, FileNotFoundError) as e:  # the image rule's own messages say what is wrong
            return LoadedImage(i, None, (0, 0), str(e))
        except Exception as e:  # anything else a decoder raises on a bad file: report it, do not stop the job
            return LoadedImage(i, None, (0, 0), f'{self.paths[i]}: {type(e).__name__}: {e}')


def _as_list(batch: list[LoadedImage]) -> list[LoadedImage]:
    return batch


def _ignore_sigint(worker_id: int) -> None:
    # Ctrl-C goes to the whole process group; the main process decides when to stop and shuts the workers down
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def iter_batches(dataset: ImageDataset, batches: Sequence[Sequence[int]], workers: int = 0
                 ) -> Iterator[list[LoadedImage]]:
    """The :class:`LoadedImage` lists of ``batches`` (lists of dataset indices), in order, decoded by
    ``workers`` processes (0: in this process) while the caller works on the previous ones."""
    if workers < 0:
        raise ValueError(f'workers must be >= 0, got {workers}')
    if not batches:
        return
    loader = DataLoader(dataset, batch_sampler=[list(b) for b in batches], collate_fn=_as_list,
                        num_workers=workers, worker_init_fn=_ignore_sigint if workers else None,
                        prefetch_factor=2 if workers else None)
    # A Ctrl-C while the workers start is kept for this process (its handler runs once they have started) and
    # not raised in a just-forked worker before it ignores SIGINT.
    previous = signal.getsignal(signal.SIGINT)
    pending: list[int] = []
    swap = workers > 0 and previous is not None and _in_main_thread()
    if swap:
        signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        it = iter(loader)
    finally:
        if swap:
            signal.signal(signal.SIGINT, previous)
    if pending and callable(previous):
        previous(signal.SIGINT, None)
    try:
        for batch in it:
            for item in batch:
                if item.image is not None:
                    item.image = torch.as_tensor(item.image)
            yield batch
    finally:
        del it  # shuts the workers down now, not whenever the iterator is collected


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
