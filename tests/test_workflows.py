"""The GitHub Actions workflows (.github/workflows, every *.yml by glob) and the repository's own
composite actions (.github/actions): valid against GitHub's schemas (check-jsonschema, offline),
clean under actionlint where it is installed, and consistent with the rest of the repository,
which no schema knows: the make targets they run exist, the Python versions they test are
allowed by pyproject, the retraining workflow listens for the event the monitor sends, the
files they name exist, and the local reusable workflows and actions they call are called with
the inputs they declare."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from bundle_factory import make_nilm_bundle
from modelyard.monitoring.webhook import EVENT_TYPE
from postgres_server import EXTERNAL_URL_ENV

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONS = sorted((ROOT / ".github" / "actions").glob("*/action.yml"))
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
#: `make target ...` at the start of a command (line, or after ; && ||).
MAKE_CALL = re.compile(r"(?:^|[;&|])[ \t]*make((?:[ \t]+[\w.-]+)+)", re.MULTILINE)


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path.name}: not a mapping"
    return document


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """The `on:` block (YAML 1.1 reads the bare key `on` as True)."""
    any_keys: dict[Any, Any] = workflow
    found = any_keys.get("on", any_keys.get(True))
    return found if isinstance(found, dict) else dict.fromkeys(found or [])


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in a document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def scripts(path: Path) -> list[str]:
    return [str(node["run"]) for node in walk(load(path)) if "run" in node]


def steps_using(prefix: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(file, step or job) for every `uses:` starting with ``prefix``, in workflows and actions."""
    for path in WORKFLOWS + ACTIONS:
        for node in walk(load(path)):
            if str(node.get("uses", "")).startswith(prefix):
                yield path, node


def workflow(name: str) -> dict[str, Any]:
    return load(ROOT / ".github" / "workflows" / name)


def test_the_workflows_of_the_repository_are_all_there() -> None:
    names = {path.name for path in WORKFLOWS}
    assert {"ci.yml", "images.yml", "docs.yml", "pipeline.yml", "promote.yml", "retrain.yml"} <= (
        names
    )
    assert ACTIONS, "no composite action under .github/actions"


