"""One module per evaluation (``sam3-cradio eval NAME``), each with ``build_parser()`` and ``main(argv) -> int``;
:mod:`sam3_cradio.evaluation.cli` dispatches to them."""
