"""Serving: load a bundle, answer HTTP requests with ONNX Runtime. Never imports torch."""
