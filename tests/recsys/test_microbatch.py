"""Dynamic micro-batching of cache misses: concurrent requests share model calls, each gets its own rows."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from recsys.microbatch import BatcherClosed, MicroBatcher


class SlowUpper:
    """A model stand-in that takes a while per call and records what each call saw."""

    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.calls: list[list[str]] = []
        self.started = threading.Event()

    def __call__(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        self.started.set()
        time.sleep(self.delay)
        return [t.upper() for t in texts]


def run_concurrently(batcher: MicroBatcher, jobs: list[list[str]]) -> list[list[str]]:
    out: list = [None] * len(jobs)

    def go(i: int) -> None:
        out[i] = batcher.run(jobs[i])

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return out


def test_concurrent_requests_share_calls_and_get_their_own_rows() -> None:
    fn = SlowUpper()
    b = MicroBatcher(fn, max_batch=64)
    # One request occupies the worker; the next eight queue up meanwhile and must go through together.
    first = threading.Thread(target=b.run, args=(["warm"],))
    first.start()
    assert fn.started.wait(5)
    jobs = [[f"r{i}-a", f"r{i}-b", "shared"] for i in range(8)]
    out = run_concurrently(b, jobs)
    first.join(5)
    assert out == [[t.upper() for t in job] for job in jobs]
    assert len(fn.calls) == 2                       # the warm-up, then one call for all eight
    assert len(fn.calls[1]) == 8 * 2 + 1            # "shared" sent once
    assert (b.batches, b.requests, b.texts, b.encoded) == (2, 9, 25, 18)
    assert not b._where                              # nothing left pending


def test_a_batch_never_exceeds_max_batch() -> None:
    fn = SlowUpper()
    b = MicroBatcher(fn, max_batch=5)
    first = threading.Thread(target=b.run, args=(["warm"],))
    first.start()
    assert fn.started.wait(5)
    jobs = [[f"r{i}-{j}" for j in range(2)] for i in range(6)] + [[f"big-{j}" for j in range(7)]]
    out = run_concurrently(b, jobs)
    first.join(5)
    assert out == [[t.upper() for t in job] for job in jobs]
    assert max(len(call) for call in fn.calls) == 5
    texts_sent = sorted(t for call in fn.calls[1:] for t in call)
    assert texts_sent == sorted(t for job in jobs for t in job)


def test_a_text_being_computed_is_not_sent_again() -> None:
    """A request that brings a text another request's batch is already running waits for that row."""
    fn = SlowUpper(delay=0.3)
    b = MicroBatcher(fn, max_batch=64)
    first = threading.Thread(target=b.run, args=(["new release", "other"],))
    first.start()
    assert fn.started.wait(5)
    assert b.run(["new release"]) == ["NEW RELEASE"]
    first.join(5)
    assert fn.calls == [["new release", "other"]]
    assert (b.requests, b.texts, b.encoded) == (2, 3, 2)


class Overlap(SlowUpper):
    """SlowUpper that also records how many calls ran at the same time."""

    def __init__(self, delay: float = 0.2) -> None:
        super().__init__(delay)
        self.lock = threading.Lock()
        self.running = self.most = 0

    def __call__(self, texts: list[str]) -> list[str]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return super().__call__(texts)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.parametrize("instances", [1, 2])
def test_instances_run_that_many_batches_at_once(instances) -> None:
    """With two instances the request that arrives while a batch runs starts its own batch at once;
    with one it waits for the running batch."""
    fn = Overlap()
    b = MicroBatcher(fn, max_batch=64, instances=instances)
    first = threading.Thread(target=b.run, args=(["first", "shared"],))
    first.start()
    assert fn.started.wait(5)
    t0 = time.monotonic()
    assert b.run(["second", "shared"]) == ["SECOND", "SHARED"]
    waited = time.monotonic() - t0
    first.join(5)
    assert fn.most == instances
    assert fn.calls == [["first", "shared"], ["second"]]   # "shared" is running in the first batch: not resent
    # One instance: the second batch starts after the first (~0.2 s left) and runs its own 0.2 s.
    assert (waited > 0.3) if instances == 1 else (waited < 0.35)
    assert not b._where


