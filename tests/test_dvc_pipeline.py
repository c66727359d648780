"""The DVC pipeline (dvc.yaml + params.yaml): declared dependencies, and real runs of it.

The fast tests check dvc.yaml against the Hydra tree and the code: every config file that training
composes is declared as params of the train stage, and every module a stage runs is among its deps
(so that no edit can leave a stale result). The slow test runs the NILM pipeline with the real
``dvc`` in a throwaway git clone: all five stages run once, a second ``dvc repro`` runs nothing,
a schedule edit re-runs exactly train, evaluate and export, and ``dvc push``/``dvc pull`` restore
identical files.
"""

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode

from modelyard.core.config import CONFIG_MODULE, CONFIG_NAME

REPO = Path(__file__).resolve().parents[1]
CONF = Path("src") / "modelyard" / "conf"
PIPELINE = ["fetch", "prepare", "train", "evaluate", "export"]
#: The training schedule of NILM's experiment=quick, which the slow test edits.
SCHEDULE = CONF / "schedule" / "nilm_quick.yaml"
#: NILM's model for experiment=quick, which the slow test shrinks (declared params of train).
QUICK_MODEL = CONF / "model" / "nilm_quick.yaml"
#: Config groups that do not change what training produces: where runs are tracked, the search
#: space of `modelyard sweep`, and Hydra's own settings.
UNTRACKED_GROUPS = ("hydra/", "tracking/", "sweep/")
RUNNING = re.compile(r"Running stage '([^']+)'")
INTERPOLATION = re.compile(r"\$\{([^}]+)\}")


def _load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _interpolate(text: str, context: Mapping[str, Any]) -> str:
    """DVC's ``${key}``, ``${item.x}`` and ``${name}`` substitution, for the names used here."""

    def lookup(match: re.Match[str]) -> str:
        value: Any = context
        for part in match.group(1).split("."):
            value = value[part]
        return str(value)

    return INTERPOLATION.sub(lookup, text)


def _stage(name: str) -> dict[str, Any]:
    stage: dict[str, Any] = _load_yaml(REPO / "dvc.yaml")["stages"][name]["do"]
    return stage


def _declared_params_files(stage: dict[str, Any], context: Mapping[str, Any]) -> set[str]:
    files = set()
    for entry in stage.get("params", []):
        names = [entry] if isinstance(entry, str) else list(entry)
        files.update(_interpolate(name, context) for name in names)
    return files


def _composed_files(overrides: list[str]) -> set[str]:
    """Every config file Hydra composes for ``overrides`` (repo-relative paths)."""
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        defaults = loader.compute_defaults_list(CONFIG_NAME, overrides, RunMode.RUN)
    return {
        (CONF / f"{d.config_path}.yaml").as_posix()
        for d in defaults.defaults
        if d.config_path is not None and not d.config_path.startswith(UNTRACKED_GROUPS)
    }


def _pipeline_params() -> dict[str, Any]:
    params: dict[str, Any] = _load_yaml(REPO / "params.yaml")
    return params


def test_every_project_has_a_pipeline() -> None:
    configured = {path.stem for path in (REPO / CONF / "project").glob("*.yaml")}
    assert set(_pipeline_params()["projects"]) == configured


@pytest.mark.parametrize("experiment", ["quick", "baseline"])
def test_train_declares_every_config_file_it_composes(experiment: str) -> None:
    params = _pipeline_params()
    for project, item in params["projects"].items():
        context = {**params, "experiment": experiment, "key": project, "item": item}
        declared = _declared_params_files(_stage("train"), context)
        composed = _composed_files([f"project={project}", f"experiment={experiment}"])
        missing = composed - declared
        assert not missing, f"train@{project} (experiment={experiment}) misses params {missing}"
        for path in declared:
            assert (REPO / path).is_file(), f"train@{project} declares a missing file {path}"


def test_project_plumbing_matches_the_hydra_tree() -> None:
    for project, item in _pipeline_params()["projects"].items():
        assert item["task"] == _load_yaml(REPO / CONF / "project" / f"{project}.yaml")["task"]


