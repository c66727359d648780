"""A Lightning Trainer for tests that fit a tiny module directly: on the CPU, with no logger,
checkpoints, progress bar or model summary (nothing written, nothing printed)."""

from typing import Any

import lightning as L


def quiet_trainer(**options: Any) -> L.Trainer:
    """``L.Trainer`` with the quiet defaults above; ``options`` add to or override them."""
    quiet: dict[str, Any] = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**(quiet | options))
