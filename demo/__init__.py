"""Entry point of the Gradio demo from a source checkout; the demo itself is :mod:`sam3_cradio.demo`."""
