"""Two-class image models without training: threshold rules, ranking scores and the baseline on
scores whose every value is worked out by hand, the decision in the contract, and the rules'
errors."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import assert_user_error, modelyard
from contract_helpers import assert_refused_in_one_line
from modelyard.core.config import load_config
from modelyard.core.errors import ConfigError, DataError
from modelyard.projects.vision.binary import (
    average_precision,
    binary_decisions,
    choose_threshold,
    ranking_scores,
    roc_auc,
    threshold_curve,
)
from modelyard.projects.vision.contract import DecisionRule, DecisionThreshold, VisionContract
from modelyard.projects.vision.image_folders import index_image_folder
from modelyard.projects.vision.logged_outputs import answered_label, logged_outputs, logged_top
from modelyard.projects.vision.metrics import accuracy_interval, majority_baseline, wilson_interval
from modelyard.projects.vision.realised_accuracy import promoted, realised
from modelyard.projects.vision.task import VisionTask

# Positives score 0.9, 0.8, 0.6, 0.3; negatives 0.7, 0.55, 0.4, 0.2. Deciding positive at
# score >= t, from the highest t down (TP / decided, precision, recall, F1):
#   0.9: 1/1 1 1/4 2/5 | 0.8: 2/2 1 1/2 2/3 | 0.7: 2/3 2/3 1/2 4/7 | 0.6: 3/4 3/4 3/4 3/4
#   0.55: 3/5 3/5 3/4 2/3 | 0.4: 3/6 1/2 3/4 3/5 | 0.3: 4/7 4/7 1 8/11 | 0.2: 4/8 1/2 1 2/3
LABELS = np.array([1, 1, 0, 1, 0, 0, 1, 0])
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2])
ON = "validation split (8 images)"


def chosen(rule: str, target: float | None = None) -> DecisionThreshold:
    rules = DecisionRule.model_validate({"rule": rule, "target": target})
    return choose_threshold(LABELS, SCORES, rules, "pos", ON)


def test_the_curve_has_every_operating_point() -> None:
    curve = threshold_curve(LABELS, SCORES)
    assert curve.thresholds.tolist() == SCORES.tolist()
    assert curve.precision.tolist() == pytest.approx(
        [1, 1, 2 / 3, 3 / 4, 3 / 5, 1 / 2, 4 / 7, 1 / 2]
    )
    assert curve.recall.tolist() == pytest.approx([1 / 4, 1 / 2, 1 / 2, 3 / 4, 3 / 4, 3 / 4, 1, 1])
    assert curve.f1.tolist() == pytest.approx(
        [2 / 5, 2 / 3, 4 / 7, 3 / 4, 2 / 3, 3 / 5, 8 / 11, 2 / 3]
    )
    assert curve.false_positive_rate.tolist() == pytest.approx(
        [0, 0, 1 / 4, 1 / 4, 1 / 2, 3 / 4, 3 / 4, 1]
    )


def test_max_f1_takes_the_best_f1() -> None:
    decision = chosen("max_f1")
    assert decision == DecisionThreshold(
        positive_class="pos",
        threshold=0.6,
        rule="max_f1",
        target=None,
        target_met=True,
        chosen_on=ON,
        precision=0.75,
        recall=0.75,
        f1=0.75,
    )


def test_equal_f1_goes_to_the_higher_threshold() -> None:
    labels, scores = np.array([1, 0, 1, 0]), np.array([0.8, 0.6, 0.4, 0.2])
    # 0.8: P 1 R 1/2 F1 2/3 | 0.6: P 1/2 R 1/2 F1 1/2 | 0.4: P 2/3 R 1 F1 4/5 | 0.2: P 1/2 F1 2/3
    decision = choose_threshold(labels, scores, DecisionRule(), "pos", ON)
    assert decision.threshold == 0.4 and decision.f1 == pytest.approx(0.8)
    tied = choose_threshold(np.array([1, 0, 1]), np.array([0.9, 0.5, 0.1]), DecisionRule(), "p", ON)
    # 0.9: P 1 R 1/2 F1 2/3 | 0.5: P 1/2 R 1/2 F1 1/2 | 0.1: P 2/3 R 1 F1 4/5 -> 0.1
    assert tied.threshold == 0.1
    even = choose_threshold(
        np.array([1, 0, 0, 1]), np.array([0.9, 0.5, 0.4, 0.1]), DecisionRule(), "p", ON
    )
    # 0.9: F1 2/3 | 0.5: 1/2 | 0.4: 2/5 | 0.1: P 1/2 R 1 F1 2/3 -> equal: the higher, 0.9
    assert even.threshold == 0.9 and even.f1 == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("rule", "target", "threshold", "precision", "recall"),
    [
        ("precision", 0.9, 0.8, 1.0, 0.5),  # the lowest threshold keeping precision >= 0.9
        ("precision", 0.7, 0.6, 0.75, 0.75),
        ("precision", 1.0, 0.8, 1.0, 0.5),
        ("recall", 1.0, 0.3, 4 / 7, 1.0),  # the highest threshold keeping recall >= 1
        ("recall", 0.5, 0.8, 1.0, 0.5),
        ("recall", 0.6, 0.6, 0.75, 0.75),
    ],
)
def test_a_target_precision_or_recall(
    rule: str, target: float, threshold: float, precision: float, recall: float
) -> None:
    decision = chosen(rule, target)
    assert decision.threshold == threshold
    assert (decision.precision, decision.recall) == pytest.approx((precision, recall))
    assert decision.rule == rule and decision.target == target and decision.target_met


def test_an_unreachable_precision_takes_the_most_precise_threshold_and_says_so() -> None:
    # 0.9 (negative): P 0 | 0.5: P 1/2 | 0.1: P 1/3
    decision = choose_threshold(
        np.array([0, 1, 0]),
        np.array([0.9, 0.5, 0.1]),
        DecisionRule(rule="precision", target=0.9),
        "pos",
        ON,
    )
    assert (decision.threshold, decision.precision, decision.target_met) == (0.5, 0.5, False)


def test_one_class_only_cannot_choose() -> None:
    with pytest.raises(DataError, match="one class only"):
        choose_threshold(np.array([1, 1]), np.array([0.2, 0.7]), DecisionRule(), "pos", ON)


def test_roc_auc_and_average_precision_by_hand() -> None:
    # positive above negative: 0.9 > 4, 0.8 > 4, 0.6 > 3, 0.3 > 1 -> 12 of 16 pairs
    assert roc_auc(LABELS, SCORES) == pytest.approx(12 / 16)
    # recall steps of 1/4 at precisions 1, 1, 3/4, 4/7
    assert average_precision(LABELS, SCORES) == pytest.approx((1 + 1 + 3 / 4 + 4 / 7) / 4)
    # a tie counts a half; a perfect ranking is 1
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5
    assert roc_auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.6, 0.6, 0.9])) == pytest.approx(7 / 8)
    assert average_precision(np.array([0, 1]), np.array([0.1, 0.9])) == 1.0
    scores = ranking_scores(LABELS, SCORES)
    assert scores["roc_curve"]["false_positive_rate"][:3] == [0.0, 0.0, 0.0]
    assert scores["roc_curve"]["true_positive_rate"][-1] == 1.0
    assert scores["pr_curve"]["precision"][0] == 1.0
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.array([1, 1]), np.array([0.1, 0.2]))


def test_the_majority_baseline() -> None:
    baseline = majority_baseline(np.array([0, 1, 1, 0, 1]), ["a", "b"])
    # always "b": accuracy 3/5; F1 of b = 2 * 3/5 * 1 / (3/5 + 1) = 3/4, of a 0
    assert baseline["class"] == "b"
    assert baseline["accuracy"] == pytest.approx(0.6)
    assert baseline["macro_f1"] == pytest.approx(3 / 8)


def test_one_function_decides_for_server_and_offline_predict() -> None:
    decision = DecisionThreshold(
        positive_class="cat",
        threshold=0.3,
        rule="max_f1",
        chosen_on=ON,
        precision=1,
        recall=1,
        f1=1,
    )
    # P(cat) = sigmoid(logit_cat - logit_dog): 0.5, ~0.269, ~0.731
    logits = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    answers = binary_decisions(logits, ("dog", "cat"), decision)
    assert [a["is_positive"] for a in answers] == [True, False, True]
    assert [a["label"] for a in answers] == ["cat", "dog", "cat"]
    assert answers[1]["positive_probability"] == pytest.approx(1 / (1 + np.e), abs=1e-6)
    assert {a["threshold"] for a in answers} == {0.3}
    first = decision.model_copy(update={"positive_class": "dog"})
    assert [a["label"] for a in binary_decisions(logits, ("dog", "cat"), first)] == [
        "dog",
        "dog",
        "cat",
    ]


def test_the_decision_round_trips_through_the_contract() -> None:
    decision = chosen("precision", 0.9)
    contract = VisionContract(
        classes=("neg", "pos"), image_size=8, mean=(0.5,) * 3, std=(0.2,) * 3, decision=decision
    )
    written = contract.to_preprocessing()
    assert written["decision"]["threshold"] == 0.8
    assert VisionContract.parse(written) == contract
    plain = VisionContract(classes=("a", "b", "c"), image_size=8, mean=(0.5,) * 3, std=(0.2,) * 3)
    assert "decision" not in plain.to_preprocessing()
    assert_refused_in_one_line(
        VisionContract.parse,
        plain.to_preprocessing() | {"decision": written["decision"]},
        "2 classes",
    )
    assert_refused_in_one_line(
        VisionContract.parse,
        written | {"decision": written["decision"] | {"positive_class": "cat"}},
        "'cat' is not a class",
    )


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            ["project.decision.rule=best"],
            "project.decision.rule: must be one of max_f1, precision, recall, got 'best'",
        ),
        (["project.decision.rule=precision"], "rule precision needs a target in (0, 1]"),
        (
            ["project.decision.rule=recall", "project.decision.target=1.5"],
            "project.decision.target: ",
        ),
        (["project.decision.target=0.9"], "rule max_f1 takes no target"),
    ],
)
def test_a_bad_rule_or_target_is_refused_in_one_line(
    overrides: list[str], fragment: str, tmp_path: Path
) -> None:
    cfg = load_config(["project=plants", f"paths.workdir={tmp_path}", *overrides])
    with pytest.raises(ConfigError) as caught:
        VisionTask(cfg)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_the_rules_read_from_the_configuration(tmp_path: Path) -> None:
    cfg = load_config(
        [
            "project=plants",
            f"paths.workdir={tmp_path}",
            "project.decision.rule=precision",
            "project.decision.target=0.9",
        ]
    )
    assert VisionTask(cfg).decision_rule == DecisionRule(rule="precision", target=0.9)
    assert VisionTask(load_config(["project=plants"])).decision_rule == DecisionRule()


def test_the_real_command_line_refuses_a_bad_rule_in_one_line(tmp_path: Path) -> None:
    result = modelyard("train", "project=plants", "project.decision.rule=recall", workdir=tmp_path)
    assert_user_error(result, "project.decision: rule recall needs a target in (0, 1]")


def test_the_wilson_interval_by_hand() -> None:
    # 8 of 10, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.716738,
    # half 1.96 * sqrt(0.016 + 0.009604) / 1.38416 = 0.226581
    low, high = wilson_interval(8, 10, z=1.96)
    assert (low, high) == pytest.approx((0.490157, 0.943319), abs=1e-6)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert accuracy_interval(50, 100) == {
        "method": "wilson",
        "level": 0.95,
        "low": pytest.approx(0.403832, abs=1e-6),
        "high": pytest.approx(0.596168, abs=1e-6),
        "n": 100,
    }


def test_the_class_order_is_by_name_as_text_whatever_the_folders_creation_order(
    tmp_path: Path,
) -> None:
    """Capitals sort before small letters and "10" before "9": the order is the names' as
    strings, never the order the folders were made or listed in."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    png = buffer.getvalue()
    for name in ("ant", "9_dog", "Zebra", "10_cat"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "one.png").write_bytes(png)
    assert index_image_folder(tmp_path).classes == ["10_cat", "9_dog", "Zebra", "ant"]


