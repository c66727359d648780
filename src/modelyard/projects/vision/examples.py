"""The vision bundle's examples: a few test-split images of different classes, as their files.

Up to :data:`EXAMPLE_IMAGES` classes spread over the class list (first, middle, last), for each
the first image of its test split (never trained on) that fits the bundle's bound on one example,
copied byte for byte from the dataset: what a person would upload. Each is named after its class
and original file (``AnnualCrop-AnnualCrop_1234.jpg``), so a page can say what it shows.
Without the raw images (only the prepared pixel cache) there are none.
"""

import re
from collections.abc import Callable
from pathlib import PurePosixPath

import numpy as np
from numpy.typing import NDArray

from modelyard.core.bundle_examples import MAX_EXAMPLE_BYTES, ExampleFile
from modelyard.projects.vision.image_folders import ImageIndex

EXAMPLE_IMAGES = 3
_MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def example_images(
    index: ImageIndex, test: NDArray[np.int64], read: Callable[[str], bytes]
) -> list[ExampleFile]:
    """The examples from ``test`` (row indices of ``index``), their bytes read with ``read``."""
    count = min(EXAMPLE_IMAGES, len(index.classes))
    chosen = sorted({int(k) for k in np.linspace(0, len(index.classes) - 1, count).round()})
    examples = []
    for label in chosen:
        for row in test[index.labels[test] == label]:
            member = PurePosixPath(index.members[int(row)])
            media_type = _MEDIA_TYPES.get(member.suffix.lower())
            if media_type is None:
                continue
            data = read(str(member))
            if len(data) > MAX_EXAMPLE_BYTES:
                continue
            name = _UNSAFE.sub("_", f"{index.classes[label]}-{member.name}")[-100:].lstrip("_.-")
            examples.append(
                ExampleFile(
                    name=name,
                    media_type=media_type,
                    description=f"A test-split image of class {index.classes[label]}",
                    data=data,
                )
            )
            break
    return examples
