"""The web UI (``modelyard app``): one Gradio front end for every project family, built from the
served model's own description and talking to the server only over its HTTP API.

Optional: it needs the ``ui`` extra (Gradio). The prediction server never imports this package.
"""
