"""HAAQI's threshold noise: fast independent substreams, or numpy's legacy draws.

:func:`band_noise` gives the standard-normal draws for band k of the
reference and of the processed signals, n per band (n = samples after
alignment), in one of two modes:

``"fast"`` (the default)
    Independent substreams: band k of the reference draws from numpy's
    ``SFC64(SeedSequence(seed % 2**32, spawn_key=(0, k)))`` bit generator and
    band k of a processed signal from ``spawn_key=(1, k)``; the 64-bit outputs
    (numpy's SFC64 stream, run here in numba) become normals by this module's
    own 256-layer ziggurat (:func:`ziggurat_tables`, :func:`_ziggurat_fill`),
    about 3x faster than ``Generator.standard_normal`` and the same on every
    platform (no libm). No band needs another band's draws, so nothing is
    skipped, and a processed signal gets the same draws alone or in a batch.
    The draws differ from pyclarity's, which changes HAAQI by about as much as
    re-running pyclarity without a seed (~1e-6; the noise is 10 dB below the
    auditory threshold).

``"numpy-legacy"``
    Exactly pyclarity's draws: pyclarity calls ``np.random.standard_normal``
    on numpy's global legacy state, 32*n draws for the reference and then
    32*n for the processed signal. The draws here come from
    :class:`GaussStream`, described below, which starts from
    ``np.random.RandomState(seed % 2**32)`` (= ``np.random.seed(seed)``) or from
    a given ``RandomState``'s current state.

Legacy stream details:

pyclarity adds Gaussian noise to the basilar-membrane signals with
``np.random.standard_normal`` from numpy's global state. The fast HAAQI draws
the same numbers from an explicit state instead: :class:`GaussStream` starts
from ``np.random.RandomState(seed).get_state()`` and then runs the same two
algorithms numpy's legacy generator runs, in numba:

* MT19937 words, two per double (53 bits: ``(a >> 5) * 2**26 + (b >> 6)``);
* the polar (Marsaglia) method, which returns ``f * x2`` and keeps ``f * x1``
  for the next call.

So ``GaussStream(seed).fill(out)`` equals ``np.random.seed(seed);
np.random.standard_normal(out.size)``, and successive calls continue the
stream as successive numpy calls would. :meth:`GaussStream.skip` advances the
stream without computing the values (no log or sqrt), which lets two streams
read the reference block and the processed block of the same draw sequence.
"""

from __future__ import annotations

import decimal
import functools
import math

import numpy as np
from numba import njit

from benchmark.haaqi.fast.vmath import _bits_f64, _f64_bits, vexp, vlog

_N = 624
_M = 397


@njit(cache=True)
def _reload(key):
    """Twist the 624-word MT19937 state in place (``key`` holds uint32 values)."""
    for i in range(_N - _M):
        y = (key[i] & 0x80000000) | (key[i + 1] & 0x7FFFFFFF)
        key[i] = key[i + _M] ^ (y >> 1) ^ ((y & 1) * 0x9908B0DF)
    for i in range(_N - _M, _N - 1):
        y = (key[i] & 0x80000000) | (key[i + 1] & 0x7FFFFFFF)
        key[i] = key[i + _M - _N] ^ (y >> 1) ^ ((y & 1) * 0x9908B0DF)
    y = (key[_N - 1] & 0x80000000) | (key[0] & 0x7FFFFFFF)
    key[_N - 1] = key[_M - 1] ^ (y >> 1) ^ ((y & 1) * 0x9908B0DF)


@njit(cache=True, inline="always")
def _word(key, pos):
    """The tempered word at ``pos`` (twisting first when the block is used up)."""
    if pos >= _N:
        _reload(key)
        pos = 0
    y = key[pos]
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    return y ^ (y >> 18), pos + 1


@njit(cache=True, inline="always")
def _uniform_pair(key, pos):
    """Two doubles in [0, 1) from four words; returns (u1, u2, new position)."""
    a1, pos = _word(key, pos)
    b1, pos = _word(key, pos)
    a2, pos = _word(key, pos)
    b2, pos = _word(key, pos)
    u1 = ((a1 >> 5) * 67108864.0 + (b1 >> 6)) / 9007199254740992.0
    u2 = ((a2 >> 5) * 67108864.0 + (b2 >> 6)) / 9007199254740992.0
    return u1, u2, pos


