"""The software a run used: Python, the platform and the versions of installed packages."""

import platform
import sys
from importlib import metadata

#: Packages whose versions are recorded as run parameters (all installed ones go in a file).
KEY_PACKAGES = (
    "modelyard",
    "torch",
    "lightning",
    "numpy",
    "pandas",
    "onnx",
    "onnxruntime",
    "lightgbm",
    "hydra-core",
    "mlflow",
    "optuna",
)


def key_versions() -> dict[str, str]:
    """Versions of the packages that decide a model's numbers (absent ones are skipped)."""
    found = {"python": platform.python_version()}
    for name in KEY_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def environment_report() -> dict[str, object]:
    """Everything needed to rebuild the environment: interpreter, platform, every package."""
    packages = sorted(
        {(d.metadata["Name"] or "?").lower(): d.version for d in metadata.distributions()}.items()
    )
    return {
        "python": sys.version,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": dict(packages),
    }
