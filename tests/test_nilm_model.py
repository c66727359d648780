"""seq2point network and its Lightning wrapper, on real (small, seeded, CPU) torch."""

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from modelyard.core.seeding import seed_everything
from modelyard.projects.nilm.lightning_module import Seq2PointModule
from modelyard.projects.nilm.model import Seq2Point, Seq2PointEnsemble
from modelyard.projects.torch_model import TorchModel
from modelyard.serving.runtime import OnnxModel

SMALL = {"channels": (4, 6), "kernels": (3, 5), "hidden": 16}


@pytest.mark.parametrize("window", [7, 9, 31, 99])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("n_outputs", [1, 4])
def test_output_shape(window: int, batch: int, n_outputs: int) -> None:
    model = Seq2Point(window, n_outputs, **SMALL).eval()
    out = model(torch.randn(batch, window))
    assert out.shape == (batch, n_outputs)
    assert torch.isfinite(out).all()


def test_default_architecture_output_shape_and_minimum_window() -> None:
    # default kernels (10, 8, 6, 5, 5) shrink the window by 9 + 7 + 5 + 4 + 4 = 29
    model = Seq2Point(30, 3, hidden=8).eval()
    assert model(torch.randn(2, 30)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"window 29 is too short .* at least 30 readings"):
        Seq2Point(29, 3)


def test_too_short_window_for_custom_kernels() -> None:
    # kernels (3, 5) shrink by 2 + 4 = 6: a window needs at least 7 readings
    with pytest.raises(ValueError, match=r"window 5 is too short for kernels \[3, 5\]") as info:
        Seq2Point(5, 1, **SMALL)
    assert "at least 7 readings" in str(info.value)


@pytest.mark.parametrize(
    ("channels", "kernels"),
    [((4, 4), (3,)), ((4,), (3, 3)), ((), ())],
    ids=["more", "fewer", "none"],
)
def test_mismatched_channels_and_kernels(
    channels: tuple[int, ...], kernels: tuple[int, ...]
) -> None:
    with pytest.raises(
        ValueError, match=r"channels and model\.kernels must be non-empty and equally"
    ):
        Seq2Point(99, 1, channels=channels, kernels=kernels)


def test_module_rejects_unknown_loss() -> None:
    with pytest.raises(ValueError, match=r"model.loss must be one of \['huber', 'l1', 'mse'\]"):
        Seq2PointModule(11, ["kettle"], [1.0], loss="rmse", **SMALL)


@pytest.mark.parametrize(
    ("loss", "expected"),
    # prediction 0, target 2: MSE 2^2 = 4; L1 |2| = 2; Huber (delta 1) |2| - 1/2 = 1.5
    [("mse", 4.0), ("l1", 2.0), ("huber", 1.5)],
)
def test_module_losses(loss: str, expected: float) -> None:
    module = Seq2PointModule(11, ["kettle", "microwave"], [100.0, 20.0], loss=loss, **SMALL)
    value = module.loss_fn(torch.zeros(3, 2), torch.full((3, 2), 2.0))
    assert value.shape == (3, 2)  # element-wise: masks select on-readings for gated models
    assert value.mean().item() == pytest.approx(expected)
    assert torch.equal(module.target_std, torch.tensor([100.0, 20.0]))
    assert module(torch.randn(3, 11)).shape == (3, 2)


