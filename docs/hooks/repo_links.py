"""mkdocs hook: the pages read the same on GitHub and on the site.

The pages under docs/ link to repository files outside docs/ (``../deploy/...``,
``../src/...``), which exist on GitHub but not in the site. Rather than two spellings of each
link, this hook rewrites such a link, while the site is built, to the file on the repository
(``repo_url``/blob/``extra.source_ref``/path), after checking that the file exists: a link to a
missing file is still a warning, which ``mkdocs build --strict`` turns into a failure.

It also includes a repository file into a page, so that the home page is README.md itself (one
text, no copy): a page holds ``<!-- include: ../README.md -->``, a fallback for GitHub's
readers, and ``<!-- end include -->``; on the site the block becomes the file, its relative links
rebased from the file's folder to the page's.
"""

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.repo_links")

# An inline code span (kept as it is) or an inline link/image: [text](target "title").
_CODE_OR_LINK = re.compile(
    r"(?P<code>`+)(?:.*?)(?P=code)"
    r"|(?P<text>!?\[(?:[^\[\]]|\[[^\[\]]*\])*\])\((?P<target>[^()\s]+)(?P<title>\s+\"[^\"]*\")?\)",
    re.DOTALL,
)
_FENCE = re.compile(r"^\s*(```|~~~)")
_INCLUDE = re.compile(
    r"<!-- include: (?P<path>\S+) -->\n.*?<!-- end include -->\n?", re.DOTALL | re.MULTILINE
)
_EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|#|/)")


@dataclass
class Rebase:
    """Where links are read from and written to, and where the repository lies."""

    source_dir: Path  # the folder the links were written relative to
    page_dir: Path  # the folder of the page they appear in
    docs_dir: Path
    repo_root: Path
    repo_blob: str  # e.g. https://github.com/OWNER/modelyard/blob/main
    repo_tree: str
    missing: list[str] = field(default_factory=list)

    def target(self, target: str) -> str:
        """The link target as the site needs it (unchanged when it already works)."""
        if _EXTERNAL.match(target):
            return target
        path, hash_sign, anchor = target.partition("#")
        fragment = hash_sign + anchor
        resolved = Path(os.path.normpath(self.source_dir / unquote(path)))
        if resolved.is_relative_to(self.docs_dir):
            if self.source_dir == self.page_dir:
                return target
            return PurePosixPath(os.path.relpath(resolved, self.page_dir)).as_posix() + fragment
        if not resolved.is_relative_to(self.repo_root) or not resolved.exists():
            self.missing.append(target)
            return target
        base = self.repo_tree if resolved.is_dir() else self.repo_blob
        return f"{base}/{resolved.relative_to(self.repo_root).as_posix()}{fragment}"

    def markdown(self, text: str) -> str:
        """Every inline link outside code (fenced blocks, code spans) rewritten by ``target``."""
        out: list[str] = []
        prose: list[str] = []
        in_fence: str | None = None
        for line in text.splitlines(keepends=True):
            fence = _FENCE.match(line)
            if in_fence is None and fence:
                out.append(self._prose("".join(prose)))
                prose = []
                in_fence = fence.group(1)
                out.append(line)
            elif in_fence is not None:
                out.append(line)
                if fence and fence.group(1) == in_fence:
                    in_fence = None
            else:
                prose.append(line)
        out.append(self._prose("".join(prose)))
        return "".join(out)

    def _prose(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group("code"):
                return match.group(0)
            title = match.group("title") or ""
            return f"{match.group('text')}({self.target(match.group('target'))}{title})"

        return _CODE_OR_LINK.sub(replace, text)


def rebase(text: str, source_dir: Path, page_dir: Path, config: MkDocsConfig, page: str) -> str:
    """``text`` (links relative to ``source_dir``) as it must read in ``page`` (in ``page_dir``)."""
    repo_root = Path(config.config_file_path).resolve().parent
    repo = str(config.repo_url).rstrip("/")
    ref = str(config.extra.get("source_ref", "main"))
    rebased = Rebase(
        source_dir=source_dir,
        page_dir=page_dir,
        docs_dir=Path(config.docs_dir).resolve(),
        repo_root=repo_root,
        repo_blob=f"{repo}/blob/{ref}",
        repo_tree=f"{repo}/tree/{ref}",
    )
    result = rebased.markdown(text)
    for target in rebased.missing:
        log.warning("%s links to '%s', which is not a file of the repository", page, target)
    return result


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, **_: Any) -> str:
    """mkdocs event: includes first (rebased from their own folder), then this page's links."""
    assert page.file.abs_src_path, "a page always has a source file"
    page_dir = Path(page.file.abs_src_path).resolve().parent

    def include(match: re.Match[str]) -> str:
        included = Path(os.path.normpath(page_dir / match.group("path")))
        if not included.is_file():
            log.warning("%s includes '%s', which does not exist", page.file.src_uri, included)
            return match.group(0)
        text = included.read_text(encoding="utf-8")
        return rebase(text, included.parent, page_dir, config, page.file.src_uri)

    own = rebase(markdown, page_dir, page_dir, config, page.file.src_uri)
    return _INCLUDE.sub(include, own)
