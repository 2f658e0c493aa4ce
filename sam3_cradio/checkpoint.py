"""Checkpoint IO: safe loading, Hugging Face downloads and key accounting.

Everything that touches files or the hub lives here; model code receives plain state dicts.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .files import save_atomic

_logger = logging.getLogger(__name__)

__all__ = [
    'CheckpointError', 'RadioCheckpoint', 'HubFile', 'safe_torch_load', 'load_safetensors', 'hub_download',
    'read_radio_checkpoint', 'save_radio_checkpoint', 'check_keys',
]

PathLike = str | os.PathLike


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, truncated, or not what the caller asked for."""


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face model repository."""
    repo_id: str
    filename: str

    @property
    def url(self) -> str:
        return f'https://huggingface.co/{self.repo_id}/blob/main/{self.filename}'


def hub_download(file: HubFile, what: str) -> Path:
    """Return the local path of ``file``, from the HF cache or downloaded into it.

    Uses the normal huggingface_hub cache (``HF_HOME`` / ``HF_HUB_CACHE``). When the file is neither cached nor
    downloadable (offline, ``HF_HUB_OFFLINE=1``, no network), fail at once with a message naming the file and how
    to provide it.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        # A cached file needs no network round trip at all.
        return Path(hf_hub_download(file.repo_id, file.filename, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    try:
        # huggingface_hub retries unreachable hosts for ~30 s; find out in a few seconds instead.
        unreachable = None if constants.HF_HUB_OFFLINE else _unreachable(constants.ENDPOINT)
        if unreachable:
            raise ConnectionError(unreachable)
        return Path(hf_hub_download(file.repo_id, file.filename))
    except Exception as e:  # offline, DNS failure, gated repo, ...: all mean "the file is not here"
        raise FileNotFoundError(
            f'{what} weights are not in the Hugging Face cache and could not be downloaded '
            f'({type(e).__name__}: {e}).\n'
            f'Fetch {file.filename!r} from the repo {file.repo_id!r} ({file.url}) on a machine with network, e.g.\n'
            f'    hf download {file.repo_id} {file.filename}\n'
            f'then either copy that machine\'s Hugging Face cache (~/.cache/huggingface/hub) here, or pass the '
            f'downloaded file\'s local path instead of the name.'
        ) from None


def _unreachable(endpoint: str, timeout: float = 3.0) -> str | None:
    """Why ``endpoint`` cannot be reached directly, or None. Skipped (None) behind a proxy, which we cannot probe."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy')):
        return None
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError as e:
        return f'{url.hostname} is unreachable: {e}'
    return None


_ZIP_MAGIC = b'PK\x03\x04'   # torch.save's default format since 1.6
_PICKLE_MAGIC = b'\x80'       # the legacy format: a pickle, protocol 2 or later


def _refused_objects(message: str) -> list[str]:
    """The disallowed globals torch names in a weights-only refusal ('GLOBAL builtins.eval ...')."""
    return sorted(set(re.findall(r'GLOBAL ([\w.]+)', message)))


def _reason(e: BaseException) -> str:
    """torch's own cause in one line, without its advice to load with ``weights_only=False``."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    cause = next((ln for ln in lines if ln.startswith('WeightsUnpickler error:')), lines[0] if lines else type(e).__name__)
    return cause.removeprefix('WeightsUnpickler error: ')[:200]


def safe_torch_load(path: PathLike) -> Any:
    """``torch.load`` with ``weights_only=True``, allowing only ``argparse.Namespace`` beyond tensors.

    Never falls back to unrestricted unpickling, and never advises it. Three failures are told apart: a file that
    is not a PyTorch checkpoint at all (neither zip nor pickle), a damaged one (download again), and one holding
    Python objects outside the allow-list (refused, the objects named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint {str(path)!r} does not exist')
    size = path.stat().st_size
    with open(path, 'rb') as f:
        head = f.read(4)
    if not head.startswith(_ZIP_MAGIC) and not head.startswith(_PICKLE_MAGIC):
        what = 'is empty' if size == 0 else f'starts with {head!r}'
        raise CheckpointError(
            f'{path} is not a PyTorch checkpoint: it {what}, where torch.save writes a zip archive (or a legacy '
            f'pickle). Check the path; weights in .safetensors files need the .safetensors extension.')
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        refused = _refused_objects(str(e))
        if refused:
            raise CheckpointError(
                f'{path} was refused: it holds Python objects outside the safe allow-list (tensors, containers, '
                f'argparse.Namespace): {", ".join(refused)}. Released checkpoints hold none; this file was re-saved '
                f'with extra objects or is not what it claims to be. Use the released file, or re-save only the '
                f'state dict and args.') from None
        raise CheckpointError(
            f'could not read {path} ({size} bytes): the file is damaged ({_reason(e)}); '
            f'download it again.') from None
    except Exception as e:  # noqa: BLE001 - anything else torch raises on a file with the right magic means damage
        raise CheckpointError(
            f'could not read {path} ({size} bytes): {_reason(e)}. '
            f'The file is truncated or corrupted; download it again.'
        ) from None


def load_safetensors(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a .safetensors file, turning format errors into a message that says what to do."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'checkpoint {str(path)!r} does not exist')
    try:
        return load_file(str(path), device='cpu')
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f'could not read {path} ({path.stat().st_size} bytes): {e}. '
            f'The file is truncated or corrupted; download it again.'
        ) from None


@dataclass
class RadioCheckpoint:
    """A RADIO checkpoint normalised to the released ``.pth.tar`` layout.

    Attributes:
        state_dict: RADIO keys (``base_model.*``, ``input_conditioner.*``, ``_heads.*``, ``_feature_projections.*``).
        args: the training ``argparse.Namespace`` as a dict.
        source: where it was read from (for messages). The HF ``model.safetensors`` export carries no adaptor heads.
    """
    state_dict: dict[str, torch.Tensor]
    args: dict[str, Any]
    source: str


# The HF export (`hf_model.RADIOModel`) stores the backbone as radio_model.model.* and the conditioner as
# radio_model.input_conditioner.*; summary_idxs is a buffer recomputed from args.teachers.
_HF_PREFIXES = (('radio_model.model.', 'base_model.'), ('radio_model.input_conditioner.', 'input_conditioner.'))
_HF_DERIVED = ('radio_model.summary_idxs',)


def _from_hf_layout(path: Path) -> RadioCheckpoint:
    config_path = path.parent / 'config.json'
    if not config_path.is_file():
        raise CheckpointError(
            f'{path} is in the Hugging Face layout, which keeps the architecture in a config.json beside the '
            f'weights; {config_path} is missing. Download config.json from the same repo into {path.parent}.'
        )
    with open(config_path) as f:
        config = json.load(f)
    if 'args' not in config:
        raise CheckpointError(f'{config_path} has no "args" entry: it is not a RADIO config.json')
    tensors = load_safetensors(path)
    state_dict = {}
    unknown = []
    for k, v in tensors.items():
        for src, dst in _HF_PREFIXES:
            if k.startswith(src):
                state_dict[dst + k[len(src):]] = v
                break
        else:
            if k not in _HF_DERIVED:
                unknown.append(k)
    if not state_dict:
        raise CheckpointError(
            f'{path} has no radio_model.* tensors: it is not a RADIO export (first keys: {list(tensors)[:5]})')
    if unknown:
        raise CheckpointError(f'{path} has tensors this loader does not know: {sorted(unknown)[:20]}')
    args = dict(config['args'])
    return RadioCheckpoint(state_dict, args, str(path))


def _from_pth(path: Path) -> RadioCheckpoint:
    chk = safe_torch_load(path)
    if not isinstance(chk, Mapping) or 'args' not in chk or not ({'state_dict', 'state_dict_ema'} & set(chk)):
        found = list(chk)[:8] if isinstance(chk, Mapping) else type(chk).__name__
        hint = ''
        if isinstance(chk, Mapping) and ('model' in chk or any(str(k).startswith('detector.') for k in chk)):
            hint = ' It looks like a SAM3 checkpoint (sam3.pt); pass it as the SAM3 checkpoint instead.'
        raise CheckpointError(
            f'{path} is not a RADIO checkpoint: expected a dict with "args" and "state_dict" (or "state_dict_ema"), '
            f'found {found}.{hint}'
        )
    # EMA weights are the ones RADIO evaluates; training-only reparametrisations are off for them.
    key = 'state_dict_ema' if 'state_dict_ema' in chk else 'state_dict'
    args = chk['args']
    args = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
    if key == 'state_dict_ema':
        args.update(spectral_reparam=False, spectral_heads=False, damp=None)
    _logger.info('read %s from %s', key, path)
    return RadioCheckpoint(dict(chk[key]), args, str(path))


def read_radio_checkpoint(path: PathLike) -> RadioCheckpoint:
    """Read a RADIO checkpoint: a released ``.pth.tar``, an HF ``model.safetensors`` (with its config.json), or a
    directory holding either (an HF snapshot folder)."""
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob('*.pth.tar')) or sorted(path.glob('*.safetensors'))
        if len(candidates) != 1:
            raise CheckpointError(
                f'{path} is a directory with {len(candidates)} candidate checkpoints '
                f'({[c.name for c in candidates]}); pass the file itself')
        path = candidates[0]
    if path.suffix == '.safetensors':
        return _from_hf_layout(path)
    return _from_pth(path)


def save_radio_checkpoint(
        path: PathLike,
        state_dict: Mapping[str, torch.Tensor],
        args: argparse.Namespace | Mapping[str, Any],
        half: bool = True,
) -> None:
    """Write ``{'state_dict', 'args'}`` in the released layout (fp16 tensors when ``half``, as NVIDIA ships)."""
    if not isinstance(args, argparse.Namespace):
        args = argparse.Namespace(**dict(args))
    dtype = torch.float16 if half else None
    sd = {k: (v.detach().to('cpu', dtype) if v.is_floating_point() else v.detach().cpu())
          for k, v in state_dict.items()}
    # never leave a half-written checkpoint under the real name
    save_atomic(path, lambda tmp: torch.save({'state_dict': sd, 'args': args}, tmp))


def check_keys(
        missing: Iterable[str],
        unexpected: Iterable[str],
        what: str,
        allow_missing: Sequence[str] = (),
        allow_unexpected: Sequence[str] = (),
) -> tuple[list[str], list[str]]:
    """Raise one error naming every missing/unexpected key not covered by the glob allow-lists.

    Returns the (missing, unexpected) keys that the allow-lists covered, so callers can count them.
    """
    def split(keys, patterns):
        keys = list(keys)
        allowed = [k for k in keys if any(fnmatch.fnmatchcase(k, p) for p in patterns)]
        return [k for k in keys if k not in set(allowed)], allowed

    bad_missing, ok_missing = split(missing, allow_missing)
    bad_unexpected, ok_unexpected = split(unexpected, allow_unexpected)
    if bad_missing or bad_unexpected:
        def show(keys):
            return ', '.join(keys[:20]) + (f' ... (+{len(keys) - 20} more)' if len(keys) > 20 else '')
        parts = []
        if bad_missing:
            parts.append(f'{len(bad_missing)} missing: {show(bad_missing)}')
        if bad_unexpected:
            parts.append(f'{len(bad_unexpected)} unexpected: {show(bad_unexpected)}')
        raise CheckpointError(f'{what}: keys do not match the model; ' + '; '.join(parts))
    return ok_missing, ok_unexpected
