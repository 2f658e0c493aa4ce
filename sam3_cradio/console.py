"""What the ``sam3-cradio`` command prints besides its results: the log format, our warnings as one line each, and
the third-party noise it hides.

Only the command line calls :func:`setup_console` (once, in ``main``); importing :mod:`sam3_cradio` changes
neither :mod:`logging` nor :mod:`warnings`, so library users keep Python's normal warnings. With ``verbose`` the
command shows everything: every warning in Python's own format, third-party log lines and our debug lines.

Warning filters are appended after the interpreter's own, so what a user sets with ``python -W`` or
``PYTHONWARNINGS`` (``-W error``, ``-W ignore``, ``-W always``) still comes first and wins.
"""
from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import NamedTuple, TextIO

__all__ = ['NOISE', 'Noise', 'setup_console', 'reset_console', 'format_warning', 'LOG_FORMAT']

LOG_FORMAT = '%(levelname)s %(name)s: %(message)s'
_PACKAGE = __name__.rpartition('.')[0]  # 'sam3_cradio'
_PACKAGE_DIR = Path(__file__).resolve().parent


class Noise(NamedTuple):
    """A third-party warning the command hides: ``message`` and ``module`` are regular expressions matched at the
    start of the warning's text and of the module it is attributed to, as in :func:`warnings.filterwarnings`."""
    category: type[Warning]
    message: str
    module: str
    why: str


_JIT = ('torch.jit.script is deprecated: sam3 (box_ops, sam1_utils) and timm script helpers at import; '
        'nothing for the user to do or change')
_AUTOCAST = ("sam3 decorates its video model's methods with torch.autocast('cuda') (at import) and its tracker makes "
             'one at construction; on a machine without CUDA torch says it turns that autocast off, which is what '
             'a CPU run wants')

# The known third-party warnings that ask nothing of the user, in one place (shown again by ``-v``).
NOISE: tuple[Noise, ...] = (
    Noise(FutureWarning, r'`torch\.jit\.script` is deprecated', r'torch\.jit(\.|$)', _JIT),
    Noise(DeprecationWarning, r'`torch\.jit\.script` is deprecated', r'torch\.jit(\.|$)', _JIT),
    Noise(UserWarning, r'CUDA is not available or torch_xla is imported\. Disabling autocast', r'sam3(\.|$)',
          _AUTOCAST),
)


def _is_ours(category: type[Warning], filename: str) -> bool:
    """A warning category defined in sam3_cradio, or any warning attributed to a line of sam3_cradio."""
    if getattr(category, '__module__', '').split('.')[0] == _PACKAGE:
        return True
    try:
        return Path(filename).resolve().is_relative_to(_PACKAGE_DIR)
    except (OSError, ValueError, TypeError):
        return False


def _where(filename: str, lineno: int) -> str:
    """A third-party warning's place, short: 'sam3/model/sam3_video_inference.py:798'."""
    parts = Path(filename).parts
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] in ('site-packages', 'dist-packages'):
            return f'{"/".join(parts[i + 1:])}:{lineno}'
    return f'{Path(filename).name}:{lineno}'


def format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int) -> str:
    """One line, no source line: ``warning: <message>`` for ours; a third-party one also names its category and
    place (``warning: <message> (UserWarning, pkg/mod.py:12)``)."""
    text = str(message).strip()
    if _is_ours(category, filename):
        return f'warning: {text}'
    return f'warning: {text} ({category.__name__}, {_where(filename, lineno)})'


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    """:data:`warnings.showwarning` while the console is set up: one line on stderr, above any progress bar."""
    text = format_warning(message, category, filename, lineno)
    stream = sys.stderr if file is None else file
    if stream is None:  # pythonw: nowhere to write
        return
    try:
        from tqdm import tqdm

        tqdm.write(text, file=stream)  # clears and redraws an active progress bar around the line
    except ImportError:
        try:
            stream.write(text + '\n')
        except OSError:
            pass
    except OSError:
        pass


class _StderrHandler(logging.StreamHandler):
    """Writes to the ``sys.stderr`` of the moment (as :data:`logging.lastResort` does), not the one at set-up."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class _State:
    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.warnings = warnings.catch_warnings()  # saves (and on exit restores) the filters and showwarning
        self.handler: logging.Handler | None = None
        self.root_level: int | None = None
        self.package_level = logging.getLogger(_PACKAGE).level


_state: _State | None = None


def setup_console(verbose: bool = False) -> None:
    """Set up the command line's console; the CLI's ``main`` calls it once.

    * Log lines as ``LEVEL logger: message`` on stderr: ours from INFO (DEBUG with ``verbose``), third-party
      ones from WARNING (INFO with ``verbose``). A root logger that already has handlers (an application, pytest)
      keeps them and its level.
    * Every warning that is shown is one line on stderr, ``warning: <message>``, without a source line
      (:func:`format_warning`); the third-party warnings in :data:`NOISE` are hidden.
    * ``verbose``: no filter, Python's own warning format.

    Calling it again replaces the earlier set-up; :func:`reset_console` undoes it.
    """
    global _state
    reset_console()
    state = _State(verbose)
    state.warnings.__enter__()
    try:
        if not verbose:
            for noise in NOISE:  # appended: the user's -W / PYTHONWARNINGS filters come first
                warnings.filterwarnings('ignore', message=noise.message, category=noise.category,
                                        module=noise.module, append=True)
            warnings.showwarning = _show_warning
        root = logging.getLogger()
        if not root.handlers:
            state.handler = _StderrHandler()
            state.handler.setFormatter(logging.Formatter(LOG_FORMAT))
            root.addHandler(state.handler)
            state.root_level = root.level
            root.setLevel(logging.INFO if verbose else logging.WARNING)
        logging.getLogger(_PACKAGE).setLevel(logging.DEBUG if verbose else logging.INFO)
    except BaseException:
        state.warnings.__exit__(None, None, None)
        raise
    _state = state


def reset_console() -> None:
    """Undo :func:`setup_console` (warning filters, ``showwarning``, log handler and levels); a no-op when it was
    not set up."""
    global _state
    state, _state = _state, None
    if state is None:
        return
    state.warnings.__exit__(None, None, None)
    root = logging.getLogger()
    if state.handler is not None:
        root.removeHandler(state.handler)
        if state.root_level is not None:
            root.setLevel(state.root_level)
    logging.getLogger(_PACKAGE).setLevel(state.package_level)

