"""The range-ANS coder: exact round trips, code lengths at the information content, and refusals."""

import math

import numpy as np
import pytest

from minivae.ans import Message, cumulative, quantize


def random_source(rng, n, precision):
    dists = [quantize(rng.random(int(rng.integers(2, 50))) ** 3, precision) for _ in range(n)]
    symbols = [int(rng.choice(len(f), p=f / f.sum())) for f in dists]
    return dists, symbols


@pytest.mark.parametrize("precision", [8, 16, 24, 32])
def test_symbols_come_back_in_reverse_and_the_message_as_it_started(precision, rng):
    dists, symbols = random_source(rng, 3000, precision)
    start = [int(w) for w in rng.integers(0, 1 << 32, 5)]
    message = Message(start)
    info = 0.0
    for f, s in zip(dists, symbols):
        message.push(int(cumulative(f)[s]), int(f[s]), precision)
        info += -math.log2(f[s] / 2**precision)
    # the length is the information content plus at most the head and one partly filled word
    assert info <= message.bits() - 32 * 5 <= info + 64 + 32
    back = Message.from_bytes(message.to_bytes())
    assert [back.pop(precision, cumulative(f)) for f in reversed(dists)][::-1] == symbols
    assert back.tail == start and back.head == 1 << 32


def test_quantize_keeps_every_symbol_and_sums_to_the_total(rng):
    for precision in (4, 12, 24):
        probs = rng.random((50, 9)) ** 6
        probs[0] = [1, 0, 0, 0, 0, 0, 0, 0, 0]  # impossible symbols still get a slot
        freqs = quantize(probs, precision)
        assert (freqs >= 1).all() and (freqs.sum(axis=1) == 2**precision).all()
        assert np.array_equal(freqs, quantize(probs.copy(), precision))
    halves = quantize(np.array([0.5, 0.25, 0.25]), 16)
    assert np.abs(halves - np.array([2**15, 2**14, 2**14])).max() <= 3  # proportional, up to the reserved slots


def test_what_cannot_be_coded_is_refused():
    with pytest.raises(ValueError, match="precision"):
        quantize(np.ones(20), 4)  # 20 symbols do not fit in 16 slots
    with pytest.raises(ValueError, match="finite"):
        quantize(np.array([0.5, np.nan]), 8)
    with pytest.raises(ValueError, match="initial bits"):
        Message().pop(16, cumulative(quantize(np.ones(3), 16)))
    for data in (b"", b"abc", np.array([1, 0], dtype="<u4").tobytes()):
        with pytest.raises(ValueError):
            Message.from_bytes(data)


@pytest.mark.parametrize("start, freq, precision", [(0, 0, 16), (-1, 1, 16), (65535, 2, 16), (0, 1, 0), (0, 1, 33),
                                                    (0.5, 1, 16)])
def test_a_slot_outside_the_range_is_refused_and_the_message_unchanged(start, freq, precision):
    message = Message([7])
    message.push(3, 5, 16)
    before = (message.head, list(message.tail))
    with pytest.raises(ValueError, match="a symbol's slot"):
        message.push(start, freq, precision)
    assert (message.head, message.tail) == before
