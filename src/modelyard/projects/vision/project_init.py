"""``modelyard init image``: an image project drafted from a folder (or zip) of class folders:
the classes and their image counts, a typical image size, the two-class decision block."""

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from modelyard.core.errors import DataError
from modelyard.core.hashing import sha256_file
from modelyard.core.project_drafts import ProjectDraft, portable, yaml_scalar
from modelyard.projects.vision.image_folders import ImageIndex, index_image_folder, member_reader

#: Image sizes init chooses from: the largest not above the typical shorter side of the images.
IMAGE_SIZES = (32, 64, 96, 128)
#: Images whose header is read to find the typical size.
SIZE_SAMPLE = 64


def draft_image_project(name: str, source: Path) -> ProjectDraft:
    """An image project for a folder (or zip) with one subfolder per class."""
    source = source.expanduser()
    if not source.exists():
        raise DataError(f"--source {source}: no such folder or zip file")
    try:
        index = index_image_folder(source)
    except PermissionError as exc:
        raise DataError(f"--source {source}: cannot be read ({exc.strerror})") from exc
    size = _typical_size(index)
    counts = index.class_counts()
    if source.is_dir():
        data_lines = [
            "  # The folder itself: `data fetch` copies it (no checksums: it is a working copy).",
            f"  source: {yaml_scalar(portable(source))}",
            "  files: []",
            "  archive: null",
        ]
    else:
        data_lines = [
            f"  source: {yaml_scalar(portable(source.parent))}",
            f"  files:\n    - {{path: {yaml_scalar(source.name)}, sha256: {sha256_file(source)}}}",
            f"  archive: {yaml_scalar(source.name)}",
        ]
    counted = ", ".join(f"{cls}: {count}" for cls, count in counts.items())
    text = IMAGE_TEMPLATE.format(
        name=name,
        source=portable(source),
        counted=counted,
        data="\n".join(data_lines),
        size=size,
        top_k=min(3, len(counts)),
        decision=decision_comment(list(counts)),
    )
    facts = [
        f"{len(counts)} classes, {int(index.labels.size)} images: {counted}",
        f"image size {size} (the typical shorter side, rounded down to one of {IMAGE_SIZES})",
    ]
    smallest = min(counts.values())
    if smallest < 20:
        facts.append(
            f"warning: {min(counts, key=lambda c: counts[c])!r} has only {smallest} image(s); "
            "with 15 % test and 15 % validation a split may see very few of a class"
        )
    return ProjectDraft(text, facts)


def decision_comment(classes: list[str]) -> str:
    """What the ``decision`` block does for these classes (it acts only with two)."""
    if len(classes) != 2:
        return (
            "# Two-class projects only (this one has more): the decision threshold\n"
            '# (docs/serving.md, "Two-class image models: the decision").'
        )
    return (
        f"# Two classes: after training, the threshold on {classes[1]!r}'s probability (the\n"
        "# positive class: the second in class order, unless `positive` names the other) is\n"
        "# chosen on the validation split by `rule`: max_f1, or precision / recall reaching\n"
        '# `target` (docs/serving.md, "Two-class image models: the decision").'
    )


def _typical_size(index: ImageIndex) -> int:
    """The image size to train at: the largest of IMAGE_SIZES not above the median shorter side."""
    step = max(1, len(index.members) // SIZE_SAMPLE)
    sides: list[int] = []
    with member_reader(index.source) as read:
        for member in index.members[::step][:SIZE_SAMPLE]:
            try:
                with Image.open(io.BytesIO(read(member))) as image:
                    sides.append(min(image.size))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(
                    f"{index.source}: {member} is not a readable image ({exc})"
                ) from exc
    median = sorted(sides)[len(sides) // 2]
    fitting = [size for size in IMAGE_SIZES if size <= median]
    return fitting[-1] if fitting else IMAGE_SIZES[0]


IMAGE_TEMPLATE = """\
# Image project {name!r}, written by `modelyard init image` from {source}
# ({counted}). Classes are the folder names, read again by `data prepare`.
# Model, schedule and sweep: the vision family's defaults (model/vision.yaml,
# schedule/vision_quick.yaml, ...) unless conf/model/{name}.yaml etc. exist beside this file.
name: {name}
task: vision

data:
{data}
  # Images are resized to this many pixels square (chosen from the images' typical size).
  image_size: {size}
  # Stratified: every class in the same proportions in train, validation and test.
  split: {{test_fraction: 0.15, val_fraction: 0.15, seed: 0}}
  batch_size: 64
  num_workers: 0
  # Unreadable files are refused and reported (prepare.json "reading"); above this fraction
  # prepare fails (on_refused: fail) or warns (warn).
  max_refused_fraction: 0.001
  on_refused: fail
  max_field_length: 100000
  # Inverse-frequency class weights in the loss (reported in prepare.json).
  class_weights: true
  augment: {{enabled: true, brightness: 0.1}}

# Checkpoints are selected on 1 - validation macro-F1.
monitor: val_error

{decision}
decision: {{rule: max_f1, target: null, positive: null}}

serving:
  top_k: {top_k}
  max_upload_bytes: 10000000
  max_pixels: 40000000
  max_decoded_bytes: 67108864
  max_concurrent_decodes: 2
  max_decode_wait_s: 10.0
"""
