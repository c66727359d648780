"""Experiment tracking behind one small interface: MLflow (default, embedded), W&B, or none."""