def _module_file(module: str) -> Path | None:
    base = REPO / "src" / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path) -> Iterator[str]:
    """modelyard modules imported anywhere in ``path`` (function-level imports included)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _code_closure(entries: list[str]) -> set[str]:
    """Repo-relative files of ``entries`` and of the modelyard modules they import, transitively."""
    seen: set[Path] = set()
    pending = list(entries)
    while pending:
        module = pending.pop()
        path = _module_file(module) if module.startswith("modelyard") else None
        if path is not None and path not in seen:
            seen.add(path)
            pending.extend(_imported_modules(path))
    return {path.relative_to(REPO).as_posix() for path in seen}


@pytest.mark.parametrize("name", PIPELINE)
def test_every_stage_depends_on_the_code_it_runs(name: str) -> None:
    """The stage's module, config loading and (but for fetch) the project's task, transitively:
    a module missing from the stage's deps could change its output without DVC noticing."""
    params = _pipeline_params()
    for project, item in params["projects"].items():
        context = {**params, "key": project, "item": item}
        deps = [_interpolate(dep, context) for dep in _stage(name).get("deps", [])]
        code = [dep for dep in deps if dep.startswith("src/")]
        for path in code:
            assert (REPO / path).exists(), f"{name}@{project} depends on missing {path}"
        entries = [f"modelyard.stages.{name}", "modelyard.core.config"]
        if name != "fetch":  # the CLI's fetch never loads the project's task
            entries.append(f"modelyard.projects.{item['task']}.task")
        runs = _code_closure(entries)
        missing = {f for f in runs if not any(f == d or f.startswith(f"{d}/") for d in code)}
        assert not missing, f"{name}@{project} runs code that dvc.yaml does not declare: {missing}"


# --- the real pipeline, with the real dvc, in a throwaway git clone ---------------------------


class Clone:
    """A git repository holding a copy of the checkout, and how to run commands in it."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env

    def run(self, *args: str) -> str:
        done = subprocess.run(
            args, cwd=self.root, env=self.env, capture_output=True, text=True, check=False
        )
        output = done.stdout + done.stderr
        if done.returncode != 0:
            pytest.fail(f"{' '.join(args)} failed ({done.returncode}):\n{output[-6000:]}")
        return output

    def git(self, *args: str) -> str:
        identity = ("-c", "user.name=modelyard", "-c", "user.email=tests@modelyard.invalid")
        return self.run("git", *identity, "-c", "commit.gpgsign=false", *args)

    def repro(self, target: str) -> list[str]:
        """``dvc repro target``; the stages it ran, in order."""
        return RUNNING.findall(self.run("dvc", "repro", target))

    def status(self, target: str) -> dict[str, Any]:
        status: dict[str, Any] = json.loads(
            self.run("dvc", "status", "--with-deps", "--json", target)
        )
        return status


def _checkout_files() -> list[str]:
    """What a commit of the checkout would hold: tracked files plus new, not ignored ones."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [name for name in listed.split("\0") if name and (REPO / name).is_file()]


