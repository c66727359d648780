"""Shared checks of the per-family contracts (``projects/*/contract.py``)."""

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from modelyard.core.errors import BundleError


def assert_refused_in_one_line(
    parse: Callable[[Mapping[str, Any]], object], preprocessing: Mapping[str, Any], fragment: str
) -> None:
    """``parse`` refuses ``preprocessing`` with a one-line BundleError naming ``fragment`` that
    says how to re-export."""
    with pytest.raises(BundleError) as caught:
        parse(preprocessing)
    message = str(caught.value)
    assert fragment in message, message
    assert "re-export" in message and "\n" not in message
