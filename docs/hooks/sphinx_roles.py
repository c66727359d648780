"""mkdocs hook: Sphinx cross-reference roles in docstrings read as plain code in the site.

Many docstrings name code with a Sphinx role, ``:func:`load_bundle```, which Markdown renders
as the role's text followed by the code (``:func:<code>load_bundle</code>``). The API reference
drops the role and keeps the code, so those docstrings read as they were meant to.
"""

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:mod|module|func|meth|class|attr|data|exc|obj|const):(?=<code>)")


def drop_roles(html: str) -> str:
    """``html`` without the Sphinx role prefixes in front of inline code."""
    return _ROLE.sub("", html)


def on_page_content(html: str, **_: Any) -> str:
    """mkdocs event: each page's HTML, after Markdown and mkdocstrings rendered it."""
    return drop_roles(html)
