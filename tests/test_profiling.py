"""``trainer.profiler``: real reports from a real (quick) training run, and a clear error otherwise.

Also the finding the profiler led to (docs/profiling.md): the image CNN runs in the channels-last
memory layout, which must change its speed only, never what it computes.
"""

import copy
from pathlib import Path

import pytest
import torch

from modelyard.core.config import load_config
from modelyard.core.errors import ConfigError
from modelyard.core.run_dir import RunDir
from modelyard.projects.lightning_training import PROFILERS, profiler
from modelyard.projects.vision.model import ResidualCNN, build_backbone
from modelyard.stages import train

#: Lightning's own names for the training loop; any profiler that saw training reports them.
TRAINING_HOOKS = ("run_training_epoch", "training_step")


def _train_with_profiler(kc_house_data: list[str], workdir: Path, profiler: str) -> Path:
    """A short kc_house run (1 epoch, a few batches) with ``trainer.profiler=profiler``."""
    cfg = load_config(
        [
            *kc_house_data,
            "experiment=quick",
            "tracking=none",
            f"paths.workdir={workdir}",
            "trainer.enable_progress_bar=false",
            "trainer.max_epochs=1",
            # kc_house has 2 validation batches: fewer than the 5 steps the PyTorch profiler's
            # schedule needs, so Lightning records the whole fit into one trace (see
            # docs/profiling.md); 8 training steps are enough for the other two profilers.
            "trainer.limit_train_batches=8",
            f"trainer.profiler={profiler}",
        ]
    )
    result = train.run(cfg)
    profile = RunDir(result.run_dir).profile
    assert profile.is_dir(), f"no {profile.name}/ in {result.run_dir}"
    return profile


def _report(profile: Path) -> str:
    """The text report of the fit stage (Lightning names it ``fit-<filename>.txt``)."""
    reports = sorted(profile.glob("*.txt"))
    assert [path.name for path in reports] == ["fit-report.txt"], list(profile.iterdir())
    text = reports[0].read_text()
    assert text.startswith("FIT Profiler Report"), text[:200]
    return text


@pytest.mark.slow
def test_simple_profiler_reports_every_training_hook(
    kc_house_data: list[str], tmp_path: Path
) -> None:
    text = _report(_train_with_profiler(kc_house_data, tmp_path, "simple"))
    for hook in (*TRAINING_HOOKS, "backward", "optimizer_step", "validation_step"):
        assert hook in text, f"{hook} missing from the simple profiler's report"
    # extended=True: per action the number of calls, so a per-step cost can be read off.
    assert "Num calls" in text and "Total time (s)" in text


@pytest.mark.slow
def test_pytorch_profiler_reports_operators_and_writes_traces(
    kc_house_data: list[str], tmp_path: Path
) -> None:
    profile = _train_with_profiler(kc_house_data, tmp_path, "pytorch")
    text = _report(profile)
    # Operator level (what the finding in docs/profiling.md was read from) and Lightning's hooks
    # (names are cut at 55 characters in the table).
    assert "aten::addmm" in text or "aten::mm" in text, text[:2000]
    assert "[pl][profile]run_training_batch" in text
    traces = list(profile.glob("*.pt.trace.json"))
    assert traces, list(profile.iterdir())
    # The Chrome/Perfetto traces keep the full names: the training step and its operators.
    trace = "".join(path.read_text() for path in traces)
    assert '"[pl][profile][Strategy]SingleDeviceStrategy.training_step"' in trace
    assert '"aten::' in trace


@pytest.mark.slow
def test_advanced_profiler_reports_python_calls_of_the_training_loop(
    kc_house_data: list[str], tmp_path: Path
) -> None:
    text = _report(_train_with_profiler(kc_house_data, tmp_path, "advanced"))
    assert "run_training_epoch" in text
    # cProfile output: function calls with their source file, e.g. the module's training_step.
    assert "function calls" in text and "training_step" in text


