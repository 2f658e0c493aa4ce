"""One module per evaluation (``sam3-cradio eval NAME``), each with ``DESCRIPTION``, ``add_arguments(parser)`` and
``run(args) -> int``; :mod:`sam3_cradio.commands.eval` wires them in as sub-commands."""
