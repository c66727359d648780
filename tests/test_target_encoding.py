"""Hierarchical target encoding and the number encoding of categories, checked by hand.

Four training rows, target not logged so the arithmetic stays readable:

    zip  street  y
    A    s1      10
    A    s1      20
    A    s2      30
    B    s3     100

prior = mean(y) = 40; zip (smoothing 1): A = (60 + 40) / 4 = 25, B = (100 + 40) / 2 = 70;
street (parent zip, smoothing 2): s1 = (30 + 2*25) / 4 = 20, s2 = (30 + 2*25) / 3 = 80/3,
s3 = (100 + 2*70) / 3 = 80.
"""

import json
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from modelyard.core.errors import BundleError, ConfigError
from modelyard.projects.tabular.feature_pipeline import FeaturePipeline
from modelyard.projects.tabular.schema import CategoricalFeature, Features, NumericFeature, Target
from modelyard.projects.tabular.target_encoding import Level, category_stats, encode

TARGET = Target(name="y", log=False)
ROWS: dict[str, list[Any]] = {
    "zip": ["A", "A", "A", "B"],
    "street": ["s1", "s1", "s2", "s3"],
}
Y = [10.0, 20.0, 30.0, 100.0]


def features(folds: int = 4, zip_encodings: list[Any] | None = None) -> Features:
    return Features(
        categorical=[
            CategoricalFeature(name="zip", encodings=zip_encodings or ["target"]),
            CategoricalFeature(
                name="street", required=False, encodings=["target"], parent="zip", smoothing=2.0
            ),
        ],
        target_folds=folds,
    )


def raw_codes(pipeline: FeaturePipeline, matrix: np.ndarray, name: str) -> np.ndarray:
    """Undo the standardisation of ``<name>__target`` to get the estimates back."""
    column = pipeline.output_names.index(f"{name}__target")
    spec = next(s for s in pipeline.params["categorical"] if s["name"] == name)
    return matrix[:, column].astype(np.float64) * spec["target"]["std"] + spec["target"]["mean"]


def test_new_rows_get_hierarchically_shrunk_estimates() -> None:
    pipeline = FeaturePipeline.fit(features(), ROWS, TARGET, Y)
    rows = {"zip": ["A", "A", "C", "A", "B"], "street": ["s1", "s2", "sX", None, "s3"]}
    matrix = pipeline.transform(rows)
    assert raw_codes(pipeline, matrix, "zip") == pytest.approx([25, 25, 40, 25, 70], rel=1e-6)
    # An unseen or missing street gets exactly its zip code's estimate; an unseen zip the prior.
    assert raw_codes(pipeline, matrix, "street") == pytest.approx(
        [20, 80 / 3, 40, 25, 80], rel=1e-6
    )
    assert pipeline.output_names == [
        "zip__target",
        "zip__target_count",
        "street__target",
        "street__target_count",
    ]


def test_count_column_is_log1p_of_training_rows_standardised() -> None:
    pipeline = FeaturePipeline.fit(features(), ROWS, TARGET, Y)
    matrix = pipeline.transform({"zip": ["A", "C"], "street": ["s1", "s1"]})
    spec = pipeline.params["categorical"][1]["target"]
    counts = matrix[:, 3].astype(np.float64) * spec["count_std"] + spec["count_mean"]
    assert np.expm1(counts) == pytest.approx([2, 2], rel=1e-5)
    zip_spec = pipeline.params["categorical"][0]["target"]
    zip_counts = matrix[:, 1].astype(np.float64) * zip_spec["count_std"] + zip_spec["count_mean"]
    assert np.expm1(zip_counts) == pytest.approx([3, 0], abs=1e-5)


def test_training_rows_are_encoded_out_of_fold_without_their_own_target() -> None:
    # Four folds for four rows: every row is encoded from the other three alone. Row 0 then
    # sees prior = mean(20, 30, 100) = 50, zip A = (20 + 30 + 50) / 3 = 100/3 and street s1
    # = (20 + 2 * 100/3) / 3 = 260/9.
    pipeline, matrix = FeaturePipeline.fit_transform(features(), ROWS, TARGET, Y)
    assert raw_codes(pipeline, matrix, "street")[0] == pytest.approx(260 / 9, rel=1e-6)
    assert raw_codes(pipeline, matrix, "zip")[0] == pytest.approx(100 / 3, rel=1e-6)
    # Row 3 (zip B, the only one): falls back to the prior of the other rows, mean(10, 20, 30).
    assert raw_codes(pipeline, matrix, "zip")[3] == pytest.approx(20, rel=1e-6)
    # Changing a row's own target leaves its code alone but moves its neighbours' codes.
    changed = [1000.0, *Y[1:]]
    other, matrix_changed = FeaturePipeline.fit_transform(features(), ROWS, TARGET, changed)
    assert raw_codes(other, matrix_changed, "street")[0] == pytest.approx(260 / 9, rel=1e-6)
    assert raw_codes(other, matrix_changed, "street")[1] != pytest.approx(
        raw_codes(pipeline, matrix, "street")[1]
    )
    # In-sample encoding of the same rows differs (it includes each row's own target).
    assert raw_codes(pipeline, pipeline.transform(ROWS), "street")[0] == pytest.approx(20)


