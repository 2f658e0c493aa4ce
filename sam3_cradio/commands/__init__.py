"""The ``sam3-cradio`` commands, one module each, all wired the same way: ``HELP`` (the one-line summary),
``add_arguments(parser)`` and ``run(args) -> int``; optional ``DESCRIPTION`` and ``EPILOG``.
:mod:`sam3_cradio.cli` builds one sub-command per module of :data:`COMMANDS` and dispatches; nothing imports it.
"""
from __future__ import annotations

__all__ = ['COMMANDS']

#: command name -> module under sam3_cradio.commands, in the order ``sam3-cradio --help`` lists them
COMMANDS: dict[str, str] = {
    'segment': 'segment',
    'track': 'track',
    'encode': 'encode',
    'eval': 'eval',
    'bench': 'bench',
    'export': 'export',
    'demo': 'demo',
    'distill': 'distill',
}