# --- the logged answer: realised accuracy scores the decision --------------------------------


def _top(label: str, probability: float) -> list[dict[str, object]]:
    other = "cat" if label == "dog" else "dog"
    return [
        {"label": label, "probability": probability},
        {"label": other, "probability": round(1 - probability, 4)},
    ]


def test_the_logged_answer_is_the_decision_when_there_is_one() -> None:
    # P(dog) = 0.3 is below 0.5 (top class: cat) but above the threshold 0.2: decided dog
    decided = {"positive_class": "dog", "positive_probability": 0.3, "threshold": 0.2}
    decided |= {"is_positive": True, "label": "dog"}
    logged = logged_outputs(_top("cat", 0.7), decided)
    assert logged == {"top": _top("cat", 0.7), "decision": decided}
    assert answered_label(logged) == "dog"
    assert logged_top(logged) == {"label": "cat", "probability": 0.7}
    # a multi-class answer (and a log written before decisions were logged) is the bare list
    assert logged_outputs(_top("cat", 0.7), None) == _top("cat", 0.7)
    assert answered_label(_top("cat", 0.7)) == "cat"
    for malformed in (None, [], {}, "cat", [3], {"decision": {"label": 3}}, {"top": "cat"}):
        assert answered_label(malformed) is None


def test_realised_accuracy_scores_the_decision_against_the_accuracy_at_the_threshold() -> None:
    decided = {"positive_class": "dog", "threshold": 0.2, "label": "dog"}
    pairs = [
        (logged_outputs(_top("cat", 0.7), decided), {"label": "dog"}),  # decision right, top wrong
        (logged_outputs(_top("cat", 0.9), decided | {"label": "cat"}), {"label": "cat"}),
        (_top("dog", 0.8), {"label": "cat"}),  # an old row: its top class, wrong
    ]
    scores = realised(pairs)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["labelled"] == 3
    metrics = {"accuracy": 0.91, "macro_f1": 0.9}
    assert promoted(metrics) == {"accuracy": 0.91, "macro_f1": 0.9}
    at_threshold = {"accuracy": 0.85, "macro_f1": 0.84, "precision": 0.8}
    assert promoted(metrics | {"binary": {"at_threshold": at_threshold}}) == {
        "accuracy": 0.85,
        "macro_f1": 0.84,
    }
    # two classes without a decision (a run whose threshold could not be chosen): argmax scores
    assert promoted(metrics | {"binary": {"roc_auc": 0.9}}) == metrics