def check_jsonschema(schema: str, files: list[Path]) -> subprocess.CompletedProcess[str]:
    command = [str(CHECK_JSONSCHEMA), "--builtin-schema", schema, *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_every_workflow_matches_githubs_schema() -> None:
    result = check_jsonschema("vendor.github-workflows", WORKFLOWS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_composite_action_matches_githubs_schema() -> None:
    result = check_jsonschema("vendor.github-actions", ACTIONS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    """The check above can fail: a job without `runs-on` or `uses` is refused."""
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  build:\n    steps:\n      - run: echo hi\n")
    result = check_jsonschema("vendor.github-workflows", [broken])
    assert result.returncode == 1, result.stdout + result.stderr


def test_actionlint_finds_nothing() -> None:
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.skip(
            "actionlint is not on PATH (its PyPI wrapper downloads the binary from GitHub while "
            "building, which fails here); the schema checks above still ran"
        )
    result = subprocess.run(
        [actionlint, "-no-color", *[str(path) for path in WORKFLOWS]],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def makefile_targets() -> set[str]:
    targets: set[str] = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.$()/ -]+?)\s*:(?![=:])", line)
        if match and not line.startswith("\t"):
            targets.update(match.group(1).split())
    return targets


def test_every_make_target_a_workflow_runs_exists() -> None:
    targets = makefile_targets()
    assert {"venv", "lint", "typecheck", "test"} <= targets  # the parser reads this Makefile
    called: set[tuple[str, str]] = set()
    for path in WORKFLOWS + ACTIONS:
        for script in scripts(path):
            for words in re.findall(
                r"(?:^|[;&|]\s*|\n\s*)make((?:[ \t]+[A-Za-z0-9_.-]+)+)", script
            ):
                called.update((path.name, word) for word in words.split() if "=" not in word)
    assert called, "no workflow runs make: the pattern above is wrong"
    missing = sorted(f"{file}: make {target}" for file, target in called if target not in targets)
    assert not missing, f"targets missing from the Makefile: {missing}"


def python_versions() -> list[tuple[str, str]]:
    """(file, version) for every Python a workflow sets up or tests."""
    found: list[tuple[str, str]] = []
    for path in WORKFLOWS:
        for node in walk(load(path)):
            if str(node.get("uses", "")).startswith("actions/setup-python"):
                found.append((path.name, str(node["with"]["python-version"])))
            matrix = node.get("matrix")
            if isinstance(matrix, dict) and "python" in matrix:
                found.extend((path.name, str(version)) for version in matrix["python"])
            container = node.get("container")
            image = container.get("image", "") if isinstance(container, dict) else ""
            found.extend((path.name, v) for v in re.findall(r"python:(\d+\.\d+)", image))
    return found


def test_every_python_a_workflow_uses_is_allowed_by_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    allowed = SpecifierSet(project["requires-python"])
    versions = python_versions()
    assert {"3.11", "3.12"} <= {version for file, version in versions if file == "ci.yml"}
    refused = [(file, v) for file, v in versions if Version(v) not in allowed]
    assert not refused, f"outside requires-python {allowed}: {refused}"


def test_the_test_matrix_runs_in_the_matrix_python() -> None:
    test = workflow("ci.yml")["jobs"]["test"]
    assert "${{ matrix.python }}" in test["container"]["image"]


def dispatch_types(document: dict[str, Any]) -> list[str]:
    dispatch = triggers(document).get("repository_dispatch") or {}
    return list(dispatch.get("types", []))


def test_the_monitor_alert_starts_retraining_and_nothing_else() -> None:
    """One alert, one retraining: pipeline.yml used to listen for it too."""
    listeners = [path.name for path in WORKFLOWS if EVENT_TYPE in dispatch_types(load(path))]
    assert listeners == ["retrain.yml"]


def test_retraining_reuses_the_pipeline_and_the_promotion_gates() -> None:
    jobs = workflow("retrain.yml")["jobs"]
    called = {job.get("uses") for job in jobs.values()}
    assert {"./.github/workflows/pipeline.yml", "./.github/workflows/promote.yml"} <= called
    assert not any("steps" in job and "dvc" in str(job["steps"]) for job in jobs.values())


def test_promotion_takes_its_inputs_before_the_events_payload() -> None:
    """Called by retrain.yml, promote.yml sees the monitor's alert as its event: the alert's
    `version` is the served one, and must not replace the candidate given as input."""
    env = workflow("promote.yml")["jobs"]["gates"]["env"]
    for key in ("MODEL", "VERSION", "ALIAS"):
        assert env[key].startswith(f"${{{{ inputs.{key.lower()} ||"), env[key]


def declared_inputs(target: Path) -> dict[str, Any]:
    document = load(target)
    if target.name == "action.yml":
        return dict(document.get("inputs") or {})
    call = triggers(document).get("workflow_call")
    assert call is not None, f"{target.name} is called but has no workflow_call trigger"
    return dict((call or {}).get("inputs") or {})


def test_local_actions_and_reusable_workflows_exist_and_get_their_inputs() -> None:
    calls = list(steps_using("./"))
    assert calls
    for path, node in calls:
        target = ROOT / node["uses"]
        if target.is_dir():
            target = target / "action.yml"
        assert target.is_file(), f"{path.name}: {node['uses']} does not exist"
        inputs = declared_inputs(target)
        given = set((node.get("with") or {}).keys())
        assert given <= set(inputs), f"{path.name} -> {node['uses']}: unknown {given - set(inputs)}"
        required = {name for name, spec in inputs.items() if spec.get("required")}
        required -= {name for name, spec in inputs.items() if "default" in spec}
        assert required <= given, f"{path.name} -> {node['uses']}: missing {required - given}"


def test_outputs_read_from_a_reusable_workflow_are_declared() -> None:
    for path in WORKFLOWS:
        jobs = load(path).get("jobs", {})
        for job_id, job in jobs.items():
            if not str(job.get("uses", "")).startswith("./"):
                continue
            declared = triggers(load(ROOT / job["uses"]))["workflow_call"].get("outputs") or {}
            read = set(re.findall(rf"needs\.{job_id}\.outputs\.([A-Za-z0-9_-]+)", path.read_text()))
            assert read <= set(declared), (
                f"{path.name}: {job_id} has no outputs {read - set(declared)}"
            )


def test_ci_gives_the_suite_the_postgresql_service_under_the_name_it_reads() -> None:
    test = workflow("ci.yml")["jobs"]["test"]
    assert "postgres" in test["services"]
    url = test["env"][EXTERNAL_URL_ENV]
    assert url.startswith("postgresql+psycopg://") and "@postgres:" in url


def test_the_install_reads_the_torch_pin_the_lock_has() -> None:
    (install,) = [s for s in scripts(ROOT / ".github/actions/install/action.yml") if "torch" in s]
    pattern = re.search(r"grep -E '([^']+)' requirements\.lock", install)
    assert pattern is not None
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    assert len([line for line in lock if re.match(pattern.group(1), line)]) == 1


def test_files_the_workflows_name_exist() -> None:
    """requirements.lock and whatever a cache key hashes."""
    named = {"requirements.lock"}
    for path in WORKFLOWS + ACTIONS:
        for arguments in re.findall(r"hashFiles\(([^)]*)\)", path.read_text()):
            named |= set(re.findall(r"'([^']+)'", arguments))
    missing = sorted(name for name in named if not (ROOT / name).is_file())
    assert not missing, f"named by a workflow but absent: {missing}"


def test_the_docs_workflow_has_a_site_to_build() -> None:
    """docs.yml runs `mkdocs build --strict` on the repository's mkdocs.yml (the docs site)."""
    steps = workflow("docs.yml")["jobs"]["build"]["steps"]
    assert any("mkdocs build --strict" in str(step.get("run")) for step in steps)
    assert (ROOT / "mkdocs.yml").is_file()


def build_script() -> ModuleType:
    """docker/build_images.py (the container images), which images.yml runs."""
    path = ROOT / "docker" / "build_images.py"
    spec = importlib.util.spec_from_file_location("build_images", path)
    assert spec is not None and spec.loader is not None, f"{path} is missing"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_images_workflow_pushes_every_image_the_build_script_makes() -> None:
    script = build_script()
    build = workflow("images.yml")["jobs"]["build"]
    matrix = build["strategy"]["matrix"]["include"]
    assert {entry["key"]: entry["image"] for entry in matrix} == {
        key: image.name for key, image in script.IMAGES.items()
    }
    expected = {"modelyard-serve", "modelyard-serve-registry", "modelyard-app", "modelyard-train"}
    assert expected == {e["image"] for e in matrix}
    for image in script.IMAGES.values():
        assert (ROOT / image.dockerfile).is_file(), image.dockerfile
    source = (ROOT / "docker" / "build_images.py").read_text()
    for job in (build, workflow("ci.yml")["jobs"]["test"]):
        settings = [name for name in job.get("env", {}) if name.startswith("MODELYARD_")]
        unread = [n for n in settings if n != EXTERNAL_URL_ENV and f'"{n}"' not in source]
        assert not unread, f"set for docker/build_images.py, which does not read them: {unread}"


def pipeline_step(step_id: str) -> dict[str, Any]:
    steps: list[dict[str, Any]] = workflow("pipeline.yml")["jobs"]["reproduce"]["steps"]
    (step,) = [s for s in steps if s.get("id") == step_id]
    return step


def run_step(
    step: dict[str, Any], workdir: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], str, str]:
    """A step's script in bash as the runner runs it: (result, $GITHUB_OUTPUT, summary)."""
    output, summary = workdir / "github_output", workdir / "step_summary"
    output.write_text("")
    summary.write_text("")
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
        "MODELYARD_HOME": str(workdir / ".modelyard"),
        "DVC_NO_ANALYTICS": "1",
        **env,
    }
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", step["run"]],
        cwd=workdir, env=environment, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    return result, output.read_text(), summary.read_text()


