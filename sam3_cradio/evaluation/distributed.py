"""Processes of a run: torchrun's ranks as a :class:`DistContext`, and a single-process view while a model is
built."""
from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ['DistContext', 'init_distributed', 'single_process_env']

_DIST_TIMEOUT = datetime.timedelta(hours=24)  # ranks wait for the slowest one at the end


def _device(name: str) -> torch.device:
    import torch

    return torch.device(name)


@dataclass
class DistContext:
    """Where this process sits: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: _device('cpu'))
    initialized: bool = False  # this object started the process group (and closes it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            if dist.get_backend() == 'nccl':
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable) on every rank; ``obj`` itself in a single process."""
        if not self.initialized:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if dist.get_backend() == 'nccl' else None)
        return box[0]

    def close(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialized = False


def init_distributed(device: str | None = None) -> DistContext:
    """Read torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` and start a process group when ``WORLD_SIZE > 1``.

    Args:
        device: 'cpu', 'cuda' or 'cuda:N'; default CUDA when available. With several ranks, 'cuda' means
            ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local = int(os.environ.get('LOCAL_RANK', '0'))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f'RANK={rank} / WORLD_SIZE={world} are inconsistent; launch with torchrun or set neither')
    import torch

    dev = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'--device {device} was asked for but CUDA is not available; use --device cpu')
        if dev.index is None:
            dev = torch.device('cuda', local if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    ctx = DistContext(rank, world, local, dev)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend='nccl' if dev.type == 'cuda' else 'gloo', timeout=_DIST_TIMEOUT)
            ctx.initialized = True
    return ctx


@contextlib.contextmanager
def single_process_env() -> Iterator[None]:
    """Hide torchrun's ``RANK`` / ``WORLD_SIZE`` while a model is built.

    sam3's video classes read them in ``__init__`` (``sam3_video_base.py``, ``sam3_image.py``
    ``Sam3ImageOnVideoMultiGPU``) to split one video's frames over GPUs. Here each rank runs whole sequences on its
    own, so every model must believe it is alone.
    """
    saved = {k: os.environ.get(k) for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')}
    os.environ.update(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0')
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
