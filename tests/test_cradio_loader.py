"""Checkpoint loading: released .pth.tar, the HF model.safetensors layout, the HF cache, and clear errors."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sam3_cradio import load_cradio
from sam3_cradio.checkpoint import CheckpointError, safe_torch_load


def _backbone(model, x):
    with torch.no_grad():
        return model(x)['backbone']


def _write_hf_layout(tiny_dir: Path, out: Path) -> Path:
    """Rebuild the HF export's model.safetensors from model.pth.tar using the fixture's manifest."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((tiny_dir / 'hf' / 'model.safetensors.manifest.json').read_text())
    sd = safe_torch_load(tiny_dir / 'model.pth.tar')['state_dict']
    tensors = {}
    for name, spec in manifest['tensors'].items():
        src = spec.get('source_key_in_model_pth_tar')
        if src is None:  # radio_model.summary_idxs, an int64 buffer derived from args.teachers
            tensors[name] = torch.tensor([0, 1], dtype=torch.int64)
        else:
            tensors[name] = sd[src].float().contiguous()
        assert list(tensors[name].shape) == spec['shape'], name
    save_file(tensors, str(out / 'model.safetensors'))
    shutil.copy(tiny_dir / 'hf' / 'config.json', out / 'config.json')
    return out / 'model.safetensors'


def test_hf_safetensors_layout_matches_pth(tmp_path, tiny_dir, tiny_ckpt, tiny_ref):
    path = _write_hf_layout(tiny_dir, tmp_path / 'hf')
    x = tiny_ref['g256x384/input']
    ref = _backbone(load_cradio(tiny_ckpt), x)
    for source in (path, path.parent):  # the file, or the snapshot folder holding it
        for window in (None, 4):
            got = _backbone(load_cradio(source, window_size=window), x)
            want = ref if window is None else _backbone(load_cradio(tiny_ckpt, window_size=4), x)
            assert torch.equal(got.summary, want.summary)
            assert torch.equal(got.features, want.features)
    assert torch.allclose(ref.features, tiny_ref['g256x384/features'], atol=1e-4)


def test_hf_layout_has_no_adaptors(tmp_path, tiny_dir):
    path = _write_hf_layout(tiny_dir, tmp_path / 'hf')
    with pytest.raises(ValueError, match=r'backbone only.*\.pth\.tar'):
        load_cradio(path, adaptor_names=['sam3'])


def test_hf_layout_without_config_json(tmp_path, tiny_dir):
    path = _write_hf_layout(tiny_dir, tmp_path / 'hf')
    (path.parent / 'config.json').unlink()
    with pytest.raises(CheckpointError, match='config.json'):
        load_cradio(path)


def test_prefers_state_dict_ema(tmp_path, tiny_ckpt, tiny_ref):
    chk = safe_torch_load(tiny_ckpt)
    broken = {k: torch.zeros_like(v) for k, v in chk['state_dict'].items()}
    path = tmp_path / 'ema.pth.tar'
    torch.save({'state_dict': broken, 'state_dict_ema': chk['state_dict'], 'args': chk['args']}, path)
    out = _backbone(load_cradio(path), tiny_ref['g224/input'])
    assert (out.features - tiny_ref['g224/features']).abs().max() <= 1e-4


@pytest.mark.parametrize('suffix', ['.pth.tar', '.safetensors'])
def test_truncated_file(tmp_path, tiny_dir, tiny_ckpt, suffix):
    full = tiny_ckpt if suffix == '.pth.tar' else _write_hf_layout(tiny_dir, tmp_path / 'hf')
    cut = (tmp_path / 'hf' if suffix == '.safetensors' else tmp_path) / f'cut{suffix}'
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated or corrupted'):
        load_cradio(cut)
    assert full.read_bytes() == data  # nothing touched the original


def test_checkpoint_of_another_model(tmp_path):
    sam3_like = tmp_path / 'sam3.pt'
    torch.save({'model': {'detector.backbone.vision_backbone.trunk.pos_embed': torch.zeros(1)}}, sam3_like)
    with pytest.raises(CheckpointError, match='not a RADIO checkpoint.*SAM3'):
        load_cradio(sam3_like)

    resnet = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(4, 3, 7, 7)}, resnet)
    with pytest.raises(CheckpointError, match='not a RADIO checkpoint'):
        load_cradio(resnet)

    no_teachers = tmp_path / 'plain_vit.pth.tar'
    torch.save({'state_dict': {'base_model.blocks.0.attn.qkv.weight': torch.zeros(3, 1)},
                'args': argparse.Namespace(model='vit_tiny_patch16_224')}, no_teachers)
    with pytest.raises(CheckpointError, match="no 'teachers'"):
        load_cradio(no_teachers)


