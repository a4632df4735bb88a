"""numba kernels for the E/I network (compiled once, cached on disk with ``cache=True``).

Shared pieces: the activation functions and their derivatives, a counter-based standard-normal
generator, and the one Euler forward (:func:`forward_kernel`) that training and simulation
both integrate the network with. The backward-through-time kernels and their autograd wrappers
live in :mod:`neurocl.sim.train_kernel`.

Every kernel uses ``error_model="numpy"``: with the default (Python) model numba guards each
float division with a ZeroDivisionError check, which stops LLVM from vectorising the loops.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core.extending import intrinsic, overload

ACTIVATION_CODES = {"rectify": 0, "tanh": 1, "softplus": 2, "sigmoid": 3}


# ---------------------------------------------------------------- activations
@njit(cache=True, inline="always", error_model="numpy")
def _act(v, code):
    if code == 0:
        return v if v > 0 else v * 0
    if code == 1:
        return np.tanh(v)
    if code == 2:
        # torch's softplus switches to the identity above 20 for accuracy.
        return v if v > 20 else np.log1p(np.exp(v))
    return 1 / (1 + np.exp(-v))


@njit(cache=True, inline="always", error_model="numpy")
def _dact(x, r, code):
    """f'(x) given x and r = f(x), written as torch's backward formulas are (so the two agree)."""
    if code == 0:
        return (x * 0 + 1) if r > 0 else x * 0
    if code == 1:
        return 1 - r * r
    if code == 2:
        if x > 20:
            return x * 0 + 1
        z = np.exp(x)
        return z / (z + 1)
    return (1 - r) * r


# Row versions: the activation is chosen once per row, outside the loop over units, so that each
# loop is branch-free and LLVM vectorises it (with a per-element branch on the code it does not).
@njit(cache=True, inline="always", error_model="numpy")
def act_row(x, r, code):
    """r[i] = f(x[i])."""
    if code == 0:
        for i in range(x.size):
            v = x[i]
            r[i] = v if v > 0 else v * 0
    elif code == 1:
        for i in range(x.size):
            r[i] = np.tanh(x[i])
    elif code == 2:
        for i in range(x.size):
            v = x[i]
            r[i] = v if v > 20 else np.log1p(np.exp(v))
    else:
        for i in range(x.size):
            r[i] = 1 / (1 + np.exp(-x[i]))


@njit(cache=True, inline="always", error_model="numpy")
def dact_row(x, r, d, code):
    """d[i] = f'(x[i]) from x and r = f(x)."""
    if code == 0:
        for i in range(x.size):
            d[i] = 1 if r[i] > 0 else 0
    elif code == 1:
        for i in range(x.size):
            d[i] = 1 - r[i] * r[i]
    elif code == 2:
        for i in range(x.size):
            d[i] = _dact(x[i], r[i], 2)
    else:
        for i in range(x.size):
            d[i] = (1 - r[i]) * r[i]


# ---------------------------------------------------------------- random numbers
# Noise generated inside the kernels: a counter-based generator, so that the n-th normal of a
# stream is a pure function of (key, n). Any batch chunk on any thread can therefore draw its
# own slice, the result does not depend on the number of threads, and
# :func:`standard_normal` reproduces exactly what a kernel used. SplitMix64 (Steele, Lea &
# Flood 2014) gives the 64-bit words; Box-Muller turns pairs of words into pairs of normals.
# log, sin and cos are polynomials (accurate to about 1 ulp) rather than libm calls because LLVM
# cannot vectorise libm calls; vectorised, a float64 normal costs about 1.5 ns, float32 0.5 ns.

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_ONE = np.uint64(1)
_TWO = np.uint64(2)
_LN2 = math.log(2.0)
_SQRT2 = math.sqrt(2.0)


def _bitcast(to_type, from_type, to_ir):
    """A jitted reinterpretation of a value's bits as another type of the same width."""

    @intrinsic
    def cast(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], to_ir)

        return to_type(from_type), codegen

    return cast


_f64_bits = _bitcast(types.uint64, types.float64, ir.IntType(64))
_bits_f64 = _bitcast(types.float64, types.uint64, ir.DoubleType())


