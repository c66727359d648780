"""One Locust file per project; the shared logic is in :mod:`.common`.

Run one directly with ``locust -f $(python -c "from modelyard.loadtest.locustfiles import
locustfile; print(locustfile('nilm'))") --host http://127.0.0.1:8000``, or through
``modelyard loadtest``. This package's ``__init__`` must not import Locust.
"""

from pathlib import Path

from modelyard.core.errors import ModelyardError

#: The project each locustfile is for, and the task family of the bundles it can feed.
PROJECT_TASKS = {
    "nilm": "nilm",
    "avm": "tabular",
    "kc_house": "tabular",
    "eurosat": "vision",
    "plants": "vision",
}


def locustfile(project: str) -> Path:
    """The locustfile of ``project``; a clear error for a project without one."""
    if project not in PROJECT_TASKS:
        raise ModelyardError(
            f"no load test for project {project!r}; known projects: {', '.join(PROJECT_TASKS)}"
        )
    return Path(__file__).with_name(f"{project}.py")
