"""The documentation site builds strictly (no broken link, anchor or page left out of the nav),
and what it builds holds the pages: the README as home page, the API reference generated from
the docstrings, the tutorial; links to repository files outside docs/ point at the repository."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mkdocs.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
HOOK = DOCS / "hooks" / "repo_links.py"
REPO_URL = "https://github.com/example/modelyard"
# The packages the API reference covers, one page each (docs/reference/<package>.md).
REFERENCE_PACKAGES = ("core", "stages", "serving", "registry", "monitoring", "loadtest", "webui")


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DOCS_REPO_URL": REPO_URL}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config)]
    return subprocess.run(
        [*command, "--site-dir", str(site)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("site")
    result = build(ROOT / "mkdocs.yml", output)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-4000:]}"
    return output


def page(site: Path, source: str) -> str:
    """The built HTML of docs/<source> (mkdocs' directory URLs: x.md -> x/index.html)."""
    stem = source.removesuffix(".md").removesuffix("index").rstrip("/")
    built = site / stem / "index.html"
    assert built.is_file(), f"{source} was not built ({built})"
    return built.read_text(encoding="utf-8")


def nav_sources(items: list[object]) -> set[str]:
    found: set[str] = set()
    for item in items:
        if isinstance(item, str):
            found.add(item)
        elif isinstance(item, dict):
            for value in item.values():
                found |= nav_sources(value if isinstance(value, list) else [value])
    return found


def test_nav_lists_every_page() -> None:
    config = load_config(str(ROOT / "mkdocs.yml"))
    listed = nav_sources(config["nav"])
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "hooks" not in p.parts}
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"
    assert listed - pages == set(), "nav entries without a page"


def test_home_page_is_the_readme_with_working_links(site: Path) -> None:
    home = page(site, "index.md")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_paragraph = readme.split("\n\n")[1].split("\n")[0]
    assert first_paragraph in home
    # README links docs/benchmarks.md and docs/images/...: rebased to the site's pages.
    assert 'href="benchmarks/"' in home
    assert 'src="images/ui-nilm.png"' in home
    assert 'href="docs/' not in home


def test_links_to_repository_files_point_at_the_repository(site: Path) -> None:
    security = page(site, "security.md")
    assert f'href="{REPO_URL}/blob/main/deploy/monitoring/README.md"' in security


def first_docstring_line(module: Path, function: str) -> str:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            docstring = ast.get_docstring(node)
            assert docstring, f"{function} has no docstring"
            return docstring.splitlines()[0]
    raise AssertionError(f"no function {function} in {module}")


def test_api_reference_holds_every_module_and_its_docstrings(site: Path) -> None:
    core = page(site, "reference/core.md")
    text = first_docstring_line(ROOT / "src/modelyard/core/hashing.py", "fingerprint_files")
    assert text.replace("``root``", "<code>root</code>") in core
    # A Sphinx role in a docstring (:func:`save_config`) reads as the code alone.
    line = first_docstring_line(ROOT / "src/modelyard/core/config.py", "read_saved_config")
    assert ":func:`" in line
    assert re.sub(r":\w+:`([^`]*)`", r"<code>\1</code>", line) in core
    for package in REFERENCE_PACKAGES:
        html = page(site, f"reference/{package}.md")
        modules = (ROOT / "src/modelyard" / package).rglob("*.py")
        for module in modules:
            parts = module.relative_to(ROOT / "src").with_suffix("").parts
            if any(part.startswith("_") for part in parts):
                continue
            name = ".".join(parts)
            assert f'id="{name}"' in html, f"{name} is not in the API reference"


def test_tutorial_is_built(site: Path) -> None:
    tutorial = page(site, "tutorial-own-data.md")
    assert "Tutorial: add your own dataset" in tutorial
    # the path from a folder, a table or houses to a served model: init, then the usual stages
    assert "modelyard init image|table|nilm NAME --source PATH" in tutorial


def small_site(tmp_path: Path, link: str) -> Path:
    """A one-page site in its own repository root, whose page links to ``link`` via the hook."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text(f"# Home\n\nSee [the file]({link}).\n")
    (tmp_path / "notes.txt").write_text("a repository file outside docs/\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(
        f"site_name: t\nrepo_url: {REPO_URL}\ntheme: {{name: mkdocs}}\n"
        f"hooks: ['{HOOK}']\nnav: [index.md]\n"
    )
    return config


def test_a_link_to_a_repository_file_becomes_a_repository_link(tmp_path: Path) -> None:
    result = build(small_site(tmp_path, "../notes.txt#top"), tmp_path / "site")
    assert result.returncode == 0, result.stderr
    html = (tmp_path / "site" / "index.html").read_text()
    assert f'href="{REPO_URL}/blob/main/notes.txt#top"' in html


def test_a_link_to_a_missing_repository_file_fails_the_strict_build(tmp_path: Path) -> None:
    result = build(small_site(tmp_path, "../deploy/nothing.yaml"), tmp_path / "site")
    assert result.returncode != 0
    assert "links to '../deploy/nothing.yaml', which is not a file of the repository" in (
        result.stderr
    )