@njit(cache=True)
def _run_generic(key, istate, fstate, out, count, compute):
    """Draw ``count`` standard normals (numpy's legacy polar method).

    Writes them to ``out`` when ``compute`` is true; otherwise only advances
    the state (the rejection test needs no log or sqrt). ``istate = [position,
    has_cached]``, ``fstate = [cached value]``.
    """
    pos = istate[0]
    has = istate[1]
    cached = fstate[0]
    i = 0
    if count > 0 and has:
        if compute:
            out[0] = cached
        has = 0
        i = 1
    while i < count:
        while True:
            u1, u2, pos = _uniform_pair(key, pos)
            x1 = 2.0 * u1 - 1.0
            x2 = 2.0 * u2 - 1.0
            r2 = x1 * x1 + x2 * x2
            if r2 < 1.0 and r2 != 0.0:
                break
        if compute or i + 1 == count:
            f = math.sqrt(-2.0 * math.log(r2) / r2)
            if compute:
                out[i] = f * x2
            if i + 1 < count:
                if compute:
                    out[i + 1] = f * x1
            else:
                cached = f * x1
                has = 1
        i += 2
    istate[0] = pos
    istate[1] = has
    fstate[0] = cached


@njit(cache=True)
def _run_blocks(key, istate, fstate, out, count, compute):
    """As :func:`_run_generic` for a word position that is a multiple of 4, a block at a time.

    Each 624-word block is tempered and turned into 156 candidate pairs in
    vectorisable loops; only the acceptance scan and the log/sqrt are scalar.
    """
    pos = istate[0]
    has = istate[1]
    cached = fstate[0]
    i = 0
    if count > 0 and has:
        if compute:
            out[0] = cached
        has = 0
        i = 1
    words = np.empty(_N, dtype=np.uint64)
    x1s = np.empty(_N // 4)
    x2s = np.empty(_N // 4)
    r2s = np.empty(_N // 4)
    acc = np.empty(_N // 4, dtype=np.int64)
    while i < count:
        if pos >= _N:
            _reload(key)
            pos = 0
        for j in range(_N):
            y = key[j]
            y ^= y >> 11
            y ^= (y << 7) & 0x9D2C5680
            y ^= (y << 15) & 0xEFC60000
            words[j] = y ^ (y >> 18)
        q0 = pos // 4
        for q in range(q0, _N // 4):
            w = 4 * q
            # words < 2**32: signed conversions are exact and fast
            a1 = np.int64(words[w] >> 5)
            b1 = np.int64(words[w + 1] >> 6)
            a2 = np.int64(words[w + 2] >> 5)
            b2 = np.int64(words[w + 3] >> 6)
            x1 = 2.0 * ((a1 * 67108864.0 + b1) / 9007199254740992.0) - 1.0
            x2 = 2.0 * ((a2 * 67108864.0 + b2) / 9007199254740992.0) - 1.0
            x1s[q] = x1
            x2s[q] = x2
            r2s[q] = x1 * x1 + x2 * x2
        if not compute:
            # skipping: whole blocks are only counted (vectorisable), unless the end is near
            n_block = 0
            for q in range(q0, _N // 4):
                n_block += (r2s[q] < 1.0) & (r2s[q] != 0.0)
            if i + 2 * n_block < count:
                i += 2 * n_block
                pos = _N
                continue
        # accepted pairs of this block, in order, up to the number still needed
        n_acc = 0
        stop = _N // 4
        for q in range(q0, _N // 4):
            r2 = r2s[q]
            if r2 < 1.0 and r2 != 0.0:
                acc[n_acc] = q
                n_acc += 1
                if i + 2 * n_acc >= count:
                    stop = q + 1
                    break
        pos = 4 * stop
        if compute:
            for t in range(n_acc):
                q = acc[t]
                f = math.sqrt(-2.0 * math.log(r2s[q]) / r2s[q])
                k = i + 2 * t
                out[k] = f * x2s[q]
                if k + 1 < count:
                    out[k + 1] = f * x1s[q]
        i += 2 * n_acc
        if i > count:   # odd count: the last pair's second value is kept for the next call
            q = acc[n_acc - 1]
            cached = math.sqrt(-2.0 * math.log(r2s[q]) / r2s[q]) * x1s[q]
            has = 1
    istate[0] = pos
    istate[1] = has
    fstate[0] = cached


def _run(key, istate, fstate, out, count, compute):
    if istate[0] % 4 == 0:
        _run_blocks(key, istate, fstate, out, count, compute)
    else:
        _run_generic(key, istate, fstate, out, count, compute)


class GaussStream:
    """A standard-normal stream equal to numpy's legacy global stream after ``np.random.seed(seed)``.

    Attributes:
        key: uint64 array, shape (624,), the MT19937 words (32-bit values).
        istate: int64 array, shape (2,), [position, has_cached].
        fstate: float64 array, shape (1,), the cached draw.
    """

    def __init__(self, seed: int | np.random.RandomState):
        """Start at ``np.random.seed(seed)`` or, given a RandomState, at its current state (not advanced)."""
        rs = seed if isinstance(seed, np.random.RandomState) else np.random.RandomState(seed % 2**32)
        _, key, pos, has_gauss, cached = rs.get_state()
        self.key = key.astype(np.uint64)
        self.istate = np.array([pos, has_gauss], dtype=np.int64)
        self.fstate = np.array([cached], dtype=np.float64)

    def copy(self) -> "GaussStream":
        other = object.__new__(GaussStream)
        other.key = self.key.copy()
        other.istate = self.istate.copy()
        other.fstate = self.fstate.copy()
        return other

    def fill(self, out: np.ndarray) -> np.ndarray:
        """Overwrite the float64 array ``out`` (any shape, C order) with the next draws."""
        flat = out.reshape(-1)
        _run(self.key, self.istate, self.fstate, flat, flat.size, True)
        return out

    def skip(self, count: int) -> None:
        """Advance by ``count`` draws."""
        _run(self.key, self.istate, self.fstate, np.empty(0), int(count), False)


NOISE_MODES = ("fast", "numpy-legacy")


_U64 = np.uint64
_ZIG_R = 3.6541528853610088          # start of the tail (256 layers, Marsaglia & Tsang 2000)
_ZIG_V = 0.00492867323399            # area of each layer


@functools.cache
def ziggurat_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tables of a 256-layer ziggurat for exp(-x^2/2), x >= 0.

    Layer i (0..255) has width x_i and spans heights f(x_i)..f(x_{i+1}), with
    x_1 = r, x_{i+1} = f^-1(f(x_i) + v / x_i), x_256 = 0 (f(x_256) = 1) and
    the base layer's virtual width x_0 = v / f(r) (rectangle plus tail).
    Computed with 40-digit decimals and rounded once to float64, so the
    tables (and the draws) do not depend on the platform's libm.

    Returns:
        (w, k, f): w[i] = x_i / 2**52 (scales a 52-bit integer to [0, x_i)),
        k[i] = floor(x_{i+1} / x_i * 2**52) (below it a draw lies in the part of
        the layer under the curve), f[i] = f(x_i) for i = 0..256.
    """
    ctx = decimal.Context(prec=40)
    r, v = decimal.Decimal(repr(_ZIG_R)), decimal.Decimal(repr(_ZIG_V))

    def f(x):
        return ctx.exp(ctx.minus(ctx.divide(ctx.multiply(x, x), 2)))

    x = [ctx.divide(v, f(r)), r]
    for i in range(1, 255):
        y = ctx.add(ctx.divide(v, x[i]), f(x[i]))
        x.append(ctx.sqrt(ctx.multiply(-2, ctx.ln(y))))
    x.append(decimal.Decimal(0))
    two52 = decimal.Decimal(2) ** 52
    w = np.array([float(ctx.divide(xi, two52)) for xi in x[:256]])
    k = np.array([int(ctx.multiply(ctx.divide(x[i + 1], x[i]), two52)) for i in range(256)], dtype=np.uint64)
    fx = np.array([float(f(xi)) for xi in x[:256]] + [1.0])
    return w, k, fx


@njit(cache=True, inline="always")
def _sfc64(a, b, c, w):
    """One step of the SFC64 generator: (output, new a, b, c, counter) (numpy's SFC64 state layout)."""
    out = a + b + w
    return out, b ^ (b >> _U64(11)), c + (c << _U64(3)), ((c << _U64(24)) | (c >> _U64(40))) + out, w + _U64(1)


@njit(cache=True, inline="always")
def _unit_open(bits):
    """A uniform double in (0, 1] from the top 53 bits."""
    return float((bits >> _U64(11)) + _U64(1)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _ziggurat_retry(bits, state, w, k, fx):
    """The rare rest of a draw whose first output ``bits`` fell outside a layer's inner part.

    Runs the wedge test (or the tail beyond r for layer 0) and draws again
    until accepted. ``state`` ([a, b, c, counter]) is advanced. Returns
    (|x|, the output whose bit 8 is the sign).
    """
    r = w[1] * 4503599627370496.0
    sa, sb, sc, sw = state[0], state[1], state[2], state[3]
    while True:
        layer = bits & _U64(0xFF)
        pos = bits >> _U64(12)
        x = float(np.int64(pos)) * w[layer]
        if pos < k[layer]:
            break
        if layer == 0:
            while True:          # tail beyond r (Marsaglia 1964)
                b1, sa, sb, sc, sw = _sfc64(sa, sb, sc, sw)
                b2, sa, sb, sc, sw = _sfc64(sa, sb, sc, sw)
                ta = -vlog(_unit_open(b1)) / r
                tb = -vlog(_unit_open(b2))
                if tb + tb > ta * ta:
                    break
            x = r + ta
            break
        b1, sa, sb, sc, sw = _sfc64(sa, sb, sc, sw)
        u = float(b1 >> _U64(11)) * (1.0 / 9007199254740992.0)
        if fx[layer] + u * (fx[layer + 1] - fx[layer]) < vexp(-0.5 * x * x):
            break
        bits, sa, sb, sc, sw = _sfc64(sa, sb, sc, sw)
    state[0], state[1], state[2], state[3] = sa, sb, sc, sw
    return x, bits


@njit(cache=True)
def _ziggurat_fill(state, w, k, fx, out):
    """Standard normal draws into ``out``: 256-layer ziggurat on SFC64 outputs.

    Per draw one 64-bit output gives the layer (bits 0-7), the sign (bit 8)
    and a 52-bit position (bits 12-63); about 1 % of draws need more outputs
    (:func:`_ziggurat_retry`: the wedge test against exp(-x^2/2), or
    Marsaglia's tail method beyond r). No fastmath, and
    :func:`.vmath.vexp`/:func:`.vmath.vlog` instead of libm, so the values are
    the same on every platform. ``state`` (the generator's [a, b, c,
    counter]) is advanced.
    """
    sa, sb, sc, sw = state[0], state[1], state[2], state[3]
    for i in range(out.size):
        bits, sa, sb, sc, sw = _sfc64(sa, sb, sc, sw)
        layer = bits & _U64(0xFF)
        pos = bits >> _U64(12)
        x = float(np.int64(pos)) * w[layer]
        if pos >= k[layer]:
            state[0], state[1], state[2], state[3] = sa, sb, sc, sw
            x, bits = _ziggurat_retry(bits, state, w, k, fx)
            sa, sb, sc, sw = state[0], state[1], state[2], state[3]
        out[i] = _bits_f64(_f64_bits(x) ^ np.int64((bits >> _U64(8)) << _U64(63)))   # sign, branch-free
    state[0], state[1], state[2], state[3] = sa, sb, sc, sw


class _FastDraws:
    def __init__(self, seed: int, n: int):
        self.entropy = int(seed) % 2**32
        self.n = n
        self.tables = ziggurat_tables()

    def _fill(self, side: int, band: int, out: np.ndarray) -> np.ndarray:
        ss = np.random.SeedSequence(self.entropy, spawn_key=(side, band))
        state = np.array(np.random.SFC64(ss).state["state"]["state"], dtype=np.uint64)   # [a, b, c, counter]
        _ziggurat_fill(state, *self.tables, out)
        return out

    def reference(self, band: int, out: np.ndarray) -> np.ndarray:
        return self._fill(0, band, out)

    def processed(self, band: int, out: np.ndarray) -> np.ndarray:
        return self._fill(1, band, out)

    def skip_processed(self, band: int) -> None:
        """Leave out a band's processed draws (each band has its own stream: nothing to advance)."""


class _LegacyDraws:
    """Bands in order: reference band k = draws k*n.., processed band k = draws (32+k)*n.."""

    def __init__(self, seed, n: int, n_bands: int = 32):
        self.ref = GaussStream(seed)
        self.proc = GaussStream(seed)
        self.proc.skip(n_bands * n)
        self.n = n
        self.next_ref = self.next_proc = 0

    def reference(self, band: int, out: np.ndarray) -> np.ndarray:
        assert band == self.next_ref, "legacy draws must be taken band by band"
        self.next_ref += 1
        return self.ref.fill(out)

    def processed(self, band: int, out: np.ndarray) -> np.ndarray:
        assert band == self.next_proc, "legacy draws must be taken band by band"
        self.next_proc += 1
        return self.proc.fill(out)

    def skip_processed(self, band: int) -> None:
        """Advance past a band's processed draws without storing them."""
        assert band == self.next_proc, "legacy draws must be taken band by band"
        self.next_proc += 1
        self.proc.skip(self.n)


def band_noise(seed, n: int, mode: str = "fast"):
    """Draw source with ``reference(band, out)`` and ``processed(band, out)`` (fill ``out``, shape (n,)).

    Args:
        seed: int (any; used modulo 2**32), or for ``"numpy-legacy"`` also a
            ``np.random.RandomState`` whose current state is copied, not advanced.
        n: draws per band.
        mode: ``"fast"`` or ``"numpy-legacy"`` (see the module docstring).
    """
    if mode == "numpy-legacy":
        return _LegacyDraws(seed, n)
    if mode != "fast":
        raise ValueError(f"noise must be one of {NOISE_MODES}, got {mode!r}")
    if isinstance(seed, np.random.RandomState):
        raise TypeError("a RandomState seed reproduces numpy's legacy stream: use noise='numpy-legacy'")
    return _FastDraws(seed, n)