@njit(cache=True, inline="always", error_model="numpy")
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always", error_model="numpy")
def _log_unit(w):
    """log(u) for u = (top 53 bits of w + 1) / 2^53, a uniform on (0, 1]."""
    u = ((w >> np.uint64(11)) + _ONE) * (1.0 / 9007199254740992.0)
    bits = _f64_bits(u)
    e = np.int64(bits >> np.uint64(52)) - 1023
    m = _bits_f64((bits & np.uint64(0x000FFFFFFFFFFFFF)) | np.uint64(0x3FF0000000000000))
    # m in [sqrt(1/2), sqrt(2)) keeps |s| <= 0.172, so 11 terms of 2 atanh(s) reach 1 ulp.
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    s = (m - 1.0) / (m + 1.0)
    s2 = s * s
    p = 1.0 / 21
    p = p * s2 + 1.0 / 19
    p = p * s2 + 1.0 / 17
    p = p * s2 + 1.0 / 15
    p = p * s2 + 1.0 / 13
    p = p * s2 + 1.0 / 11
    p = p * s2 + 1.0 / 9
    p = p * s2 + 1.0 / 7
    p = p * s2 + 1.0 / 5
    p = p * s2 + 1.0 / 3
    p = p * s2 + 1.0
    return e * _LN2 + 2.0 * s * p


@njit(cache=True, inline="always", error_model="numpy")
def _sin_cos_octant(phi):
    """sin and cos for |phi| <= pi/4 (Taylor series to 1 ulp)."""
    p2 = phi * phi
    sn = -1.0 / 1307674368000.0
    sn = sn * p2 + 1.0 / 6227020800.0
    sn = sn * p2 - 1.0 / 39916800.0
    sn = sn * p2 + 1.0 / 362880.0
    sn = sn * p2 - 1.0 / 5040.0
    sn = sn * p2 + 1.0 / 120.0
    sn = sn * p2 - 1.0 / 6.0
    sn = (sn * p2 + 1.0) * phi
    cs = 1.0 / 20922789888000.0
    cs = cs * p2 - 1.0 / 87178291200.0
    cs = cs * p2 + 1.0 / 479001600.0
    cs = cs * p2 - 1.0 / 3628800.0
    cs = cs * p2 + 1.0 / 40320.0
    cs = cs * p2 - 1.0 / 720.0
    cs = cs * p2 + 1.0 / 24.0
    cs = cs * p2 - 0.5
    cs = cs * p2 + 1.0
    return sn, cs


@njit(cache=True, error_model="numpy")
def _normal_pairs(key, first_pair, cos_out, sin_out):
    """Pair k (counted from first_pair) of the stream: two independent standard normals."""
    base = np.uint64(first_pair)
    for k in range(cos_out.size):
        c = base + np.uint64(k)
        w1 = _mix(key + (c * _TWO + _ONE) * _GAMMA)
        w2 = _mix(key + (c * _TWO + _TWO) * _GAMMA)
        radius = math.sqrt(-2.0 * _log_unit(w1))
        # Angle: the top two bits pick a quadrant, the low 54 bits a uniform offset in it.
        frac = (w2 & np.uint64(0x003FFFFFFFFFFFFF)) * (1.0 / 18014398509481984.0)
        sn, cs = _sin_cos_octant((frac - 0.5) * (math.pi / 2))
        q = w2 >> np.uint64(62)
        odd = (q & _ONE) != 0
        a = -sn if odd else cs
        b = cs if odd else sn
        if q >= _TWO:
            a, b = -a, -b
        cos_out[k] = radius * a
        sin_out[k] = radius * b


# float32 models draw float32 normals, about three times faster: one 64-bit word per pair
# (32 bits for the radius, 32 for the angle), float32 arithmetic and shorter polynomials.
# The radius uses u >= 2^-32, so |xi| <= 6.66 (float64: 2^-53, |xi| <= 8.57).
_f32_bits = _bitcast(types.uint32, types.float32, ir.IntType(32))
_bits_f32 = _bitcast(types.float32, types.uint32, ir.FloatType())