def test_max_wait_holds_the_first_request_for_others() -> None:
    fn = SlowUpper(delay=0.0)
    b = MicroBatcher(fn, max_batch=64, max_wait_s=0.3)
    out = run_concurrently(b, [["a"], ["b"], ["c"]])
    assert out == [["A"], ["B"], ["C"]]
    assert len(fn.calls) == 1 and sorted(fn.calls[0]) == ["a", "b", "c"]


def test_an_error_reaches_every_request_of_its_batch_and_the_batcher_goes_on() -> None:
    calls = []

    def flaky(texts: list[str]) -> list[str]:
        calls.append(texts)
        if "bad" in texts:
            raise ValueError("model failed")
        return texts

    b = MicroBatcher(flaky, max_batch=64, max_wait_s=0.3)
    errors: list = []

    def go(texts: list[str]) -> None:
        try:
            b.run(texts)
        except ValueError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=go, args=(t,)) for t in (["bad"], ["ok"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert errors == ["model failed", "model failed"]
    assert b.run(["fine"]) == ["fine"]


def test_a_wrong_row_count_is_an_error_not_a_misaligned_answer() -> None:
    b = MicroBatcher(lambda texts: texts[:-1], max_batch=8)
    with pytest.raises(RuntimeError, match="1 rows for 2 texts"):
        b.run(["a", "b"])


def test_idle_worker_exits_and_restarts_on_demand() -> None:
    b = MicroBatcher(lambda texts: texts, max_batch=8, idle_s=0.05)
    assert b.run(["a"]) == ["a"]
    deadline = time.monotonic() + 5
    while any(t.name == "microbatch-encode" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "microbatch-encode" for t in threading.enumerate())
    assert b.run(["b"]) == ["b"]


def test_close_fails_waiting_and_new_requests() -> None:
    fn = SlowUpper(delay=0.3)
    b = MicroBatcher(fn, max_batch=1)
    first = threading.Thread(target=b.run, args=(["running"],))
    first.start()
    assert fn.started.wait(5)
    errors: list = []

    def waiting() -> None:
        try:
            b.run(["queued"])
        except BatcherClosed as exc:
            errors.append(exc)

    t = threading.Thread(target=waiting)
    t.start()
    time.sleep(0.05)
    b.close()
    t.join(5)
    first.join(5)
    assert len(errors) == 1
    with pytest.raises(BatcherClosed):
        b.run(["late"])


@pytest.mark.parametrize("kwargs, message", [({"max_batch": 0}, "max_batch"), ({"max_wait_s": -1}, "max_wait_s"),
                                             ({"idle_s": 0}, "idle_s"), ({"instances": 0}, "instances")])
def test_bad_parameters_are_named(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        MicroBatcher(lambda t: t, **kwargs)


def test_store_with_batching_encodes_like_the_encoder(artifacts) -> None:
    """Through the real store and encoder: concurrent cache misses come back as the encoder's vectors."""
    from recsys.embedding_store import ITEM_MAX_LENGTH, EmbeddingStore

    src = artifacts.store
    store = EmbeddingStore(src.encoder, src.item_vectors)
    store.enable_batching(max_batch=64, max_wait_s=0.05)
    texts = [[f"new film {i}-{j}. Genres: Drama" for j in range(3)] for i in range(6)]
    out: list = [None] * len(texts)

    def go(i: int) -> None:
        out[i] = store.item_vectors_for(np.full(3, -1), texts[i])

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    want = src.encoder.encode([t for job in texts for t in job], max_length=ITEM_MAX_LENGTH)
    np.testing.assert_allclose(np.concatenate(out), want, atol=1e-5)
    batcher = store.batchers["item_texts"]
    assert batcher.requests == 6 and batcher.batches < 6
