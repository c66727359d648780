"""Where each task family's code lives. Imports are lazy so that serving never pulls in torch."""

import importlib
from typing import TYPE_CHECKING, Any

from modelyard.core.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from modelyard.projects.base import Task

#: task family -> (training-side Task class, torch-free serving adapter class)
TASKS: dict[str, tuple[str, str]] = {
    "nilm": (
        "modelyard.projects.nilm.task:NilmTask",
        "modelyard.projects.nilm.serving:NilmServing",
    ),
    "tabular": (
        "modelyard.projects.tabular.task:TabularTask",
        "modelyard.projects.tabular.serving:TabularServing",
    ),
    "vision": (
        "modelyard.projects.vision.task:VisionTask",
        "modelyard.projects.vision.serving:VisionServing",
    ),
}


def _load(reference: str) -> Any:
    module_name, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _entry(task: str) -> tuple[str, str]:
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[task]


def load_task(cfg: "DictConfig") -> "Task":
    """Instantiate the training-side task named by ``cfg.project.task``."""
    task_class = _load(_entry(str(cfg.project.task))[0])
    return task_class(cfg)  # type: ignore[no-any-return]


def drift_rows_function(task: str) -> Any:
    """``log_rows(inputs, outputs) -> list[dict]`` of the family's ``drift_features`` module:
    one prediction-log row as drift rows named like the reference profile's columns."""
    _entry(task)
    return _load(f"modelyard.projects.{task}.drift_features:log_rows")


def realised_accuracy_function(task: str) -> Any:
    """``realised(pairs) -> dict[str, float]`` of the family's ``realised_accuracy`` module:
    the family's own metrics on logged outputs paired with the truths sent as feedback."""
    _entry(task)
    return _load(f"modelyard.projects.{task}.realised_accuracy:realised")


def serving_adapter_class(task: str) -> Any:
    """The serving adapter class for a bundle's task family (torch-free)."""
    return _load(_entry(task)[1])
