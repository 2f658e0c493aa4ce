"""Command line: ``sam3-cradio <command>``. It only dispatches: each command's options and run live in its module
under :mod:`sam3_cradio.commands`."""
from __future__ import annotations

import argparse
import importlib
import sys

from .commands import COMMANDS
from .console import setup_console

__all__ = ['main', 'build_parser']


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='sam3-cradio', description='C-RADIOv4 as the image backbone of SAM3.')
    p.add_argument('-v', '--verbose', action='store_true',
                   help='show every log line and warning, third-party ones included')
    sub = p.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name, module in COMMANDS.items():
        m = importlib.import_module(f'{__package__}.commands.{module}')
        cmd = sub.add_parser(name, help=m.HELP, description=getattr(m, 'DESCRIPTION', m.HELP),
                             epilog=getattr(m, 'EPILOG', None), formatter_class=argparse.RawDescriptionHelpFormatter)
        m.add_arguments(cmd)
        cmd.add_argument('-v', '--verbose', action='store_true', default=argparse.SUPPRESS,
                         help='show every log line and warning, third-party ones included')
        cmd.set_defaults(_run=m.run, _parser=cmd)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``sam3-cradio`` with ``argv`` (default: the process's). User errors (bad input, missing files or
    weights) end as one line on stderr with exit status 2; Ctrl-C as one line with 130."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        a = build_parser().parse_args(argv)
        setup_console(verbose=a.verbose)
        return a._run(a)
    except (ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # commands with work to keep (segment, eval) say what they kept
        print(str(e) or 'interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
