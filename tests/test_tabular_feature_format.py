"""The feature pipeline's stored form is a bundle format: fitted today, it must be written byte for
byte as before, and a pipeline stored before must load and transform exactly as it did.

``fixtures/tabular_features/`` was written by the code before the encoders were split into their
own modules (``features.py`` at commit 359efb7): ``inputs.json`` is a small table (numeric,
categorical with every encoding and a parent, dates with every part, missing values and mixed
types), ``features.json`` and ``target.json`` what that code stored, and ``transforms.json`` the
matrices it computed from them.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.projects.tabular.feature_pipeline import FeaturePipeline
from modelyard.projects.tabular.schema import Features, Target
from modelyard.projects.tabular.target_scaling import encode_target, fit_target

FIXTURES = Path(__file__).parent / "fixtures" / "tabular_features"


def _load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _stored(document: Any) -> str:
    """The bytes training writes into ``preprocessing.json`` (see ``stages/train.py``)."""
    return json.dumps(document, indent=2) + "\n"


@pytest.fixture(scope="module")
def inputs() -> dict[str, Any]:
    document: dict[str, Any] = _load("inputs.json")
    return document


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    document: dict[str, Any] = _load("transforms.json")
    return document


def _fit(inputs: dict[str, Any]) -> tuple[FeaturePipeline, np.ndarray]:
    features = Features.model_validate(inputs["schema"])
    target = Target.model_validate(inputs["target"])
    return FeaturePipeline.fit_transform(features, inputs["table"], target, inputs["target_values"])


def test_a_fitted_pipeline_is_stored_byte_for_byte_as_before(inputs: dict[str, Any]) -> None:
    pipeline, _ = _fit(inputs)
    assert _stored(pipeline.to_json()) == (FIXTURES / "features.json").read_text()


def test_the_training_matrix_and_column_names_are_unchanged(
    inputs: dict[str, Any], expected: dict[str, Any]
) -> None:
    pipeline, matrix = _fit(inputs)
    assert pipeline.output_names == expected["output_names"]
    np.testing.assert_array_equal(matrix, np.asarray(expected["train_matrix"], dtype=np.float32))


def test_a_stored_pipeline_loads_and_transforms_as_before(expected: dict[str, Any]) -> None:
    inputs = _load("inputs.json")
    pipeline = FeaturePipeline.from_json(_load("features.json"))
    assert pipeline.output_names == expected["output_names"]
    for rows, key in (
        (inputs["requests"], "transform_requests"),
        (inputs["table"], "transform_table"),
    ):
        np.testing.assert_array_equal(
            pipeline.transform(rows), np.asarray(expected[key], dtype=np.float32)
        )
    for row in range(len(inputs["requests"]["zip"])):
        one = {name: values[row : row + 1] for name, values in inputs["requests"].items()}
        np.testing.assert_array_equal(
            pipeline.transform(one)[0], np.float32(expected["transform_requests"][row])
        )


def test_the_target_parameters_are_stored_and_applied_as_before(
    inputs: dict[str, Any], expected: dict[str, Any]
) -> None:
    target = Target.model_validate(inputs["target"])
    params = fit_target(target, inputs["target_values"])
    assert _stored(params) == (FIXTURES / "target.json").read_text()
    encoded = encode_target(_load("target.json"), np.asarray(inputs["target_values"]))
    np.testing.assert_array_equal(encoded, np.asarray(expected["encoded_target"], dtype=np.float32))
