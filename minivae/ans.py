"""Asymmetric numeral systems (range ANS), written out: a lossless coder whose code length is -log2 of the probability.

An ANS message is a stack. Pushing a symbol of probability ``freq / 2^prec``
grows the message by about ``-log2(freq / 2^prec)`` bits; popping it (with the
same distribution) shrinks it by as much and returns the symbol. Because it is
a stack, the last symbol pushed is the first popped, and *popping* from a
message that holds other data decodes a symbol from those bits: the trick
bits-back coding rests on (:mod:`minivae.bitsback`).

The state is a ``head`` integer in ``[2^32, 2^64)`` and a ``tail`` list of
32-bit words (Duda 2013; the layout of Townsend, Bird & Barber 2019). Python
integers keep every step exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

HEAD_MIN = 1 << 32  # the head stays in [2^32, 2^64)
WORD = 32
MAX_PRECISION = 32


class Message:
    """An ANS stack: ``push`` and ``pop`` symbols given their quantised distribution.

    Parameters
    ----------
    tail : sequence of int, optional
        32-bit words to start from: the *initial bits* a bits-back coder pops
        before it has pushed anything. Decoding gives them back unchanged.
    """

    def __init__(self, tail: Iterable[int] = ()) -> None:
        self.head = HEAD_MIN
        self.tail = [int(w) for w in tail]
        if any(not 0 <= w < 1 << WORD for w in self.tail):
            raise ValueError("tail words must be integers in [0, 2^32)")

    def push(self, start: int, freq: int, precision: int) -> None:
        """Push a symbol occupying ``[start, start + freq)`` of ``[0, 2^precision)``."""
        if not (isinstance(precision, int) and 1 <= precision <= MAX_PRECISION and isinstance(start, int)
                and isinstance(freq, int) and 0 < freq and 0 <= start and start + freq <= 1 << precision):
            raise ValueError(f"a symbol's slot [start, start + freq) must be whole numbers inside [0, 2^precision) "
                             f"with freq >= 1 and precision in 1..{MAX_PRECISION}; got start={start!r}, "
                             f"freq={freq!r}, precision={precision!r}")
        if self.head >= freq << (2 * WORD - precision):  # renormalise: the head would outgrow 64 bits
            self.tail.append(self.head & ((1 << WORD) - 1))
            self.head >>= WORD
        # x -> (x // freq) 2^prec + x mod freq + start: grows x by the factor 2^prec / freq
        self.head = ((self.head // freq) << precision) + self.head % freq + start

    def pop(self, precision: int, starts: np.ndarray) -> int:
        """Pop a symbol; ``starts`` is the cumulative frequency table (length symbols + 1, ending in 2^precision)."""
        cf = self.head & ((1 << precision) - 1)  # the slot the head points at
        symbol = int(np.searchsorted(starts, cf, side="right")) - 1
        start, freq = int(starts[symbol]), int(starts[symbol + 1] - starts[symbol])
        self.head = freq * (self.head >> precision) + cf - start  # the inverse of push
        if self.head < HEAD_MIN:
            if not self.tail:
                raise ValueError("the message ran out of bits: it was not made by this coder, or holds fewer "
                                 "symbols than are being decoded; a bits-back coder needs initial bits")
            self.head = (self.head << WORD) | self.tail.pop()
        return symbol

    def bits(self) -> int:
        """The message's length in bits when written out: the 64-bit head and every tail word."""
        return 2 * WORD + WORD * len(self.tail)

    def to_bytes(self) -> bytes:
        words = self.tail + [self.head & ((1 << WORD) - 1), self.head >> WORD]
        return np.asarray(words, dtype="<u4").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Message:
        if len(data) % 4 or len(data) < 8:
            raise ValueError(f"an ANS message is a whole number of 32-bit words, at least two; got {len(data)} bytes")
        words = np.frombuffer(data, dtype="<u4").astype(np.int64).tolist()
        message = cls(words[:-2])
        message.head = words[-2] | (words[-1] << WORD)
        if not HEAD_MIN <= message.head < 1 << 2 * WORD:
            raise ValueError("not an ANS message: its head is out of range")
        return message


def quantize(probs: Any, precision: int) -> np.ndarray:
    """Integer frequencies for a distribution: each at least 1, summing to ``2^precision``; shape like ``probs``.

    ``probs`` (..., S) need not be normalised. Each symbol keeps at least
    1 / 2^precision of the mass, so every symbol can be coded; the rest is
    shared in proportion to ``probs``, and the rounding remainder goes to the
    most probable symbol. The same floats always give the same frequencies,
    which the encoder and the decoder both rely on.
    """
    probs = np.asarray(probs, dtype=np.float64)
    S = probs.shape[-1]
    total = 1 << precision
    if not 1 <= precision <= MAX_PRECISION or S > total:
        raise ValueError(f"precision must be in 1..{MAX_PRECISION} with 2^precision >= the {S} symbols; got {precision}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    mass = probs / np.maximum(probs.sum(axis=-1, keepdims=True), 1e-300)
    freqs = 1 + np.floor(mass * (total - S)).astype(np.int64)
    short = total - freqs.sum(axis=-1)  # >= 0: what the floors left over
    np.put_along_axis(freqs, np.argmax(mass, axis=-1)[..., None],
                      np.take_along_axis(freqs, np.argmax(mass, axis=-1)[..., None], axis=-1) + short[..., None], axis=-1)
    return freqs


def cumulative(freqs: np.ndarray) -> np.ndarray:
    """The start of each symbol's slot, and the total at the end: ``[0, f0, f0 + f1, ..., 2^precision]``."""
    return np.concatenate([[0], np.cumsum(freqs)])
