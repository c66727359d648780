"""seq2point network and its Lightning wrapper, on real (small, seeded, CPU) torch."""

import pytest
import torch

from modelyard.projects.nilm.lightning_module import Seq2PointModule
from modelyard.projects.nilm.model import Seq2Point

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
    assert value.item() == pytest.approx(expected)
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
        value: torch.Tensor = module.loss_fn(module(x), y)
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