def test_profiler_is_off_by_default() -> None:
    cfg = load_config(["project=kc_house", "experiment=quick", "tracking=none"])
    assert cfg.trainer.profiler is None
    assert profiler(cfg, RunDir(Path("unused"))) is None


def test_unknown_profiler_is_a_config_error_naming_the_choices(
    kc_house_data: list[str], tmp_path: Path
) -> None:
    cfg = load_config(
        [
            *kc_house_data,
            "experiment=quick",
            "tracking=none",
            f"paths.workdir={tmp_path}",
            "trainer.profiler=nope",
        ]
    )
    with pytest.raises(ConfigError) as error:
        train.run(cfg)
    message = str(error.value)
    assert "trainer.profiler" in message and "'nope'" in message
    for name in PROFILERS:
        assert name in message


# --------------------------------------------------------------- the fix: channels-last CNN


def _pair(seed: int = 0) -> tuple[ResidualCNN, ResidualCNN]:
    """The same small network (same weights, no dropout) channel-first and channels-last."""
    torch.manual_seed(seed)
    options = {"stages": (8, 16), "blocks_per_stage": 1, "stem_stride": 2, "dropout": 0.0}
    first = ResidualCNN(4, channels_last=False, **options)  # type: ignore[arg-type]
    last = ResidualCNN(4, channels_last=True, **options)  # type: ignore[arg-type]
    last.load_state_dict(first.state_dict())
    return first, last


def test_residual_cnn_is_channels_last_by_default_and_in_the_config() -> None:
    network = ResidualCNN(3, stages=(4, 8), blocks_per_stage=1)
    conv = network.stem[0]
    assert isinstance(conv, torch.nn.Conv2d)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    for project in ("eurosat", "plants"):
        for experiment in ("quick", "baseline"):
            cfg = load_config([f"project={project}", f"experiment={experiment}"])
            assert cfg.model.backbone_options.channels_last is True


def test_channels_last_activations_flow_through_the_network() -> None:
    _, last = _pair()
    seen: list[torch.Tensor] = []
    last.blocks[0].register_forward_hook(lambda _module, _args, out: seen.append(out))
    last.eval()
    with torch.no_grad():
        last(torch.randn(2, 3, 32, 32))  # a plain NCHW batch, as the data loader makes it
    assert seen and seen[0].is_contiguous(memory_format=torch.channels_last)


def test_channels_last_computes_what_channels_first_computes() -> None:
    first, last = _pair()
    images = torch.randn(6, 3, 32, 32)
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    for network in (first, last):
        network.train()
        loss = torch.nn.functional.cross_entropy(network(images), targets)
        torch.autograd.backward(loss)
    first.eval()
    last.eval()
    with torch.no_grad():
        torch.testing.assert_close(last(images), first(images), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(last.embed(images), first.embed(images), rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(first.named_parameters(), last.parameters(), strict=True):
        assert b.grad is not None and a.grad is not None
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("saved_channels_last", [True, False])
def test_checkpoints_load_across_memory_layouts(saved_channels_last: bool) -> None:
    # Weights saved in one layout load into a network of the other layout with the same values;
    # the loading network keeps its own layout (copy_ keeps the destination's strides).
    first, last = _pair()
    saved = copy.deepcopy((last if saved_channels_last else first).state_dict())
    restored = ResidualCNN(
        4,
        stages=(8, 16),
        blocks_per_stage=1,
        stem_stride=2,
        dropout=0.0,
        channels_last=not saved_channels_last,
    )
    restored.load_state_dict(saved)
    for key, value in restored.state_dict().items():
        assert torch.equal(value, first.state_dict()[key]), key
    conv = restored.stem[0]
    assert isinstance(conv, torch.nn.Conv2d)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) is not saved_channels_last


def test_channels_last_is_a_backbone_option() -> None:
    network = build_backbone("resnet_small", 3, stages=[4], blocks_per_stage=1, channels_last=False)
    assert isinstance(network, ResidualCNN) and not network.channels_last
    conv = network.stem[0]
    assert isinstance(conv, torch.nn.Conv2d) and conv.weight.is_contiguous()
