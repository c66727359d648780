"""requirements.lock pins every package pyproject.toml asks for, at a version its specifier admits,
and keeps torch at the train extra's exact pin (an open torch would pull CUDA wheels)."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, separator, version = line.partition("==")
        assert separator, f"not an exact pin in requirements.lock: {line!r}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = [Requirement(text) for text in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        found.extend(Requirement(text) for text in extra)
    return found


def test_every_declared_package_is_pinned_within_its_range() -> None:
    pins = locked()
    for requirement in declared():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is in pyproject.toml but not in the lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"the lock pins {name}=={pins[name]}, outside pyproject's {requirement}"
        )


def test_torch_keeps_the_exact_pin_without_a_build_tag() -> None:
    (torch,) = [r for r in declared() if r.name == "torch"]
    assert str(torch.specifier) == f"=={locked()['torch']}"
    assert locked()["torch"].local is None
