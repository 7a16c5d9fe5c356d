"""Cutting an image into EBS blocks and writing them: the cutter against an independent
slicing of the same bytes (property tests), the writer's retries, refusals, stop and
LINEAR checksum (computed here with hashlib, not with amibundle's function)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amibundle.ebs.blocks import BLOCK_SIZE, BlockCutter, BlockWriter, RetryPolicy
from amibundle.errors import IntegrityError

B = BLOCK_SIZE
NO_WAIT = RetryPolicy(rounds=3, base=0.0)


class Blocks(dict[int, bytes]):
    """A block sink that keeps what it is given (and refuses a block twice)."""

    def put(self, index: int, block: bytes) -> None:
        assert index not in self, f"block {index} handed on twice"
        assert len(block) == B
        self[index] = block


def expected_blocks(size: int, pieces: list[tuple[int, bytes]], shift: int) -> dict[int, bytes]:
    """The disk's non-zero blocks, cut here from one bytearray of the whole disk."""
    disk = bytearray(shift + size + B)
    for offset, data in pieces:
        disk[shift + offset : shift + offset + len(data)] = data
    return {
        i: bytes(disk[i * B : (i + 1) * B])
        for i in range(len(disk) // B)
        if any(disk[i * B : (i + 1) * B])
    }


@st.composite
def images(draw: st.DrawFn) -> tuple[int, list[tuple[int, bytes]], list[int]]:
    """An image of up to 5 blocks as ordered, disjoint data pieces (some of them zeros),
    and how the reader splits them into writes."""
    size = draw(st.integers(1, 5 * B))
    cuts = sorted(draw(st.sets(st.integers(0, size), max_size=10)) | {0, size})
    pieces = []
    for start, end in itertools.pairwise(cuts):
        kind = draw(st.sampled_from(["hole", "data", "zeros"]))
        if kind != "hole" and end > start:
            fill = 0 if kind == "zeros" else draw(st.integers(1, 255))
            pieces.append((start, bytes([fill]) * (end - start)))
    splits = draw(st.lists(st.integers(1, 3 * B), min_size=1, max_size=4))
    return size, pieces, splits


@settings(max_examples=60, deadline=None)
@given(images(), st.sampled_from([0, 512, B, 2 * B, 3 * B + 4096]))
def test_the_cutter_hands_on_exactly_the_non_zero_blocks(
    image: tuple[int, list[tuple[int, bytes]], list[int]], shift: int
) -> None:
    size, pieces, splits = image
    sink = Blocks()
    cutter = BlockCutter(sink, shift=shift)
    turn = 0
    for offset, data in pieces:
        view = memoryview(bytearray(data))  # a reused buffer, as the readers hand on
        while view:
            step = splits[turn % len(splits)]
            turn += 1
            cutter.write(offset, view[:step])
            view[: min(step, len(view))] = b"\xee" * min(step, len(view))  # reused at once
            offset, view = offset + step, view[step:]
    cutter.finish(size)
    assert sink == expected_blocks(size, pieces, shift)
    assert cutter.blocks == len(sink)


def test_a_dense_block_in_one_piece_is_handed_on_as_is() -> None:
    sink = Blocks()
    cutter = BlockCutter(sink)
    data = bytes(range(256)) * (2 * B // 256)
    cutter.write(0, memoryview(data))
    cutter.finish(len(data))
    assert sink == {0: data[:B], 1: data[B:]}


def test_data_out_of_order_is_refused() -> None:
    cutter = BlockCutter(Blocks())
    cutter.write(B, memoryview(b"x" * 10))
    with pytest.raises(IntegrityError, match="comes after later data"):
        cutter.write(5, memoryview(b"y"))


# --- the writer -------------------------------------------------------------------------


class FakeEbs:
    """PutSnapshotBlock as a function: checks each checksum, fails as told."""

    def __init__(self, fail: dict[int, list[BaseException]] | None = None, delay: float = 0.0):
        self.fail = fail or {}
        self.delay = delay
        self.stored: dict[int, bytes] = {}
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def put(self, index: int, data: bytes, checksum: str) -> None:
        with self.lock:
            self.calls.append(index)
            failures = self.fail.get(index)
            failure = failures.pop(0) if failures else None
        if self.delay:
            time.sleep(self.delay)
        if failure is not None:
            raise failure
        assert checksum == base64.b64encode(hashlib.sha256(data).digest()).decode()
        with self.lock:
            self.stored[index] = data


class Retryable(Exception):
    pass


class Refused(Exception):
    pass


def writer_for(ebs: FakeEbs, jobs: int = 3, retry: RetryPolicy = NO_WAIT) -> BlockWriter:
    return BlockWriter(
        ebs.put, jobs=jobs, is_retryable=lambda e: isinstance(e, Retryable), retry=retry
    )


def block(n: int) -> bytes:
    return bytes([n % 251 + 1]) * B


def linear(blocks: dict[int, bytes]) -> str:
    digests = b"".join(hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))
    return base64.b64encode(hashlib.sha256(digests).digest()).decode()


@pytest.mark.parametrize("order", [[0, 1, 2, 7, 9, 40], [30, 31, 2, 0, 99, 5]])
def test_every_block_is_written_and_the_aggregate_is_in_index_order(order: list[int]) -> None:
    ebs = FakeEbs()
    writer = writer_for(ebs)
    for index in order:
        writer.put(index, block(index))
    written = writer.finish()
    expected = {i: block(i) for i in order}
    assert ebs.stored == expected
    assert (written.count, written.bytes_sent, written.retried) == (len(order), len(order) * B, 0)
    assert written.checksum == linear(expected)


def test_retryable_failures_are_sent_again() -> None:
    ebs = FakeEbs({1: [Retryable(), Retryable()], 4: [Retryable()]})
    writer = writer_for(ebs)
    for index in range(6):
        writer.put(index, block(index))
    written = writer.finish()
    assert written.retried == 3 and written.count == 6
    assert sorted(ebs.calls) == [0, 1, 1, 1, 2, 3, 4, 4, 5]
    assert written.checksum == linear({i: block(i) for i in range(6)})


def test_a_block_that_keeps_failing_fails_the_write_after_its_rounds() -> None:
    ebs = FakeEbs({2: [Retryable()] * 10})
    writer = writer_for(ebs, retry=RetryPolicy(rounds=2, base=0.0))
    with pytest.raises(Retryable):
        for index in range(50):
            writer.put(index, block(index))
        writer.finish()
    assert ebs.calls.count(2) == 3  # the first try and two rounds


def test_a_refusal_stops_everything_at_once() -> None:
    ebs = FakeEbs({0: [Refused("no")]}, delay=0.01)
    writer = writer_for(ebs, jobs=2)
    with pytest.raises(Refused, match="no"):
        for index in range(200):
            writer.put(index, block(index))
        writer.finish()
    assert ebs.calls.count(0) == 1  # never retried
    assert len(ebs.calls) < 20  # the writers stopped; the rest was never sent


def test_abort_ends_a_put_that_waits() -> None:
    """A put waiting for room in the queue (the network is slow) returns as soon as the
    writer is aborted: this is what lets Ctrl-C end a stream at once."""
    ebs = FakeEbs(delay=5.0)
    writer = writer_for(ebs, jobs=1)
    raised: list[BaseException] = []

    def fill() -> None:
        try:
            for index in range(10):
                writer.put(index, block(index))
        except BaseException as err:
            raised.append(err)

    thread = threading.Thread(target=fill)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()  # blocked: one block sent, one queued, the third waits
    started = time.monotonic()
    writer.abort()
    thread.join(2)
    assert not thread.is_alive() and time.monotonic() - started < 0.5
    assert raised and len(ebs.calls) == 1


def test_a_block_must_be_whole() -> None:
    writer = writer_for(FakeEbs())
    with pytest.raises(ValueError, match="524288"):
        writer.put(0, b"x" * 100)
    writer.abort()


def test_the_backoff_is_full_jitter_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy(rounds=9, base=1.0, cap=20.0)
    seen: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        seen.append((low, high))
        return high

    import amibundle.ebs.blocks as blocks_module

    monkeypatch.setattr(blocks_module.random, "uniform", uniform)
    assert [policy.delay(n) for n in range(7)] == [1, 2, 4, 8, 16, 20, 20]
    assert all(low == 0 for low, _ in seen)
