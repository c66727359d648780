"""Example inputs shipped with a bundle: a few real test-split inputs a person can try at once.

Export writes them into the bundle's ``examples/`` directory (a NILM day of mains as CSV, a few
test images, a few table rows: each family's ``Task.examples``), and the manifest lists each one
(:class:`ExampleRecord`: name, media type, description, sha256) inside the content the integrity
digest covers; loading verifies every listed file like the model files, so a changed example
refuses to load like a changed model. The server lists them (``GET /examples``) and hands out
only the files listed (``GET /examples/{name}``); bundles exported before examples existed list
none.

They are bounded (:data:`MAX_EXAMPLE_BYTES` each, :data:`MAX_TOTAL_BYTES` together, at most
:data:`MAX_EXAMPLES`) so that a bundle stays a model, not a data set.

This module must stay importable without torch or pandas: the server imports it.
"""

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from modelyard.core.bundle_files import bundle_file, check_file_name
from modelyard.core.errors import BundleError

#: The bundle's subdirectory holding the example files.
EXAMPLES_DIR = "examples"
MAX_EXAMPLES = 8
MAX_EXAMPLE_BYTES = 256 * 1024
MAX_TOTAL_BYTES = 512 * 1024
_MEDIA_TYPE = re.compile(r"^[a-z]+/[a-z0-9.+-]+$")
#: Example names: what a URL path segment and every file system take without escaping.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


class ExampleRecord(BaseModel):
    """One example file of the bundle, as the manifest lists it (and ``GET /examples`` shows it,
    without the sha256)."""

    name: str = Field(description="File name inside examples/, e.g. 'AnnualCrop-1234.jpg'.")
    media_type: str = Field(description="What the file is, e.g. 'text/csv' or 'image/jpeg'.")
    description: str = Field(description="Where it comes from, in a sentence.")
    sha256: str

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        check_file_name(name)
        if not _NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an example name (letters, digits, '._-')")
        return name

    @field_validator("media_type")
    @classmethod
    def _media_type(cls, media_type: str) -> str:
        if not _MEDIA_TYPE.fullmatch(media_type):
            raise ValueError(f"{media_type!r} is not a media type such as 'text/csv'")
        return media_type


@dataclass(frozen=True)
class ExampleFile:
    """An example a task hands to export: its name, media type, description and bytes."""

    name: str
    media_type: str
    description: str
    data: bytes


def write_examples(directory: Path, examples: Sequence[ExampleFile]) -> list[ExampleRecord]:
    """Write ``examples`` into ``directory``/examples and return their manifest records;
    ValueError when they break a bound or repeat a name (a task's mistake, not the user's)."""
    if not examples:
        return []
    if len(examples) > MAX_EXAMPLES:
        raise ValueError(f"{len(examples)} examples; a bundle holds at most {MAX_EXAMPLES}")
    names = [example.name for example in examples]
    if len(set(names)) != len(names):
        raise ValueError(f"example names repeat: {names}")
    total = sum(len(example.data) for example in examples)
    if total > MAX_TOTAL_BYTES:
        raise ValueError(f"examples hold {total} bytes; at most {MAX_TOTAL_BYTES} together")
    target = directory / EXAMPLES_DIR
    target.mkdir()
    records = []
    for example in examples:
        if len(example.data) > MAX_EXAMPLE_BYTES:
            raise ValueError(
                f"example {example.name} holds {len(example.data)} bytes; at most "
                f"{MAX_EXAMPLE_BYTES} each"
            )
        record = ExampleRecord(
            name=example.name,
            media_type=example.media_type,
            description=example.description,
            sha256=hashlib.sha256(example.data).hexdigest(),
        )
        (target / record.name).write_bytes(example.data)
        records.append(record)
    return records


def read_example(root: Path, record: ExampleRecord) -> bytes:
    """The bytes of ``record``'s file in the bundle at ``root`` (resolved), verified: a plain
    file of the examples directory (itself a real directory, not a link) with the sha256
    recorded. The bytes checked are the bytes returned."""
    folder = root / EXAMPLES_DIR
    if folder.is_symlink() or not folder.is_dir():
        raise BundleError(f"{root}: {EXAMPLES_DIR}/ is missing or not a real directory")
    file = bundle_file(folder.resolve(), record.name, "example")
    data = file.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != record.sha256:
        raise BundleError(
            f"{file} failed its integrity check: sha256 is {actual}, the manifest says "
            f"{record.sha256}"
        )
    return data


def verify_examples(root: Path, records: Sequence[ExampleRecord]) -> None:
    """Every listed example is where it should be with its recorded sha256 (names unique)."""
    names = [record.name for record in records]
    if len(set(names)) != len(names):
        raise BundleError(f"{root}: the manifest lists an example twice: {names}")
    for record in records:
        read_example(root, record)
