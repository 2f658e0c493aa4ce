"""The backbone registry: names and aliases, derived windows, the one window parser, resolve()'s checks."""
from __future__ import annotations

import pytest

from sam3_cradio import registry
from sam3_cradio.registry import GLOBAL, get_backbone, parse_model, parse_window, resolve


def test_registered_backbones_and_aliases():
    assert {'pe', 'cradio_v4_h', 'cradio_v4_so400m', 'cradio_tiny', 'pe_tiny'} <= set(registry.BACKBONES)
    assert registry.list_backbones(pretrained_only=True) == ['cradio_v4_h', 'cradio_v4_so400m', 'pe']
    for alias, name in [('h', 'cradio_v4_h'), ('C-RADIOv4-SO400M', 'cradio_v4_so400m'), ('nvidia/C-RADIOv4-H', 'cradio_v4_h'),
                        ('c-radio_v4-h', 'cradio_v4_h'), ('tiny', 'cradio_tiny'), ('PE', 'pe')]:
        assert get_backbone(alias).name == name
    with pytest.raises(ValueError, match=r"unknown backbone 'vit_h'.*cradio_v4_h"):
        get_backbone('vit_h')


def test_facts():
    h, so, pe, tiny = (get_backbone(n) for n in ('cradio_v4_h', 'cradio_v4_so400m', 'pe', 'cradio_tiny'))
    assert (h.patch_size, h.image_size, h.grid, h.release) == (16, 1152, 72, 'c-radio_v4-h')
    assert so.release == 'c-radio_v4-so400m'
    assert (pe.patch_size, pe.image_size, pe.grid, pe.fixed_window) == (14, 1008, 72, 24)
    assert (tiny.grid, tiny.pretrained) == (16, False)
    # the releases a backbone names exist in the encoder's release table
    from sam3_cradio.cradio import RELEASES, VARIANTS
    for b in registry.BACKBONES.values():
        if b.is_cradio:
            assert b.release in VARIANTS and (b.release in RELEASES) == b.pretrained


def test_windows_are_derived_from_the_grid():
    h = get_backbone('cradio_v4_h')
    # 72 = 2^3 * 3^2: every divisor below 72
    assert h.windows() == [1, 2, 3, 4, 6, 8, 9, 12, 18, 24, 36]
    assert h.suggested_windows() == [6, 8, 9, 12, 18, 24]
    assert h.window_choices() == [GLOBAL, 6, 8, 9, 12, 18, 24]
    assert h.windows(768) == [1, 2, 3, 4, 6, 8, 12, 16, 24]                # grid 48
    assert get_backbone('cradio_tiny').window_choices() == [GLOBAL, 2, 4]   # grid 16: 3 to 12 windows per side
    assert get_backbone('pe').windows() == [] and get_backbone('pe').window_choices() == [24]


@pytest.mark.parametrize('text,expected', [
    ('global', GLOBAL), ('GLOBAL', GLOBAL), (' 12 ', 12), ('8', 8), (8, 8), (None, None), ('', None)])
def test_parse_window(text, expected):
    assert parse_window(text) == expected


@pytest.mark.parametrize('text', ['0', '-4', 'none', 'null', 'globl', '8.5', True])
def test_parse_window_refuses(text):
    with pytest.raises(ValueError, match="'global' or a positive number"):
        parse_window(text)


def test_parse_model():
    assert parse_model('cradio_v4_h') == (get_backbone('cradio_v4_h'), None)
    assert parse_model('h:8') == (get_backbone('cradio_v4_h'), 8)
    assert parse_model('so400m:global') == (get_backbone('cradio_v4_so400m'), GLOBAL)
    with pytest.raises(ValueError, match='after the colon'):
        parse_model('cradio_v4_h:')


def test_resolve_defaults():
    spec = resolve('cradio_v4_h')
    assert (spec.window, spec.window_size, spec.resolution, spec.grid) == (GLOBAL, None, 1152, 72)
    assert resolve('pe').window == 24 and resolve('pe').resolution == 1008
    spec = resolve('cradio_v4_so400m:12', resolution=768)
    assert (spec.window, spec.window_size, spec.grid) == (12, 12, 48)
    assert spec.title() == 'C-RADIOv4-SO400M · window 12 · 768 px'
    assert resolve('pe').title(short=True) == 'PE'
    assert resolve('cradio_tiny', 'global').title(short=True) == 'tiny · global'
    assert resolve('cradio_v4_h', 8).hydra_overrides()[-2:] == ['backbone.image_size=1152', 'backbone.window_size=8']
    assert resolve('cradio_v4_h').hydra_overrides()[-1] == 'backbone.window_size=null'


@pytest.mark.parametrize('args,match', [
    (('pe', 12), "pe's attention window is fixed at 24"),
    (('pe', 'global'), "pe's attention window is fixed at 24"),
    (('pe:24',), "pe's attention window is fixed at 24"),
    (('cradio_v4_h', 5), r"window 5 does not divide the 72x72 token grid.*\[1, 2, 3, 4, 6, 8, 9, 12, 18, 24, 36\]"),
    (('cradio_v4_h', 8, 1000), "1000 px is not a multiple of cradio_v4_h's patch size 16; nearest size for window 8: 1024"),
    (('cradio_v4_h', 8, 1040), 'or resolution 1024 for window 8'),
    (('cradio_v4_h', None, 0), 'positive number of pixels'),
    (('cradio_v4_h:8', 12), 'two windows given'),
])
def test_resolve_errors(args, match):
    with pytest.raises(ValueError, match=match):
        resolve(*args)


def test_resolve_accepts_every_listed_window():
    for b in registry.BACKBONES.values():
        for res in (b.image_size, b.image_size // 2):
            for w in b.windows(res):
                assert resolve(b.name, w, res).grid % w == 0
    # PE pads its windows: any multiple of its patch is fine, whatever its window
    assert resolve('pe', resolution=504).grid == 36


def test_register_refuses_a_taken_name():
    with pytest.raises(ValueError, match='already registered'):
        registry.register_backbone(registry.Backbone('h', 'sam3_cradio', 'Another H', 'H2', 16, 1152))


def test_speed_models_come_from_the_registry():
    from sam3_cradio.registry import parse_model, speed_models

    assert speed_models() == ['cradio_v4_h:8', 'cradio_v4_so400m:12'] and speed_models(tiny=True) == ['cradio_tiny:3']
    # each one a window its backbone takes at the benchmarks' sizes (native 1152 px; the tiny benchmarks' 192 px)
    for m, px in [(m, None) for m in speed_models()] + [(m, 192) for m in speed_models(tiny=True)]:
        b, w = parse_model(m)
        assert w in b.windows(px) and w == b.speed_window
