"""The Gradio demo of sam3-cradio (``python -m demo.app --tiny`` from a source checkout); see ``demo/app.py``."""
