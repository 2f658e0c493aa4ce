"""The command line's console (sam3_cradio/console.py): our warnings as one line, known third-party noise hidden,
everything with -v, and nothing changed for library users."""
from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest
import torch

from sam3_cradio import console
from sam3_cradio.console import NOISE, reset_console, setup_console
from sam3_cradio.predictor import TextTruncatedWarning

# the exact texts a CPU run of `sam3-cradio segment` printed before this module (torch 2.x, sam3 0.1.4)
JIT = '`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`.'
AUTOCAST = 'CUDA is not available or torch_xla is imported. Disabling autocast.'
SITE = '/usr/lib/python3/site-packages'


@pytest.fixture
def clean_warnings():
    """The interpreter's start-up state (no filter: every warning shown once per place), restored after; with
    the console reset too."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        yield
        reset_console()


def warn_from(module: str, message: str, category: type[Warning], filename: str, lineno: int = 1) -> None:
    """A warning attributed to ``module`` (as filters see it), with a fresh once-per-place registry."""
    warnings.warn_explicit(message, category, filename, lineno, module=module, registry={})


def noise() -> None:
    warn_from('torch.jit._script', JIT, FutureWarning, f'{SITE}/torch/jit/_script.py', 1491)
    warn_from('torch.jit._script', JIT, DeprecationWarning, f'{SITE}/torch/jit/_script.py', 1491)
    warn_from('sam3.model.sam3_video_inference', AUTOCAST, UserWarning,
              f'{SITE}/sam3/model/sam3_video_inference.py', 798)
    warn_from('sam3.model.sam3_tracking_predictor', AUTOCAST, UserWarning,
              f'{SITE}/sam3/model/sam3_tracking_predictor.py', 49)


def test_the_named_noise_is_hidden(clean_warnings, capsys):
    setup_console()
    noise()
    assert capsys.readouterr().err == ''
    # the same words from elsewhere (our code, another package) are not noise
    warn_from('sam3_cradio.build', AUTOCAST, UserWarning, console.__file__)
    assert capsys.readouterr().err == f'warning: {AUTOCAST}\n'


def _scripted(x: torch.Tensor) -> torch.Tensor:
    return x + 1


def real_noise() -> None:
    """The real calls: torch.jit.script (as sam3 and timm do at import) and, without CUDA, what sam3's
    ``@torch.autocast(device_type='cuda')`` does at import, from a sam3 module."""
    torch.jit.script(_scripted)
    if not torch.cuda.is_available():
        exec(compile("import torch\ntorch.autocast(device_type='cuda', dtype=torch.bfloat16)", 'fake.py', 'exec'),
             {'__name__': 'sam3.model.fake'})


def test_the_real_noise_is_hidden_and_shown_with_verbose(clean_warnings, capsys):
    setup_console()
    real_noise()
    assert capsys.readouterr().err == ''
    setup_console(verbose=True)
    with warnings.catch_warnings(record=True) as log:
        real_noise()
    shown = {str(w.message) for w in log}
    assert JIT in shown
    assert torch.cuda.is_available() or AUTOCAST in shown


def test_our_warning_is_one_line(clean_warnings, capsys):
    setup_console()
    warnings.warn('the prompt is longer than 32 tokens; truncated', TextTruncatedWarning)
    assert capsys.readouterr().err == 'warning: the prompt is longer than 32 tokens; truncated\n'


def test_other_shown_warnings_are_one_line_with_category_and_place(clean_warnings, capsys):
    setup_console()
    warn_from('somepkg.mod', 'something to know', RuntimeWarning, f'{SITE}/somepkg/mod.py', 12)
    assert capsys.readouterr().err == 'warning: something to know (RuntimeWarning, somepkg/mod.py:12)\n'


def test_verbose_shows_everything_in_pythons_format(clean_warnings):
    setup_console(verbose=True)
    assert warnings.showwarning is not console._show_warning
    with warnings.catch_warnings(record=True) as log:
        noise()
    assert [(w.category, str(w.message)) for w in log] == [
        (FutureWarning, JIT), (DeprecationWarning, JIT), (UserWarning, AUTOCAST), (UserWarning, AUTOCAST)]
    text = warnings.formatwarning(log[0].message, log[0].category, log[0].filename, log[0].lineno)
    assert text.startswith(f'{SITE}/torch/jit/_script.py:1491: FutureWarning: {JIT}')


def test_user_warning_options_come_first(clean_warnings):
    """`python -W error` (filters set before main runs) still turns the noise into an error."""
    warnings.simplefilter('error')
    setup_console()
    with pytest.raises(FutureWarning):
        noise()
    reset_console()
    warnings.resetwarnings()
    warnings.simplefilter('ignore')  # and `-W ignore` hides our own warnings too
    setup_console()
    with warnings.catch_warnings(record=True) as log:
        warnings.warn('x', TextTruncatedWarning)
    assert log == []


def test_setup_is_idempotent_and_reset_restores(clean_warnings):
    filters, show = list(warnings.filters), warnings.showwarning
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    package_level = logging.getLogger('sam3_cradio').level
    setup_console()
    once = list(warnings.filters)
    assert len(once) == len(filters) + len(NOISE)
    setup_console()  # again: the same state, nothing doubled
    assert warnings.filters == once and warnings.showwarning is console._show_warning
    setup_console(verbose=True)
    assert warnings.filters == filters and warnings.showwarning is show
    assert logging.getLogger('sam3_cradio').level == logging.DEBUG
    reset_console()
    reset_console()  # a no-op
    assert warnings.filters == filters and warnings.showwarning is show
    assert (root.handlers, root.level) == (handlers, level)
    assert logging.getLogger('sam3_cradio').level == package_level


def test_log_format_ours_from_info_third_party_from_warning(clean_warnings, capsys, monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, 'handlers', [])  # as in the command (pytest adds its own handlers)
    # (a made-up third-party logger: real ones may have levels of their own, onnx_ir's after an export)
    setup_console()
    logging.getLogger('sam3_cradio.jobs').info('2 images')
    logging.getLogger('sam3_cradio.jobs').debug('detail')
    logging.getLogger('somepkg.passes').info('Removed 23 unused nodes')
    logging.getLogger('somepkg.passes').warning('a third-party warning')
    assert capsys.readouterr().err.splitlines() == [
        'INFO sam3_cradio.jobs: 2 images', 'WARNING somepkg.passes: a third-party warning']
    setup_console(verbose=True)
    logging.getLogger('sam3_cradio.jobs').debug('detail')
    logging.getLogger('somepkg.passes').info('Removed 23 unused nodes')
    assert capsys.readouterr().err.splitlines() == [
        'DEBUG sam3_cradio.jobs: detail', 'INFO somepkg.passes: Removed 23 unused nodes']
    reset_console()
    assert root.handlers == []


def test_the_library_leaves_warnings_alone():
    """Nothing imported so far in this process set the console up (only the CLI's main does, and tests reset it)."""
    assert warnings.showwarning is not console._show_warning
    patterns = {n.message for n in NOISE}
    assert not [f for f in warnings.filters if f[1] is not None and f[1].pattern in patterns]


@pytest.mark.slow
def test_importing_every_module_leaves_warnings_and_logging_alone():
    """A fresh interpreter imports every sam3_cradio module: the warning filters it adds (if any) come from
    third-party imports, never ours; showwarning and the root logger are untouched."""
    code = '''
import importlib, logging, pkgutil, warnings
import torch, sam3_cradio
from sam3_cradio.console import NOISE
before, show = list(warnings.filters), warnings.showwarning
for m in pkgutil.walk_packages(sam3_cradio.__path__, 'sam3_cradio.'):
    try:
        importlib.import_module(m.name)
    except ImportError:  # an optional extra not installed
        pass
patterns = {n.message for n in NOISE}
added = [f for f in warnings.filters if f not in before]
assert not [f for f in added if f[1] is not None and f[1].pattern in patterns], added
assert not [f for f in added if (f[2].__module__ or '').startswith('sam3_cradio')], added
assert warnings.showwarning is show
assert logging.getLogger().handlers == [] and logging.getLogger('sam3_cradio').level == logging.NOTSET
print('ok')
'''
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == 'ok'
