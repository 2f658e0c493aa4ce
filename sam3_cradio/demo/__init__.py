"""The Gradio demo of sam3-cradio (``sam3-cradio demo``; needs the ``demo`` extra).

Only :mod:`sam3_cradio.demo.app` imports gradio: it holds the page layout and the event handlers. Everything else
is plain library code, tested without gradio:

* :mod:`~sam3_cradio.demo.options`: command-line options, checked against the backbone registry;
* :mod:`~sam3_cradio.demo.inputs`: what the page sends (uploads, prompts, backbone and window menus) -> checked values;
* :mod:`~sam3_cradio.demo.models`: models built once per (backbone, window, mode) in an LRU, encoded-image cache;
* :mod:`~sam3_cradio.demo.results`: raw results kept per session, filtered and drawn on demand; page messages;
* :mod:`~sam3_cradio.demo.videos`: reading, re-encoding and the example clip of the video tab;
* :mod:`~sam3_cradio.demo.state`: the state shared by all requests and the two requests (segment, track).
"""