def _sha256_tree(*roots: Path) -> dict[str, str]:
    digests = {}
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digests[path.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _set_keys(path: Path, values: Mapping[str, Any]) -> None:
    """Set top-level keys of a config file as text, keeping its comments (``# @package``)."""
    text = path.read_text()
    for key, value in values.items():
        line = f"{key}: {value}"
        text, found = re.subn(rf"(?m)^{re.escape(key)}:.*$", line, text, count=1)
        if not found:
            text = text.rstrip("\n") + f"\n{line}\n"
    path.write_text(text)


def _stage_names(project: str, stages: list[str]) -> list[str]:
    return [f"{stage}@{project}" for stage in stages]


@pytest.fixture
def clone(nilm_source: Path, tmp_path: Path) -> Iterator[Clone]:
    venv_bin = Path(sys.executable).parent
    search_path = os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")])
    if shutil.which("dvc", path=search_path) is None:
        pytest.skip("the dvc executable is not installed (pip install -e '.[train]')")
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout of modelyard")

    root = tmp_path / "repo"
    for name in _checkout_files():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    params = _load_yaml(root / "params.yaml")
    params.update(experiment="quick", tracking="none")
    params["projects"]["nilm"]["source"] = str(nilm_source)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # Fewer batches and a smaller network than experiment=quick: this test is about what DVC
    # runs, not about the model. The network's size is what evaluate and export pay for on the
    # whole unseen house (~200,000 windows, each run twice): under a tenth of the multiply-adds.
    _set_keys(root / SCHEDULE, {"limit_train_batches": 8, "limit_val_batches": 4})
    _set_keys(root / QUICK_MODEL, {"channels": "[8, 8]", "kernels": "[5, 5]", "hidden": 16})

    # No MODELYARD_HOME (outputs must land where dvc.yaml says), and no GIT_DIR or GIT_INDEX_FILE
    # of a calling git hook, which would point git at the real checkout.
    inherited = ("MODELYARD_", "DVC_", "GIT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.update(
        PATH=search_path,
        # The clone's code and Hydra tree, not the checkout the venv was installed from.
        PYTHONPATH=os.pathsep.join(filter(None, [str(root / "src"), env.get("PYTHONPATH")])),
        DVC_NO_ANALYTICS="1",
        GIT_CONFIG_NOSYSTEM="1",
    )
    repo = Clone(root, env)
    repo.git("init", "--quiet")
    repo.run("dvc", "config", "--local", "core.site_cache_dir", str(tmp_path / "dvc-site"))
    repo.git("add", "--all")
    repo.git("commit", "--quiet", "--message", "checkout copy")
    yield repo


@pytest.mark.integration
@pytest.mark.slow
def test_nilm_pipeline_runs_once_reruns_what_changed_and_restores_from_the_remote(
    clone: Clone,
) -> None:
    root = clone.root
    raw = root / ".modelyard" / "data" / "raw" / "nilm"
    prepared = root / ".modelyard" / "data" / "prepared" / "nilm"
    run_dir = root / ".modelyard" / "runs" / "nilm" / "dvc"
    metrics = root / ".modelyard" / "metrics" / "nilm" / "metrics.json"
    plots = metrics.parent / "plots"
    bundle = root / ".modelyard" / "bundles" / "nilm" / "dvc"

    # (a) The first repro runs every stage, in order, and ends with a bundle.
    assert clone.repro("export@nilm") == _stage_names("nilm", PIPELINE)
    assert (bundle / "manifest.json").is_file()
    assert (bundle / "model.onnx").is_file()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["project"] == "nilm"
    assert manifest["metrics"] == json.loads(metrics.read_text())
    assert any(plots.glob("*.png"))
    # What a developer commits: the lock file and the metrics (.gitignore lets them through).
    clone.git("add", "--all")
    clone.git("commit", "--quiet", "--message", "dvc repro")
    assert clone.git("show", "--name-only", "--format=", "HEAD").split() == [
        ".modelyard/metrics/nilm/metrics.json",
        "dvc.lock",
    ]

    # (b) Nothing changed: nothing runs.
    assert clone.status("export@nilm") == {}
    assert clone.repro("export@nilm") == []

    # (c) One training parameter changes: train, evaluate and export run again, not the data.
    epochs = int(_load_yaml(root / SCHEDULE)["max_epochs"])
    fewer = 1 if epochs != 1 else 2
    _set_keys(root / SCHEDULE, {"max_epochs": fewer})
    assert list(clone.status("export@nilm")) == ["train@nilm"]
    assert clone.repro("export@nilm") == _stage_names("nilm", ["train", "evaluate", "export"])
    assert _load_yaml(run_dir / "config.yaml")["trainer"]["max_epochs"] == fewer
    assert clone.repro("export@nilm") == []

    # (d) Push, lose the cache and every cached output, pull: the same bytes come back.
    outputs = (raw, prepared, run_dir, plots, bundle)
    before = _sha256_tree(*outputs)
    assert any(name.endswith("model.onnx") for name in before)
    assert any(name.startswith(prepared.as_posix()) for name in before)
    clone.run("dvc", "push", "--with-deps", "export@nilm")
    assert any((root / ".modelyard" / "dvc-remote").rglob("*"))
    shutil.rmtree(root / ".dvc" / "cache")
    for output in outputs:
        shutil.rmtree(output)
    clone.run("dvc", "pull", "--with-deps", "export@nilm")
    assert _sha256_tree(*outputs) == before
    assert clone.status("export@nilm") == {}