class _Payload:
    """Unpickling this would create a file: the loader must refuse it without running it."""
    marker: Path = Path('/nonexistent')

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_refuses_arbitrary_pickles(tmp_path, tiny_ckpt):
    _Payload.marker = tmp_path / 'pwned'
    chk = safe_torch_load(tiny_ckpt)
    chk['extra'] = _Payload()
    path = tmp_path / 'evil.pth.tar'
    torch.save(chk, path)
    with pytest.raises(CheckpointError, match='allow-list') as e:
        load_cradio(path)
    assert not _Payload.marker.exists()
    # the refused object is named, and turning the safety off is never suggested
    assert 'objects outside the safe allow-list' in str(e.value) and ': getattr.' in str(e.value)
    assert 'weights_only' not in str(e.value) and 'issue' not in str(e.value).lower()


@pytest.mark.parametrize('content,match', [
    (b'hello, I am a text file\n', r"is not a PyTorch checkpoint: it starts with b'hell'"),
    (b'', 'is not a PyTorch checkpoint: it is empty'),
])
def test_a_file_that_is_not_a_checkpoint(tmp_path, content, match):
    path = tmp_path / 'notes.pth.tar'
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as e:
        load_cradio(path)
    assert 'weights_only' not in str(e.value) and 'allow-list' not in str(e.value)
    assert path.read_bytes() == content


def test_a_damaged_legacy_pickle_says_download_again(tmp_path):
    import pickle

    path = tmp_path / 'legacy.pth.tar'
    data = pickle.dumps({'state_dict': {}, 'args': {'x': list(range(1000))}}, protocol=2)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='download it again') as e:
        load_cradio(path)
    assert 'allow-list' not in str(e.value) and 'weights_only' not in str(e.value)


def test_unknown_adaptor_lists_teachers(tiny_ckpt):
    with pytest.raises(ValueError, match=r"'dino_v3'.*\['siglip2-g', 'dino_v3_7b', 'sam3'\]"):
        load_cradio(tiny_ckpt, adaptor_names=['dino_v3'])


def test_unknown_name_or_missing_file():
    with pytest.raises(FileNotFoundError, match='c-radio_v4-h'):
        load_cradio('c-radio_v9-z')
    with pytest.raises(FileNotFoundError):
        load_cradio('/no/such/file.pth.tar')


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch):
    """An empty, offline Hugging Face cache."""
    import huggingface_hub.constants as c
    cache = tmp_path / 'hub'
    cache.mkdir()
    monkeypatch.setattr(c, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(c, 'HF_HUB_OFFLINE', True)
    return cache


def test_release_offline_and_not_cached(hf_cache):
    with pytest.raises(FileNotFoundError) as info:
        load_cradio('c-radio_v4-h')
    message = str(info.value)
    assert 'nvidia/C-RADIOv4-H' in message and 'c-radio_v4-h_half.pth.tar' in message
    assert 'hf download' in message


def test_release_from_hf_cache(hf_cache, tiny_ckpt, tiny_ref):
    # the layout huggingface_hub itself writes: refs/main -> snapshots/<commit>/<file>
    repo = hf_cache / 'models--nvidia--C-RADIOv4-SO400M'
    commit = 'a' * 40
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(commit)
    snapshot = repo / 'snapshots' / commit
    snapshot.mkdir(parents=True)
    shutil.copy(tiny_ckpt, snapshot / 'c-radio_v4-so400m_half.pth.tar')
    for name in ('c-radio_v4-so400m', 'cradio_v4_so400m', 'nvidia/C-RADIOv4-SO400M'):
        model = load_cradio(name, adaptor_names=['sam3'])
        assert model.max_resolution == 2048 and model.preferred_resolution == (512, 512)
    out = _backbone(model, tiny_ref['g224/input'])
    assert (out.features - tiny_ref['g224/features']).abs().max() <= 1e-4


def test_release_unreachable_hub_fails_fast(hf_cache, monkeypatch):
    import huggingface_hub.constants as c

    from sam3_cradio import checkpoint
    monkeypatch.setattr(c, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(checkpoint, '_unreachable', lambda endpoint: f'{endpoint} is unreachable: no route')
    with pytest.raises(FileNotFoundError, match=r'(?s)unreachable.*c-radio_v4-so400m_half\.pth\.tar'):
        load_cradio('c-radio_v4-so400m')
