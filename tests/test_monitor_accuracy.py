"""Realised accuracy per family, against hand computations: the family's own metric names and
the promoted values read from evaluation's metrics JSON."""

import statistics
from datetime import UTC, datetime
from typing import Any

import pytest

from modelyard.core.bundle import Manifest, TensorSpec
from modelyard.core.families import realised_accuracy_function
from modelyard.monitoring.accuracy import Expected, FamilyAccuracy, bucket_size, realised_block
from modelyard.monitoring.feedback import Truth
from modelyard.projects.nilm.contract import Appliance, NilmContract
from modelyard.projects.nilm.normalisation import Normalisation
from modelyard.projects.vision.contract import VisionContract


def manifest(task: str, preprocessing: dict[str, Any]) -> Manifest:
    return Manifest(
        project=task,
        task=task,
        name=f"{task}-model",
        version="1",
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        sha256="0" * 64,
        inputs=[TensorSpec(name="x", dtype="float32", shape=["batch", 1])],
        outputs=[TensorSpec(name="y", dtype="float32", shape=["batch", 1])],
        preprocessing=preprocessing,
    )


def test_tabular_mdape_and_hit_rate_equal_a_hand_computation() -> None:
    realised = realised_accuracy_function("tabular")
    pairs = [
        ([{"price": 110.0, "warnings": []}], {"rows": [{"price": 100.0}]}),  # 10 %
        ([{"price": 150.0}, {"price": 95.0}], {"rows": [{"price": 100.0}, {"price": 100.0}]}),
        ([{"price": 80.0}], {"price": 100.0}),  # one row may be given bare: 20 %
        ([{"price": 1.0}, {"price": 2.0}], {"rows": [{"price": 1.0}]}),  # misaligned: left out
    ]
    errors = [0.10, 0.50, 0.05, 0.20]
    scores = realised(pairs)
    assert scores["mdape"] == pytest.approx(statistics.median(errors))
    assert scores["within_10pct"] == pytest.approx(2 / 4)  # 0.10 counts as within
    assert scores["mae"] == pytest.approx((10 + 50 + 5 + 20) / 4)
    assert realised([]) == {}


def test_tabular_promoted_values_come_from_the_model_scores() -> None:
    family = FamilyAccuracy.of("tabular")
    metrics = {"model": {"mdape": 0.12, "within_10pct": 0.45, "rows": 9}, "baseline": {}}
    assert family.promoted(metrics) == {"mdape": 0.12, "within_10pct": 0.45}
    assert not family.higher_is_better("mdape") and family.higher_is_better("within_10pct")


def test_vision_accuracy_and_macro_f1_over_the_bundles_classes() -> None:
    realised = realised_accuracy_function("vision")
    contract = VisionContract(
        classes=("cat", "dog", "owl"), image_size=8, mean=(0.5,) * 3, std=(0.2,) * 3
    )
    pairs = [
        ([{"label": "cat", "probability": 0.9}], {"label": "cat"}),
        ([{"label": "cat", "probability": 0.6}], {"label": "dog"}),
        ([{"label": "dog", "probability": 0.7}], {"label": "dog"}),
        ([{"label": "dog", "probability": 0.7}], {"label": "zebra"}),  # unknown class: left out
    ]
    scores = realised(pairs, manifest("vision", contract.to_preprocessing()))
    assert scores["accuracy"] == pytest.approx(2 / 3)
    # cat: P 1/2 R 1 -> F1 2/3; dog: P 1 R 1/2 -> 2/3; owl (never seen): 0, yet counted
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def nilm_contract() -> NilmContract:
    """Kettle on above 100 W, fridge above 20 W."""
    return NilmContract(
        window=5,
        interval_s=60,
        appliances={
            "kettle": Appliance(on_threshold_w=100.0, limit_w=3500.0),
            "fridge": Appliance(on_threshold_w=20.0, limit_w=3500.0),
        },
        normalisation=Normalisation(
            aggregate_mean=400.0,
            aggregate_std=600.0,
            target_mean=(100.0, 50.0),
            target_std=(300.0, 40.0),
        ),
        min_length=5,
        max_length=500,
        max_aggregate_w=23000.0,
    )