_F1 = np.float32(1.0)
_F_HALF = np.float32(0.5)
_F_M2 = np.float32(-2.0)
_F_LN2 = np.float32(_LN2)
_F_SQRT2 = np.float32(_SQRT2)
_F_2POW32 = np.float32(2.0**-32)
_F_2POW30 = np.float32(2.0**-30)
_F_QUARTER_TURN = np.float32(math.pi / 2)
_F_LOG = tuple(np.float32(1.0 / k) for k in (9, 7, 5, 3))
_F_SIN = tuple(np.float32(c) for c in (1 / 362880, -1 / 5040, 1 / 120, -1 / 6))
_F_COS = tuple(np.float32(c) for c in (1 / 40320, -1 / 720, 1 / 24, -0.5))


@njit(cache=True, error_model="numpy")
def _normal_pairs32(key, first_pair, cos_out, sin_out):
    base = np.uint64(first_pair)
    l9, l7, l5, l3 = _F_LOG
    s9, s7, s5, s3 = _F_SIN
    c8, c6, c4, c2 = _F_COS
    for k in range(cos_out.size):
        w = _mix(key + (base + np.uint64(k) + _ONE) * _GAMMA)
        u = np.float32((w >> np.uint64(32)) + _ONE) * _F_2POW32
        bits = _f32_bits(u)
        e = np.float32(np.int32(bits >> np.uint32(23)) - np.int32(127))
        m = _bits_f32((bits & np.uint32(0x007FFFFF)) | np.uint32(0x3F800000))
        big = m > _F_SQRT2
        m = m * _F_HALF if big else m
        e = e + _F1 if big else e
        s = (m - _F1) / (m + _F1)
        s2 = s * s
        p = (((l9 * s2 + l7) * s2 + l5) * s2 + l3) * s2 + _F1
        radius = np.sqrt(_F_M2 * (e * _F_LN2 + (s + s) * p))
        lo = np.uint32(w & np.uint64(0xFFFFFFFF))
        frac = np.float32(lo & np.uint32(0x3FFFFFFF)) * _F_2POW30
        phi = (frac - _F_HALF) * _F_QUARTER_TURN
        p2 = phi * phi
        sn = ((((s9 * p2 + s7) * p2 + s5) * p2 + s3) * p2 + _F1) * phi
        cs = (((c8 * p2 + c6) * p2 + c4) * p2 + c2) * p2 + _F1
        q = lo >> np.uint32(30)
        odd = (q & np.uint32(1)) != 0
        a = -sn if odd else cs
        b = cs if odd else sn
        if q >= np.uint32(2):
            a, b = -a, -b
        cos_out[k] = radius * a
        sin_out[k] = radius * b


def _fill_normal_typed(out, key, start, cs, sn):  # pragma: no cover - replaced by the overload
    raise NotImplementedError


@overload(_fill_normal_typed, jit_options={"error_model": "numpy"})
def _fill_normal_typed_impl(out, key, start, cs, sn):
    # Compile-time choice of the generator from the output dtype.
    pairs = _normal_pairs32 if out.dtype == types.float32 else _normal_pairs

    def impl(out, key, start, cs, sn):
        m = out.size
        if m == 0:
            return
        p0 = start // 2
        npairs = (start + m + 1) // 2 - p0
        pairs(key, p0, cs[:npairs], sn[:npairs])
        # Normal 2p of the stream is cs[p], normal 2p + 1 is sn[p]. Written pair by pair (not
        # with a parity test per element) so that the loop vectorises: the generator itself
        # costs about 1 ns a normal, and the interleaving must not cost more.
        k = 0
        p = 0
        if start - 2 * p0 == 1:  # start is odd: the first normal is the sine of pair 0
            out[0] = sn[0]
            k = 1
            p = 1
        full = (m - k) // 2
        for i in range(full):
            out[k + 2 * i] = cs[p + i]
            out[k + 2 * i + 1] = sn[p + i]
        if (m - k) % 2 == 1:
            out[m - 1] = cs[p + full]

    return impl


def normal_scratch(out, m):  # pragma: no cover - replaced by the overload
    raise NotImplementedError