def test_out_of_fold_codes_are_deterministic() -> None:
    rows = {"zip": list("AABBCCDDAB" * 3), "street": [f"s{i % 7}" for i in range(30)]}
    target = [float(i) for i in range(30)]
    first = FeaturePipeline.fit_transform(features(folds=5), rows, TARGET, target)[1]
    second = FeaturePipeline.fit_transform(features(folds=5), rows, TARGET, target)[1]
    assert np.array_equal(first, second)


def test_logged_target_is_encoded_in_log_space() -> None:
    pipeline = FeaturePipeline.fit(
        Features(categorical=[CategoricalFeature(name="zip", encodings=["target"])]),
        {"zip": ["A", "A"]},
        Target(name="y", log=True),
        [np.e, np.e**3],
    )
    matrix = pipeline.transform({"zip": ["A"]})
    # prior = mean(1, 3) = 2; A = (1 + 3 + 2) / 3 = 2
    assert raw_codes(pipeline, matrix, "zip")[0] == pytest.approx(2.0, rel=1e-6)


def test_number_encoding_reads_the_category_as_a_number() -> None:
    spec = Features(categorical=[CategoricalFeature(name="zip", encodings=["onehot", "number"])])
    pipeline = FeaturePipeline.fit(spec, {"zip": ["2100", 8000, None, "2100"]})
    number = pipeline.params["categorical"][0]["number"]
    # observed numbers 2100, 8000, 2100: median 2100, mean 4066.67, std 2781.27
    assert number["median"] == 2100 and number["mean"] == pytest.approx(12200 / 3)
    matrix = pipeline.transform({"zip": ["8000", None, "no number"]})
    assert pipeline.output_names[-1] == "zip__number"
    restored = matrix[:, -1].astype(np.float64) * number["std"] + number["mean"]
    assert restored == pytest.approx([8000, 2100, 2100], rel=1e-5)


def test_number_encoding_needs_numbers() -> None:
    spec = Features(categorical=[CategoricalFeature(name="street", encodings=["number"])])
    with pytest.raises(ConfigError, match="no training value reads as a number"):
        FeaturePipeline.fit(spec, {"street": ["Ryesgade", "Parkvej"]})


def test_target_encoding_needs_the_target() -> None:
    with pytest.raises(ConfigError, match="need the training target"):
        FeaturePipeline.fit(features(), ROWS)


def test_parent_must_be_a_target_encoded_feature_listed_before() -> None:
    with pytest.raises(ValidationError, match="listed before it"):
        Features(
            categorical=[
                CategoricalFeature(name="street", encodings=["target"], parent="zip"),
                CategoricalFeature(name="zip", encodings=["target"]),
            ]
        )
    with pytest.raises(ValidationError, match="parent needs the target encoding"):
        CategoricalFeature(name="street", parent="zip")
    with pytest.raises(ValidationError, match="encodings repeat"):
        CategoricalFeature(name="zip", encodings=["onehot", "onehot"])


def test_one_row_equals_its_row_in_a_batch_and_json_round_trip() -> None:
    spec = Features(
        numeric=[NumericFeature(name="area")],
        categorical=[
            CategoricalFeature(name="zip", encodings=["onehot", "target", "number"]),
            CategoricalFeature(name="street", encodings=["target"], parent="zip"),
        ],
    )
    rows = {"area": [50, 60, 70, 80, 90], "zip": ["2100", "2100", "8000", "8000", "9000"]}
    rows["street"] = ["a", "b", "a", "c", "d"]
    pipeline = FeaturePipeline.fit(spec, rows, TARGET, [1.0, 2, 3, 4, 5])
    restored = FeaturePipeline.from_json(json.loads(json.dumps(pipeline.to_json())))
    batch = restored.transform(rows)
    assert np.array_equal(batch, pipeline.transform(rows))
    for i in range(5):
        one = restored.transform({name: [values[i]] for name, values in rows.items()})
        assert np.array_equal(one[0], batch[i])
    assert restored.known_categories("street") == {"a", "b", "c", "d"}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("stats", {"A": [1.0, 0]}),
        ("stats", {"A": [float("nan"), 1]}),
        ("stats", {"A": [1.0]}),
        ("stats", "A"),
        ("std", 0.0),
        ("smoothing", -1.0),
        ("parent", 3),
        ("parent", "nowhere"),
    ],
)
def test_malformed_target_parameters_are_a_bundle_error(key: str, value: Any) -> None:
    document = FeaturePipeline.fit(features(), ROWS, TARGET, Y).to_json()
    document["categorical"][1]["target"][key] = value
    with pytest.raises(BundleError):
        FeaturePipeline.from_json(document)


def test_parameters_without_encodings_are_read_as_one_hot() -> None:
    spec = Features(categorical=[CategoricalFeature(name="zip")])
    document = FeaturePipeline.fit(spec, {"zip": ["A", "B"]}).to_json()
    del document["categorical"][0]["encodings"]
    restored = FeaturePipeline.from_json(document)
    assert restored.output_names == ["zip=A", "zip=B", "zip=__other__"]


def test_category_stats_and_encode_directly() -> None:
    stats = category_stats(["a", None, "a", "b"], np.array([1.0, 5.0, 3.0, 7.0]))
    assert stats == {"a": (4.0, 2), "b": (7.0, 1)}
    codes = encode([Level("c", None, 2.0)], {"c": ["a", "z"]}, {"c": stats}, prior=1.0)
    assert codes["c"].estimate == pytest.approx([(4 + 2) / 4, 1.0])
    assert codes["c"].count.tolist() == [2.0, 0.0]