def test_nilm_mae_and_f1_per_appliance_at_the_contracts_threshold() -> None:
    realised = realised_accuracy_function("nilm")
    contract = nilm_contract()
    logged = [
        # a one-window request (edges=pad): the log keeps each appliance's midpoint prediction
        {
            "kettle": {"mean_w": 40.0, "midpoint_w": 150.0},
            "fridge": {"mean_w": 30, "midpoint_w": 30},
        },
        # edges=valid on one window: one prediction, its mean_w
        {"kettle": {"mean_w": 50.0}, "fridge": {"mean_w": 10.0}},
        # a longer request: only per-chunk predictions and the means are logged
        {"kettle": {"mean_w": 0.0, "chunk_w": [0.0, 0.0]}, "fridge": {"mean_w": 25.0}},
        # a one-window request whose truth is a mean: not a reading
        {"kettle": {"mean_w": 90.0, "midpoint_w": 300.0}, "fridge": {"mean_w": 20.0}},
    ]
    truths = [
        {"appliances": {"kettle": [0.0, 0.0, 200.0, 0.0, 0.0], "fridge": [40.0] * 5}},
        {"appliances": {"kettle": [10.0], "fridge": [10.0]}},
        {"appliances": {"kettle": [100.0, 300.0] * 5, "fridge": 35.0}},
        {"appliances": {"kettle": 60.0}},  # no fridge truth: only the kettle is scored
    ]
    scores = realised(
        list(zip(logged, truths, strict=True)), manifest("nilm", contract.to_preprocessing())
    )
    # readings: the midpoint (200 vs 150) and the one valid prediction (10 vs 50)
    assert scores["kettle.mae_w"] == pytest.approx((50 + 40) / 2)
    # kettle on/off at 100 W: truths on, off; predictions on, off -> F1 1
    assert scores["kettle.f1"] == pytest.approx(1.0)
    assert scores["fridge.mae_w"] == pytest.approx((10 + 0) / 2)
    assert scores["fridge.f1"] == pytest.approx(1.0)
    # the others on request means, reported apart: kettle 200 vs 0 and 60 vs 90, fridge 35 vs 25
    assert scores["kettle.request_mean_mae_w"] == pytest.approx((200 + 30) / 2)
    assert scores["fridge.request_mean_mae_w"] == pytest.approx(10.0)
    assert set(scores) == {
        f"{a}.{m}"
        for a in ("kettle", "fridge")
        for m in ("mae_w", "f1", "request_mean_mae_w", "on_readings")
    }
    assert scores["kettle.on_readings"] == 1.0 and scores["fridge.on_readings"] == 1.0
    # a window without any "on" reading, metered or predicted: no F1 (undefined), MAE all the same
    idle = realised(
        [({"kettle": {"mean_w": 1.0, "midpoint_w": 2.0}}, {"appliances": {"kettle": [0.0] * 5}})],
        manifest("nilm", contract.to_preprocessing()),
    )
    assert idle == {"kettle.mae_w": pytest.approx(2.0)}
    family = FamilyAccuracy.of("nilm")
    evaluation = {"overall": {"kettle": {"model": {"mae_w": 40.0, "f1": 0.8}, "baseline_mean": {}}}}
    assert family.promoted(evaluation) == {"kettle.mae_w": 40.0, "kettle.f1": 0.8}
    assert family.higher_is_better("kettle.f1") and not family.higher_is_better("kettle.mae_w")


def test_buckets_grow_with_the_window() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    assert bucket_size(start, start.replace(hour=20))[0] == "hour"
    assert bucket_size(start, start.replace(day=20))[0] == "day"
    assert bucket_size(start, start.replace(year=2027))[0] == "week"


def test_below_promoted_only_beyond_the_noise_of_the_truths() -> None:
    """A window as good as promoted, give or take 40 truths' noise, is not judged below it; the
    same shortfall over 2,000 truths, or a clear one over 40, is."""
    family = FamilyAccuracy.of("vision")
    contract = VisionContract(classes=("cat", "dog"), image_size=8, mean=(0.5,) * 3, std=(0.2,) * 3)
    bundle = manifest("vision", contract.to_preprocessing())
    promoted = Expected({"accuracy": 0.75}, {"accuracy": 0.75}, "evaluation", "the test split")
    when = datetime(2026, 12, 1, tzinfo=UTC)

    def truths(right: int, wrong: int) -> list[Truth]:
        hit = Truth(when, [{"label": "cat", "probability": 0.9}], {"label": "cat"})
        miss = Truth(when, [{"label": "cat", "probability": 0.9}], {"label": "dog"})
        return [hit] * right + [miss] * wrong

    def below(window: list[Truth]) -> dict[str, Any]:
        block = realised_block(window, family, bundle, promoted, 0.05, min_feedback=30)
        return block["metrics"]["accuracy"]

    noisy = below(truths(27, 13))  # 0.675: 7 % under 0.75, within two images of 0.71
    assert noisy["realised"] == pytest.approx(0.675)
    assert noisy["below_promoted"] is False and noisy["optimistic_bound"] > 0.7125
    assert below(truths(1350, 650))["below_promoted"] is True  # the same 0.675, measured
    assert below(truths(20, 20))["below_promoted"] is True  # 0.5: clearly worse