def test_a_few_optimisation_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    window = 11
    module = Seq2PointModule(window, ["a", "b"], [1.0, 1.0], dropout=0.0, lr=3e-3, **SMALL).train()
    optimiser = module.configure_optimizers()
    x = torch.randn(64, window)
    # two learnable targets: the midpoint reading, and the mean of the window
    y = torch.stack([x[:, window // 2], x.mean(dim=1)], dim=1)

    def loss() -> torch.Tensor:
        value: torch.Tensor = module.loss_fn(module(x), y).mean()
        return value

    with torch.no_grad():
        before = loss().item()
    for _ in range(60):
        optimiser.zero_grad()
        step = loss()
        step.backward()
        optimiser.step()
    with torch.no_grad():
        after = loss().item()

    assert after < 0.3 * before, (before, after)


# --------------------------------------------------------------------------- gated seq2point

ZERO_LEVEL = (-0.5, -2.0, -1.25)


@pytest.mark.parametrize("batch", [1, 4])
def test_gated_output_shape(batch: int) -> None:
    model = Seq2Point(11, 3, gated=True, zero_level=ZERO_LEVEL, **SMALL).eval()
    out = model(torch.randn(batch, 11))
    assert out.shape == (batch, 3)
    prediction, logits = model.parts(torch.randn(batch, 11))
    assert prediction.shape == (batch, 3)
    assert logits is not None and logits.shape == (batch, 3)
    # sigmoid * softplus >= 0: a gated network never predicts below the zero level
    assert (out >= torch.tensor(ZERO_LEVEL)).all()


def _constant_gated(logit: float) -> tuple[Seq2Point, list[float]]:
    """A gated network whose last layer ignores its input: power biases, then logit biases."""
    model = Seq2Point(11, 3, gated=True, zero_level=ZERO_LEVEL, **SMALL).eval()
    power = [-1.0, 0.0, 2.5]
    last = model.head[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([*power, logit, logit, logit]))
    return model, power


def test_gated_output_is_the_zero_level_when_off() -> None:
    model, _ = _constant_gated(-1e4)
    out = model(torch.randn(5, 11))
    assert torch.equal(out, torch.tensor(ZERO_LEVEL).expand(5, 3))


def test_gated_output_is_softplus_power_plus_zero_level_when_on() -> None:
    model, power = _constant_gated(1e4)
    out = model(torch.randn(5, 11))
    expected = [math.log1p(math.exp(p)) + z for p, z in zip(power, ZERO_LEVEL, strict=True)]
    torch.testing.assert_close(out, torch.tensor(expected).expand(5, 3), rtol=0, atol=1e-6)
    _, logits = model.parts(torch.randn(2, 11))
    assert logits is not None and torch.equal(logits, torch.full((2, 3), 1e4))


@pytest.mark.parametrize("zero_level", [None, (0.0, 0.0)], ids=["missing", "too-short"])
def test_gated_needs_one_zero_level_per_output(zero_level: tuple[float, ...] | None) -> None:
    with pytest.raises(ValueError, match="needs one zero_level per output"):
        Seq2Point(11, 3, gated=True, zero_level=zero_level, **SMALL)


def _gated_module(
    on_loss_weight: float = 1.0, seed: int = 0, members: int = 1, hard_gate: bool = False
) -> Seq2PointModule:
    torch.manual_seed(seed)
    return Seq2PointModule(
        11,
        ["kettle", "microwave"],
        target_std=[25.0, 2.0],
        target_mean=[50.0, 10.0],
        on_threshold_w=[100.0, 15.0],
        gated=True,
        on_loss_weight=on_loss_weight,
        dropout=0.0,
        members=members,
        hard_gate=hard_gate,
        **SMALL,
    )


def test_on_threshold_and_zero_level_in_z_scores() -> None:
    module = _gated_module()
    # (100 - 50) / 25 = 2 ; (15 - 10) / 2 = 2.5
    assert torch.equal(module.on_threshold_z, torch.tensor([2.0, 2.5]))
    # 0 W as a z-score: -50 / 25 = -2 ; -10 / 2 = -5
    assert torch.equal(module.net.zero_level, torch.tensor([-2.0, -5.0]))


def test_gated_loss_adds_the_on_off_classification_term() -> None:
    without, weighted = _gated_module(on_loss_weight=0.0), _gated_module(on_loss_weight=1.0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(without.state_dict().values(), weighted.state_dict().values(), strict=True)
    )
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(32, 11, generator=generator)
    y = 3.0 * torch.randn(32, 2, generator=generator)

    loss0, prediction = without.compute_loss(x, y)
    loss1, _ = weighted.compute_loss(x, y)
    assert loss0.item() < loss1.item()
    # without the on/off term it is the plain regression loss
    assert loss0.item() == pytest.approx(((prediction - y) ** 2).mean().item(), rel=1e-6)

    _, logits = weighted.net.parts(x)
    assert logits is not None
    on = y > torch.tensor([2.0, 2.5])
    assert 0 < on.sum() < on.numel()
    p = torch.sigmoid(logits.double())
    bce = -(torch.where(on, p.log(), (1 - p).log())).mean()
    assert loss1.item() - loss0.item() == pytest.approx(bce.item(), rel=1e-4)


def test_gated_module_exports_to_onnx_with_parity(tmp_path: Path) -> None:
    module = _gated_module(seed=3).eval()
    example = torch.randn(16, 11, generator=torch.Generator().manual_seed(4)).numpy()
    path = tmp_path / "model.onnx"
    TorchModel(module).export_onnx(path, example, "mains", ["power"])
    runtime = OnnxModel(path)
    for size in (1, 16):
        batch = example[:size]
        with torch.no_grad():
            expected = module(torch.from_numpy(batch)).numpy()
        got = runtime.run(batch)
        assert got.shape == (size, 2)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


# --------------------------------------------------------------------------- reproducibility


def _seeded_module(seed: int) -> Seq2PointModule:
    seed_everything(seed)
    return Seq2PointModule(11, ["a", "b"], [1.0, 1.0], dropout=0.2, **SMALL)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_seeded_modules_start_and_train_identically() -> None:
    first, second = _seeded_module(7), _seeded_module(7)
    assert _same_weights(first, second)
    assert not _same_weights(first, _seeded_module(8))
    initial = {k: v.clone() for k, v in first.state_dict().items()}

    x = torch.randn(32, 11, generator=torch.Generator().manual_seed(0))
    y = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    for module in (first, second):
        seed_everything(7)  # dropout masks come from the global generator
        module.train()
        optimiser = module.configure_optimizers()
        for _ in range(3):
            optimiser.zero_grad()
            loss, _ = module.compute_loss(x, y)
            loss.backward()
            optimiser.step()

    assert _same_weights(first, second)
    assert any(not torch.equal(initial[k], v) for k, v in first.state_dict().items())


# --------------------------------------------------------------------------- ensembles


def _ensemble_module(members: int, seed: int = 0) -> Seq2PointModule:
    return _gated_module(seed=seed, members=members, hard_gate=True)


def test_a_plain_ensemble_outputs_the_mean_of_independently_initialised_members() -> None:
    seed_everything(0)
    ensemble = Seq2PointEnsemble(3, 11, 2, **SMALL).eval()
    first, second, third = ensemble.members
    assert not _same_weights(first, second) and not _same_weights(second, third)
    x = torch.randn(8, 11, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        outputs = [member(x) for member in ensemble.members]
        assert not torch.allclose(outputs[0], outputs[1])
        torch.testing.assert_close(ensemble(x), (outputs[0] + outputs[1] + outputs[2]) / 3)


def test_a_hard_gated_ensemble_votes_with_mean_logits_and_never_leaks_partial_power() -> None:
    module = _ensemble_module(3, seed=3).eval()
    x = torch.randn(256, 11, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        heads = [net.heads(x) for net in module.members()]
        powers = torch.stack([power for power, _ in heads])
        logits = torch.stack([logit for _, logit in heads if logit is not None])
        zero = module.members()[0].zero_level
        expected = torch.where(logits.mean(dim=0) > 0, powers.mean(dim=0), 0.0) + zero
        got = module(x)
        member_outputs = torch.stack([net(x) for net in module.members()])
    torch.testing.assert_close(got, expected)
    # the members disagree on some readings: averaging their hard-gated outputs would give a
    # fraction of the power there, the ensemble gives either nothing or the full mean power
    votes = (logits > 0).sum(dim=0)
    split = (votes > 0) & (votes < 3)
    assert bool(split.any())
    assert not torch.allclose(got[split], member_outputs.mean(dim=0)[split])


def test_a_single_member_keeps_the_plain_network_and_its_parameter_names() -> None:
    single = _ensemble_module(1)
    assert isinstance(single.net, Seq2Point) and single.members() == [single.net]
    assert "net.features.0.weight" in single.state_dict()
    ensemble = _ensemble_module(2)
    assert isinstance(ensemble.net, Seq2PointEnsemble) and len(ensemble.members()) == 2
    assert "net.members.1.features.0.weight" in ensemble.state_dict()


def test_each_member_learns_from_its_own_loss_only() -> None:
    module = _ensemble_module(3).train()
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(32, 11, generator=generator)
    y = 3.0 * torch.randn(32, 2, generator=generator)
    loss, prediction = module.compute_loss(x, y)
    loss.backward()

    for member in module.members():
        alone = copy.deepcopy(member)
        alone.zero_grad()
        own_loss = module.member_loss(alone.gated_parts(x), y)
        own_loss.backward()
        for in_ensemble, by_itself in zip(member.parameters(), alone.parameters(), strict=True):
            assert in_ensemble.grad is not None and by_itself.grad is not None
            # the ensemble's loss is the members' mean: each gets 1/3 of its own gradient
            torch.testing.assert_close(in_ensemble.grad * 3, by_itself.grad)
    # while training the gate is soft: sigmoid of the mean logit times the mean power head
    with torch.no_grad():
        heads = [net.heads(x) for net in module.members()]
        power = torch.stack([p for p, _ in heads]).mean(dim=0)
        logit = torch.stack([g for _, g in heads if g is not None]).mean(dim=0)
        zero = module.members()[0].zero_level
    torch.testing.assert_close(prediction, torch.sigmoid(logit) * power + zero)


def test_ensemble_exports_to_one_onnx_graph_with_parity(tmp_path: Path) -> None:
    module = _ensemble_module(3, seed=4).eval()
    example = torch.randn(16, 11, generator=torch.Generator().manual_seed(4)).numpy()
    path = tmp_path / "model.onnx"
    TorchModel(module).export_onnx(path, example, "mains", ["power"])
    runtime = OnnxModel(path)
    with torch.no_grad():
        expected = module(torch.from_numpy(example)).numpy()
        single = module.members()[0](torch.from_numpy(example)).numpy()
    got = runtime.run(example)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert not np.allclose(got, single, atol=1e-3)


@pytest.mark.parametrize("members", [0, -1, 1.5, True, "3"])
def test_member_count_must_be_a_whole_number_of_at_least_one(members: object) -> None:
    with pytest.raises(ValueError, match=r"model\.members must be a whole number >= 1"):
        Seq2PointModule(11, ["a"], [1.0], members=members, **SMALL)  # type: ignore[arg-type]


def test_an_ensemble_needs_two_members() -> None:
    with pytest.raises(ValueError, match="at least 2 members, got 1"):
        Seq2PointEnsemble(1, 11, 2)