def run_register_step(
    workdir: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], str, str]:
    return run_step(pipeline_step("register"), workdir, env)


def test_the_pipeline_knows_whether_its_targets_are_out_of_date(tmp_path: Path) -> None:
    """The status step with the real DVC: a stage never run is out of date; once run, not."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run([dvc, "init", "-q"], cwd=tmp_path, check=True)
    stage = "stages:\n  make:\n    cmd: echo made > made.txt\n    outs: [made.txt]\n"
    (tmp_path / "dvc.yaml").write_text(stage)
    step = pipeline_step("status")
    stale, output, _ = run_step(step, tmp_path, {"TARGETS": "make"})
    assert stale.returncode == 0 and output == "up_to_date=false\n", stale.stderr
    subprocess.run([dvc, "repro", "-q", "make"], cwd=tmp_path, check=True, timeout=120)
    done, output, _ = run_step(step, tmp_path, {"TARGETS": "make"})
    assert done.returncode == 0 and output == "up_to_date=true\n", done.stderr
    everything, output, _ = run_step(step, tmp_path, {"TARGETS": ""})  # no targets: all stages
    assert everything.returncode == 0 and output == "up_to_date=true\n", everything.stderr


def test_the_retrained_bundle_is_registered_and_its_version_handed_on(tmp_path: Path) -> None:
    """pipeline.yml's register step with the real CLI and a real MLflow registry (an embedded
    store standing in for the team's server): the version it hands to promote.yml is the one
    registered, and nothing is registered when the stages did not run."""
    make_nilm_bundle(tmp_path / ".modelyard" / "bundles" / "nilm" / "dvc")
    registry = {"PROJECT": "nilm", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}

    first, output, summary = run_register_step(tmp_path, {**registry, "UP_TO_DATE": "false"})
    assert first.returncode == 0, first.stdout + first.stderr
    assert output == "version=1\n" and "registered nilm version 1" in summary

    idle, output, summary = run_register_step(tmp_path, {**registry, "UP_TO_DATE": "true"})
    assert idle.returncode == 0 and output == "" and "nothing registered" in summary

    nowhere, output, _ = run_register_step(
        tmp_path, {"PROJECT": "nilm", "UP_TO_DATE": "false", "MLFLOW_TRACKING_URI": ""}
    )
    assert nowhere.returncode == 1 and output == ""
    assert "set MLFLOW_TRACKING_URI" in nowhere.stdout