def test_an_f1_over_few_on_readings_is_reported_not_judged() -> None:
    """A window in which the model missed the one kettle use scores F1 0: noise, not a
    regression; the same miss rate over 30 uses is judged."""
    family = FamilyAccuracy.of("nilm")
    bundle = manifest("nilm", nilm_contract().to_preprocessing())
    expected = Expected({"kettle.f1": 0.8}, {}, "reference", "by hand")
    when = datetime(2026, 12, 1, tzinfo=UTC)

    def window(used: int, missed: int) -> list[Truth]:
        hit = Truth(when, {"kettle": {"mean_w": 2000.0}}, {"appliances": {"kettle": [2000.0]}})
        miss = Truth(when, {"kettle": {"mean_w": 0.0}}, {"appliances": {"kettle": [2000.0]}})
        idle = Truth(when, {"kettle": {"mean_w": 0.0}}, {"appliances": {"kettle": [0.0]}})
        return [hit] * used + [miss] * missed + [idle] * (60 - used - missed)

    one_miss = realised_block(window(0, 1), family, bundle, expected, 0.05)
    f1 = one_miss["metrics"]["kettle.f1"]
    assert f1["realised"] == 0.0 and f1["judged"] is False and f1["below_promoted"] is False
    assert one_miss["below_promoted"] == []
    many = realised_block(window(10, 25), family, bundle, expected, 0.05)
    f1 = many["metrics"]["kettle.f1"]
    assert f1["judged"] is True and f1["below_promoted"] is True  # 35 uses, 10 found: F1 0.44


def test_a_macro_f1_over_few_images_per_class_is_reported_not_judged() -> None:
    """Ten images of two classes: a macro-F1 far under the expected one is reported, not
    judged (a class seen a few times scores 0 after one miss); over 20 images per class the
    same shortfall is judged. Accuracy is judged either way."""
    family = FamilyAccuracy.of("vision")
    contract = VisionContract(classes=("cat", "dog"), image_size=8, mean=(0.5,) * 3, std=(0.2,) * 3)
    bundle = manifest("vision", contract.to_preprocessing())
    expected = Expected({"accuracy": 0.9, "macro_f1": 0.9}, {}, "evaluation", "the test split")
    when = datetime(2026, 12, 1, tzinfo=UTC)

    def window(images: int) -> list[Truth]:
        cat = Truth(when, [{"label": "cat", "probability": 0.9}], {"label": "cat"})
        dog_as_cat = Truth(when, [{"label": "cat", "probability": 0.9}], {"label": "dog"})
        return [cat] * (images // 2) + [dog_as_cat] * (images // 2)

    few = realised_block(window(30), family, bundle, expected, 0.05, min_feedback=30)
    assert (
        few["metrics"]["labelled"]["realised"] == 30 and few["metrics"]["classes"]["realised"] == 2
    )
    macro = few["metrics"]["macro_f1"]
    assert macro["realised"] < 0.5 and macro["judged"] is False and macro["below_promoted"] is False
    assert few["below_promoted"] == ["accuracy"]
    many = realised_block(window(40), family, bundle, expected, 0.05, min_feedback=30)
    assert many["metrics"]["macro_f1"]["judged"] is True
    assert sorted(many["below_promoted"]) == ["accuracy", "macro_f1"]


def test_the_alert_rate_is_shared_by_the_metrics_judged() -> None:
    """The bootstrap bound of each metric is taken at 1 - 0.05 / m for m judged metrics: more
    metrics judged together, a wider (more optimistic) bound for each."""
    family = FamilyAccuracy.of("vision")
    contract = VisionContract(classes=("cat", "dog"), image_size=8, mean=(0.5,) * 3, std=(0.2,) * 3)
    bundle = manifest("vision", contract.to_preprocessing())
    when = datetime(2026, 12, 1, tzinfo=UTC)
    hit = Truth(when, [{"label": "cat", "probability": 0.9}], {"label": "cat"})
    miss = Truth(when, [{"label": "cat", "probability": 0.9}], {"label": "dog"})
    window = [hit] * 60 + [miss] * 40  # accuracy 0.6, 50 images per class: macro-F1 judged too
    alone = Expected({"accuracy": 0.9}, {}, "evaluation", "the test split")
    both = Expected({"accuracy": 0.9, "macro_f1": 0.9}, {}, "evaluation", "the test split")
    one = realised_block(window, family, bundle, alone, 0.05)["metrics"]["accuracy"]
    two = realised_block(window, family, bundle, both, 0.05)["metrics"]["accuracy"]
    assert one["realised"] == two["realised"] == pytest.approx(0.6)
    assert two["optimistic_bound"] > one["optimistic_bound"]