@overload(normal_scratch)
def _normal_scratch_impl(out, m):
    """Scratch for :func:`fill_normal_into` with up to m outputs of out's dtype."""
    work = np.float32 if out.dtype == types.float32 else np.float64

    def impl(out, m):
        return np.empty(m // 2 + 2, dtype=work), np.empty(m // 2 + 2, dtype=work)

    return impl


@njit(cache=True, error_model="numpy")
def fill_normal_into(out, key, start, cs, sn):
    """:func:`fill_normal` with scratch from ``normal_scratch(out, m)``, m >= out.size."""
    _fill_normal_typed(out, key, start, cs, sn)


@njit(cache=True, error_model="numpy")
def fill_normal(out, key, start):
    """out (1-D) = normals start, start+1, ... of the stream ``key``.

    float32 arrays get the float32 generator, other dtypes the float64 one (cast).
    """
    cs, sn = normal_scratch(out, out.size)
    _fill_normal_typed(out, key, start, cs, sn)


@njit(cache=True, error_model="numpy")
def stream_key(seed, stream):
    """A 64-bit key per (seed, stream): independent streams for input and recurrent noise."""
    return _mix(_mix(np.uint64(seed)) + np.uint64(stream) * _GAMMA)


@njit(cache=True, parallel=True, error_model="numpy")
def fill_normal_parallel(out, key):
    """out (any shape, C-contiguous) = normals 0 .. out.size - 1 of the stream, on all threads."""
    flat = out.reshape(-1)
    m = flat.size
    block = 1 << 16
    nblocks = (m + block - 1) // block
    for k in prange(nblocks):
        lo = k * block
        hi = min(m, lo + block)
        fill_normal(flat[lo:hi], key, lo)


def standard_normal(seed: int, shape, stream: int, dtype=np.float64) -> np.ndarray:
    """The normals a kernel draws for ``seed`` and ``stream`` (0: input, 1: recurrent noise)."""
    out = np.empty(tuple(shape), dtype=dtype)
    fill_normal_parallel(out, np.uint64(stream_key(np.uint64(seed % 2**64), stream)))
    return out


# ---------------------------------------------------------------- the Euler forward
# The one numba integration of the network: training keeps every state for backpropagation
# through time, simulation the states it is asked to record.
NOISE_OFF, NOISE_GIVEN, NOISE_KERNEL = 0, 1, 2


@njit(cache=True, error_model="numpy")
def _forward_chunk(u, xi_in, xi_rec, key_in, key_rec, noise_mode, in_scale, rec_scale, rectify,
                   w_big, w_in_t, w_out, w_out_t, b_rec, b_out, x0, alpha, keep, act, n_chunks,
                   record_x, record_r, off, us, xs, rs, zs, c):
    batch, steps, n_in = u.shape
    n = x0.shape[0]
    n_out = b_out.shape[0]
    k_dim = w_big.shape[0]
    m_dim = w_big.shape[1]
    # Training (off 1) forms the input drive of every step in one product before the loop and
    # the readout in one product after it; simulation folds both into the per-step product.
    pre = off == 1
    n_z = m_dim - n  # readout columns in the per-step product: n_out, or 0
    use_in = noise_mode != NOISE_OFF and in_scale != 0
    use_rec = noise_mode != NOISE_OFF and rec_scale[0] != 0  # sqrt(2 a_i) sigma_rec: all 0 or none
    b0 = c * batch // n_chunks
    b1 = (c + 1) * batch // n_chunks
    nb = b1 - b0
    rows = steps + 1
    h = np.empty((nb, k_dim), dtype=zs.dtype)  # [r_{t-1}, u~_t], or r_{t-1} when the drive is formed first
    out = np.empty((nb, m_dim), dtype=zs.dtype)
    x = np.empty((nb, n), dtype=zs.dtype)
    # Drawn noise comes in blocks of `block` steps per sequence (about 2 MB per chunk): one
    # generator call per block rather than per step amortises the call overhead at small N.
    block = max(1, min(steps, (1 << 19) // (max(nb, 1) * (n + n_in))))
    draw = noise_mode == NOISE_KERNEL
    in_per_step = use_in and not pre
    nin_blk = np.empty((nb if (draw and in_per_step) else 0, block * n_in), dtype=zs.dtype)
    nrec_blk = np.empty((nb if (draw and use_rec) else 0, block * n), dtype=zs.dtype)
    cs, sn = normal_scratch(nrec_blk, block * max(n, n_in))
    drive = np.empty((nb * rows if pre else 0, n), dtype=zs.dtype)
    if pre:
        # u~ of every step (row t: u~_{t+1}; a zero row T, so that U and G align row for row
        # in the weight gradients), then the drive W_in u~ of every step in one product.
        nin = np.empty(steps * n_in if (draw and use_in) else 0, dtype=zs.dtype)
        for b in range(nb):
            bb = b0 + b
            if draw and use_in:
                fill_normal(nin, key_in, bb * steps * n_in)
            for t in range(steps):
                if use_in and noise_mode == NOISE_GIVEN:
                    for k in range(n_in):
                        us[bb, t, k] = u[bb, t, k] + in_scale * xi_in[bb, t, k]
                elif use_in:
                    for k in range(n_in):
                        us[bb, t, k] = u[bb, t, k] + in_scale * nin[t * n_in + k]
                else:
                    for k in range(n_in):
                        us[bb, t, k] = u[bb, t, k]
                if rectify:
                    for k in range(n_in):
                        v = us[bb, t, k]
                        us[bb, t, k] = v if v > 0 else v * 0
            for k in range(n_in):
                us[bb, steps, k] = 0
        np.dot(us[b0:b1].reshape(nb * rows, n_in), w_in_t, drive)
    for b in range(nb):
        for i in range(n):
            x[b, i] = x0[i]
        act_row(x[b], h[b, :n], act)
        if pre:  # the initial state in row 0
            for i in range(n):
                xs[b0 + b, 0, i] = x[b, i]
                rs[b0 + b, 0, i] = h[b, i]
    for t in range(steps):
        j = t % block
        if draw and j == 0:
            m = min(block, steps - t)
            for b in range(nb):
                if in_per_step:
                    fill_normal_into(nin_blk[b, :m * n_in], key_in, ((b0 + b) * steps + t) * n_in, cs, sn)
                if use_rec:
                    fill_normal_into(nrec_blk[b, :m * n], key_rec, ((b0 + b) * steps + t) * n, cs, sn)
        # Direct 2-D indexing rather than row views: at small N a view per row and step costs
        # as much as the arithmetic.
        if not pre:
            for b in range(nb):
                bb = b0 + b
                if use_in and noise_mode == NOISE_GIVEN:
                    for k in range(n_in):
                        h[b, n + k] = u[bb, t, k] + in_scale * xi_in[bb, t, k]
                elif use_in:
                    for k in range(n_in):
                        h[b, n + k] = u[bb, t, k] + in_scale * nin_blk[b, j * n_in + k]
                else:
                    for k in range(n_in):
                        h[b, n + k] = u[bb, t, k]
                if rectify:
                    for k in range(n_in):
                        v = h[b, n + k]
                        h[b, n + k] = v if v > 0 else v * 0
        np.dot(h, w_big, out)
        for b in range(nb):
            bb = b0 + b
            if t > 0:
                for k in range(n_z):
                    zs[bb, t - 1, k] = out[b, n + k] + b_out[k]
            # out becomes W_rec r_{t-1} + W_in u~_t + b_rec, summed in the order each path has
            # always used (so that results stay bit for bit).
            if pre:
                row = b * rows + t
                for i in range(n):
                    out[b, i] = out[b, i] + (drive[row, i] + b_rec[i])
            else:
                for i in range(n):
                    out[b, i] = out[b, i] + b_rec[i]
            if use_rec and noise_mode == NOISE_GIVEN:
                for i in range(n):
                    x[b, i] = keep[i] * x[b, i] + alpha[i] * out[b, i] + rec_scale[i] * xi_rec[bb, t, i]
            elif use_rec:
                for i in range(n):
                    x[b, i] = keep[i] * x[b, i] + alpha[i] * out[b, i] + rec_scale[i] * nrec_blk[b, j * n + i]
            else:
                for i in range(n):
                    x[b, i] = keep[i] * x[b, i] + alpha[i] * out[b, i]
            act_row(x[b], h[b, :n], act)
            if record_x:
                for i in range(n):
                    xs[bb, t + off, i] = x[b, i]
            if record_r:
                for i in range(n):
                    rs[bb, t + off, i] = h[b, i]
    if n_z > 0:
        # The readout of the last step (the loop computed z_{t-1} at step t).
        for b in range(nb):
            zb = zs[b0 + b, steps - 1]
            for k in range(n_out):
                acc = b_out[k] * 0
                for i in range(n):
                    acc += w_out[k, i] * h[b, i]
                zb[k] = acc + b_out[k]
    else:
        # Every step's readout in one product over the recorded rates (training records them
        # all): a sequence's z then does not depend on how many sequences share its chunk.
        zc = zs[b0:b1].reshape(nb * rows, n_out)
        np.dot(rs[b0:b1].reshape(nb * rows, n), w_out_t, zc)
        for j in range(nb * rows):
            for k in range(n_out):
                zc[j, k] += b_out[k]


@njit(cache=True, error_model="numpy")
def _stack_weights(w_in, w_rec, w_out):
    """[[W_rec^T, W_out^T], [W_in^T, 0]] (loops: numba compiles slice assignment slowly)."""
    n, n_in = w_in.shape
    n_out = w_out.shape[0]
    w_big = np.zeros((n + n_in, n + n_out), dtype=w_rec.dtype)
    for i in range(n):
        for j in range(n):
            w_big[i, j] = w_rec[j, i]
        for k in range(n_out):
            w_big[i, n + k] = w_out[k, i]
    for k in range(n_in):
        for j in range(n):
            w_big[n + k, j] = w_in[j, k]
    return w_big


@njit(cache=True, parallel=True, error_model="numpy")
def forward_kernel(u, xi_in, xi_rec, key_in, key_rec, noise_mode, in_scale, rec_scale, rectify,
                   w_in, w_rec, w_out, b_rec, b_out, x0, alpha, keep, act, n_chunks,
                   record_x, record_r, off, us, xs, rs, zs):
    """Integrate the network (the Euler step of :mod:`neurocl.sim.ei_rnn`) on effective weights.

    u: (B, T, n_in); noise_mode 0 none, 1 xi_in (B, T, n_in) and xi_rec (B, T, n) given, 2 drawn
    here from key_in and key_rec (a scale of 0 switches that source off). ``off`` 0
    (simulation): fills zs (B, T, n_out) and, when recorded, xs and rs (B, T, n), row t holding
    step t + 1. ``off`` 1 (training, the tape of :mod:`neurocl.sim.train_kernel`; record
    everything): us, xs, rs, zs (B, T + 1, .), row 0 holding the initial state, row t step t,
    and us row t the input u~_{t+1} with a zero row T.

    Batch chunks run on separate threads (sequences are independent, so a chunk never waits for
    another). Per step a single matrix product per chunk, [r_{t-1}, u~_t] @ [[W_rec^T, W_out^T],
    [W_in^T, 0]], gives both the recurrent plus input drive of step t and the readout z_{t-1}:
    one large product runs closer to the BLAS peak than three thin ones. Training forms the
    input drive of all steps in one product before the loop and the readout in one after it
    (measured faster there: 1.12x at N = 256 on one thread), so its per-step product is
    r_{t-1} @ W_rec^T; the Euler update, the noise and the recording are the same code.
    """
    training = off == 1
    w_big = _stack_weights(w_in[:, :0] if training else w_in, w_rec, w_out[:0] if training else w_out)
    # Transposed copies: BLAS runs these products fastest with both operands row-major.
    w_in_t = np.ascontiguousarray(w_in.T)
    w_out_t = np.ascontiguousarray(w_out.T)
    for c in prange(n_chunks):
        _forward_chunk(u, xi_in, xi_rec, key_in, key_rec, noise_mode, in_scale, rec_scale, rectify,
                       w_big, w_in_t, w_out, w_out_t, b_rec, b_out, x0, alpha, keep, act, n_chunks,
                       record_x, record_r, off, us, xs, rs, zs, c)
