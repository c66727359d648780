"""Micro-batching over a real ONNX Runtime session: correct slices, shared calls, errors."""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bundle_factory import make_nilm_bundle
from modelyard.serving.batching import BatchingModel
from modelyard.serving.runtime import OnnxModel

WINDOW = 15


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    bundle = make_nilm_bundle(tmp_path_factory.mktemp("bundle"), window=WINDOW)
    return OnnxModel(bundle.model_path, threads=1)


def windows(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, WINDOW)).astype(np.float32)


def test_concurrent_requests_share_calls_and_get_their_own_rows(model: OnnxModel) -> None:
    calls: list[tuple[int, int]] = []
    batcher = BatchingModel(
        model, max_batch=64, max_wait_ms=20, on_batch=lambda n, rows, _s: calls.append((n, rows))
    )
    requests = [windows(1 + k % 3, seed=k) for k in range(48)]
    expected = [model.run(r) for r in requests]
    barrier = threading.Barrier(16)

    def call(index: int) -> np.ndarray:
        if index < 16:
            barrier.wait()  # the first 16 arrive together
        return batcher.run(requests[index])

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(len(requests))))
    batcher.close()
    for answer, reference in zip(answers, expected, strict=True):
        np.testing.assert_allclose(answer, reference, rtol=1e-5, atol=1e-5)
    assert batcher.stats.requests == 48 and batcher.stats.rows == sum(len(r) for r in requests)
    assert len(calls) < 48  # requests were combined
    assert max(n for n, _ in calls) > 1
    assert all(rows <= 64 for _, rows in calls)


def test_a_request_larger_than_max_batch_runs_alone_in_max_batch_chunks(model: OnnxModel) -> None:
    calls: list[int] = []
    batcher = BatchingModel(
        model, max_batch=8, max_wait_ms=0, on_batch=lambda _n, rows, _s: calls.append(rows)
    )
    big = windows(100, seed=1)
    np.testing.assert_allclose(batcher.run(big), model.run(big), rtol=1e-5, atol=1e-5)
    batcher.close()
    assert calls == [8] * 12 + [4]  # no call above max_batch rows: bounded working memory


def test_model_errors_reach_every_caller_and_the_batcher_keeps_going(model: OnnxModel) -> None:
    batcher = BatchingModel(model, max_batch=16, max_wait_ms=0)
    with pytest.raises(Exception, match=r"(?i)dimension|shape|invalid"):
        batcher.run(np.zeros((2, WINDOW + 2), np.float32))  # wrong window length
    good = windows(3, seed=2)
    np.testing.assert_allclose(batcher.run(good), model.run(good), rtol=1e-5, atol=1e-5)
    batcher.close()
    with pytest.raises(RuntimeError, match="shutting down"):
        batcher.run(good)


def test_settings_are_checked(model: OnnxModel) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatchingModel(model, max_batch=0)
