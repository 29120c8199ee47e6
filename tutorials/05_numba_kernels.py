# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Numba kernels next to their NumPy twins
#
# npvae has each hot kernel twice. `npvae/kernels/reference.py` holds the NumPy version: short, readable, the
# truth. `npvae/kernels/fast.py` holds the Numba version, with the same functions, signatures and results (its
# compiled loops are in `_loops.py`, the written-out exp and log1p in `_fastmath.py`), and it is faster. This tutorial writes small kernels of both kinds and asks where the speed comes from and how to
# prove that a fast kernel computes the same thing as its twin.
#
# 1. Where the time of a training step goes.
# 2. A kernel next to its NumPy twin: a dense layer's bias and ReLU fused into one pass, and why fusing helps
#    (count the passes over memory).
# 3. The Bernoulli log-likelihood and its gradient, where fusing alone is not enough.
# 4. What Numba does well and what it does not: transcendental functions, `error_model`, `fastmath`,
#    `parallel`, `cache`.
# 5. Debugging with `NUMBA_DISABLE_JIT=1`.
# 6. The agreement test that proves a twin equals its reference: float64 to $10^{-12}$, float32 to $10^{-5}$, odd
#    shapes, non-contiguous input.
#
# All timings are measured when the notebook runs and printed, never asserted: they depend on the machine and
# on what else it is doing. The kernels here are this tutorial's own. From npvae it uses only the public functions
# of `npvae.kernels.reference` and `npvae.kernels.fast`, so it does not depend on how `fast.py` is written inside.
# Notation: `tutorials/README.md`.

# %%
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import timeit
from pathlib import Path

from _kit import FAST, attempt, rejects, show  # the shared set-up: tutorials/_kit.py
import matplotlib.pyplot as plt
import numba
import numpy as np
from numba import njit

from npvae.kernels import ACTIVATIONS, activation_code, fast, reference

JIT = not numba.config.DISABLE_JIT

# The sizes of a VAE training step (batch 128, 784 pixels, 400 hidden units). With the JIT disabled the kernels
# run as Python loops, so the timing sections shrink the arrays.
B, D, H = (128, 784, 400) if JIT else (8, 49, 25)
MIN_SECONDS = 0.02 if FAST else 0.2    # each timing repeats a call until one measurement lasts this long
REPEAT = 3 if FAST else 7              # and keeps the fastest of this many measurements


def best_us(fn, *args):
    """Microseconds per call of fn(*args): the fastest of REPEAT measurements, each of enough calls to last
    MIN_SECONDS (timeit's method: the minimum is the run least disturbed by other work)."""
    fn(*args)                                                       # compile, or load from the cache, first
    once = timeit.timeit(lambda: fn(*args), number=1)
    number = max(1, int(MIN_SECONDS / max(once, 1e-9)))
    return min(timeit.repeat(lambda: fn(*args), number=number, repeat=REPEAT)) / number * 1e6


print(f"fast mode: {FAST}; JIT {'enabled' if JIT else 'DISABLED (NUMBA_DISABLE_JIT=1)'}; numba {numba.__version__}, "
      f"numpy {np.__version__}; arrays of {B} x {H} for the timings")

# %% [markdown]
# ## 1. Where the time goes
#
# A dense layer computes $a = xW + b$, then $h = f(a)$. The product $xW$ costs $2 B D H$ floating-point
# operations on $BD + DH$ inputs: each number loaded is used hundreds of times. NumPy hands it to BLAS (OpenBLAS
# here), which blocks it for the caches and the vector units. On dense inputs nothing written by hand in a loop
# comes close, so npvae leaves its products to BLAS, with one exception shown at the end of this section. Adding
# $b$ and applying $f$ cost one or two operations per number loaded. Their speed is set by how fast memory delivers
# the numbers, not by arithmetic. We time the three steps of a forward pass in float32.

# %%
rng = np.random.default_rng(0)
x = rng.standard_normal((B, D), dtype=np.float32)
W = (rng.standard_normal((D, H), dtype=np.float32) / np.float32(np.sqrt(D)))
b = rng.standard_normal(H, dtype=np.float32)
xW = x @ W
t_matmul = best_us(np.matmul, x, W)
t_bias = best_us(np.add, xW, b)
t_relu = best_us(np.maximum, xW, np.float32(0))
print(f"x W        ({B}x{D} @ {D}x{H}): {t_matmul:8.1f} us   ({2 * B * D * H / t_matmul / 1e3:.1f} GFLOP/s)")
print(f"a = xW + b ({B}x{H}):            {t_bias:8.1f} us")
print(f"max(a, 0)  ({B}x{H}):            {t_relu:8.1f} us")

# %% [markdown]
# Per number computed, the matrix product does $D$ multiply-adds and the two elementwise passes one operation
# each. The elementwise passes take far more time per operation than their share of the arithmetic suggests,
# because each one streams a whole $B \times H$ array through memory to do one operation per number. That is
# what a fused kernel attacks. The backward pass has more of them: $f'(a)$, the bias gradient, and the losses.
#
# **The exception: an input that is mostly zeros.** An MNIST image has about 19 % nonzero pixels, so four fifths
# of the multiply-adds of the encoder's first layer, $xW$ and the weight gradient $x^\top \delta$, multiply zeros.
# Row $n$ of $xW$ is $\sum_{j: x_{nj} \neq 0} x_{nj} W_{j,:}$: a loop over the nonzeros that adds rows of $W$, about
# $2 \cdot \mathrm{nnz}(x) \cdot H$ operations instead of $2BDH$. It reads a row of $W$ per nonzero instead of
# reusing blocks in cache as BLAS does, so it wins only when the zeros are many: `fast.sparse_matmul` (and
# `sparse_matmul_tn` for $x^\top \delta$) run npvae's compiled loop when at most a quarter of the entries of a large
# $x$ are nonzero, and BLAS otherwise; `reference.sparse_matmul` is the plain product, the twin to agree with.

# %%
x_img = (rng.uniform(size=(B, D)) * (rng.uniform(size=(B, D)) < 0.19)).astype(np.float32)   # image-like: 19 % nonzero
t_dense = best_us(np.matmul, x_img, W)
t_sparse = best_us(fast.sparse_matmul, x_img, W)
gap = np.abs(fast.sparse_matmul(x_img, W) - reference.sparse_matmul(x_img, W)).max()
print(f"x W with {np.count_nonzero(x_img) / x_img.size:.0%} nonzero: BLAS {t_dense:8.1f} us, "
      f"fast.sparse_matmul {t_sparse:8.1f} us; largest difference from the reference {gap:.1e}")
assert gap <= 1e-5 * np.abs(x_img @ W).max()

# %% [markdown]
# Random zeros, as here, gain less than MNIST's, whose nonzeros sit on the same central pixels image after image, so
# the rows of $W$ they read stay in cache (docs/performance.md measures both). Below 16,384 entries (the tiny
# arrays of a run with the JIT disabled, for one) the wrapper takes BLAS, and with the JIT disabled always (the loop
# would run as Python).
#
# ## 2. A kernel next to its NumPy twin: bias and ReLU in one pass
#
# NumPy runs one operation over a whole array at a time, so `np.maximum(x @ W + b, 0)` makes three passes:
#
# | step | reads | writes | new array |
# |---|---|---|---|
# | `t = x @ W` (BLAS) | $x$, $W$ | $t$ | yes |
# | `a = t + b` | $t$ (and $b$) | $a$ | yes |
# | `h = np.maximum(a, 0)` | $a$ | $h$ | yes |
#
# A Numba kernel is a loop that LLVM compiles to machine code. It can do both elementwise steps while each number is
# in a register: read $a_{ij}$ once, add $b_j$, write it back, write $\max(\cdot, 0)$. After the product that is one
# pass instead of two, and no temporary array. `@njit` compiles the function on its first call for the types it
# receives. The arguments used everywhere in `npvae` are explained in section 4.

# %%
@njit(cache=True, error_model="numpy")
def bias_relu_kernel(a, b, h):
    """One pass over a = x W (B, H): a <- a + b in place, h = relu(a). b: (H,); h: (B, H). Returns None."""
    rows, cols = a.shape
    for i in range(rows):
        for j in range(cols):
            v = a[i, j] + b[j]
            a[i, j] = v
            h[i, j] = type(v)(0.0) if v <= 0 else v   # written so that NaN stays NaN, as in np.maximum


def dense_relu_fused(x, W, b):
    """a = x W + b; h = relu(a). x: (B, Din), W: (Din, Dout), b: (Dout,). Returns (h, a), each (B, Dout)."""
    a = np.matmul(x, W)                       # BLAS
    h = np.empty_like(a)
    bias_relu_kernel(a, b, h)                 # the elementwise work, one pass
    return h, a


def dense_relu_numpy(x, W, b):
    """The NumPy twin: the same maths, one pass per operation."""
    a = x @ W + b
    return np.maximum(a, 0), a


RELU = activation_code("relu")
for name, fn in [("NumPy twin", dense_relu_numpy), ("fused Numba", dense_relu_fused),
                 ("npvae.kernels.fast", lambda x, W, b: fast.dense_forward(x, W, b, RELU))]:
    h_got, a_got = fn(x, W, b)
    h_ref, a_ref = reference.dense_forward(x, W, b, RELU)
    err = max(np.abs(h_got - h_ref).max() / np.abs(h_ref).max(), np.abs(a_got - a_ref).max() / np.abs(a_ref).max())
    print(f"{name:>18}: max relative difference from reference.dense_forward {err:.1e}")
    assert err <= 1e-5, f"{name} disagrees with the reference"

# %% [markdown]
# **Counting passes.** Each pass over a $B \times H$ float32 array moves $4BH$ bytes, read or written. We count the
# array-sized reads and writes of the elementwise part, ignore $b$ (one row), and time each version with and without
# the shared matrix product. The column "passes" expresses each time in units of one plain pass, $c = a + 1$ into an
# existing array, which reads $BH$ numbers and writes $BH$.

# %%
a_buf, h_buf = np.empty_like(xW), np.empty_like(xW)


def epilogue_numpy(t, b):
    a = t + b
    return np.maximum(a, 0)


def epilogue_fused(t, b):
    np.copyto(a_buf, t)                       # the benchmark must not add b to the same array twice
    bias_relu_kernel(a_buf, b, h_buf)


def epilogue_copy(t, b):                      # what epilogue_fused spends on its copy, to subtract
    np.copyto(a_buf, t)


t_pass = best_us(np.add, xW, np.float32(1), a_buf)
t_epi_numpy = best_us(epilogue_numpy, xW, b)
t_epi_fused = best_us(epilogue_fused, xW, b) - best_us(epilogue_copy, xW, b)
traffic = {"NumPy twin": (2, 2, 2), "fused Numba": (1, 2, 0)}    # array reads, array writes, new arrays
rows = [("NumPy twin", t_epi_numpy, best_us(dense_relu_numpy, x, W, b)),
        ("fused Numba", t_epi_fused, best_us(dense_relu_fused, x, W, b)),
        ("npvae.kernels.fast", None, best_us(fast.dense_forward, x, W, b, RELU))]
print(f"one plain pass over {B}x{H}: {t_pass:.1f} us")
print(f"{'version':>18}  {'reads':>5}  {'writes':>6}  {'new arrays':>10}  {'MB moved':>8}  {'bias+relu':>10}  "
      f"{'passes':>6}  {'whole layer':>11}")
for name, t_epi, t_all in rows:
    if name in traffic:
        r, w, n_new = traffic[name]
        print(f"{name:>18}  {r:5d}  {w:6d}  {n_new:10d}  {4 * B * H * (r + w) / 1e6:8.2f}  {t_epi:8.1f}us  "
              f"{t_epi / t_pass:6.1f}  {t_all:9.1f}us")
    else:
        print(f"{name:>18}  {'':>5}  {'':>6}  {'':>10}  {'':>8}  {'':>10}  {'':>6}  {t_all:9.1f}us")

# %% [markdown]
# Read the table against the counts. Two things cost time in the NumPy version besides the arithmetic: the
# extra pass, and the two new arrays (allocating them, and touching fresh memory for the first time). The fused
# kernel writes into arrays that already exist. The "whole layer" column adds the matrix product, which dominates
# it. On a machine shared with other work that column also moves from run to run with whatever else is running
# (OpenBLAS starts threads for the product, and they compete for the cores), so run the cell again before reading
# much into it. In training, `npvae`'s layers go further and reuse their output
# arrays from step to step (`reuse=True` in `npvae.layers`). Next to the matrix product the saving is modest in a
# forward pass. It adds up in the backward pass and the losses, where there are more elementwise steps per matrix
# product.
#
# ## 3. The Bernoulli loss and its gradient: where fusing is not enough
#
# The decoder's loss (tutorial 01) is, per row $b$ with row weight $s_b$,
#
# $$\text{nll}_b = \sum_d \operatorname{softplus}(\lambda_{bd}) - x_{bd}\lambda_{bd}, \qquad
# \mathrm{d}\lambda_{bd} = s_b\bigl(\sigma(\lambda_{bd}) - x_{bd}\bigr).$$
#
# Both are computed from $e = e^{-|\lambda|} \le 1$, which never overflows: $\operatorname{softplus}(\lambda) =
# \max(\lambda, 0) + \log(1 + e)$ and $\sigma(\lambda) = 1/(1+e)$ for $\lambda \ge 0$, $e/(1+e)$ otherwise. Written
# in NumPy, one operation per line, that is 16 passes over $B \times D$ arrays. We write three
# versions:
#
# * the NumPy twin below (16 passes);
# * a **one-pass** Numba kernel that calls `math.exp` and `math.log1p` for each element;
# * a **split** version: NumPy's `np.exp` and `np.log1p` over the whole array (2 passes, plus 2 for $-|\lambda|$),
#   then one Numba pass for everything else.

# %%
def bernoulli_numpy(logits, x, row_scale):
    """nll (B,) and dlogits (B, D) as NumPy computes them: one pass per numbered line."""
    e = np.abs(logits)                                   # 1
    np.negative(e, out=e)                                # 2
    np.exp(e, out=e)                                     # 3   e = e^-|l|
    terms = np.log1p(e)                                  # 4   log(1 + e)
    terms += np.maximum(logits, 0)                       # 5, 6   softplus(l)
    terms -= x * logits                                  # 7, 8
    nll = terms.sum(axis=1)                              # 9
    one_plus_e = 1 + e                                   # 10
    sig = np.where(logits >= 0, 1 / one_plus_e, e / one_plus_e)   # 11, 12, 13, 14
    # BEGIN SOLUTION 2.1
    dlogits = sig - x                                    # 15
    dlogits *= row_scale[:, None]                        # 16
    # END SOLUTION
    return nll, dlogits


@njit(cache=True, error_model="numpy")
def bernoulli_one_pass_kernel(logits, x, row_scale, nll, dlogits):
    """One pass, scalar math.exp / math.log1p per element. All (B, D) but row_scale, nll: (B,)."""
    rows, cols = logits.shape
    for i in range(rows):
        s = row_scale[i]
        total = 0.0                                      # accumulate in float64
        for j in range(cols):
            lam = logits[i, j]
            xv = x[i, j]
            one = type(lam)(1.0)
            e = math.exp(-abs(lam))
            total += (lam if lam > 0 else type(lam)(0.0)) + math.log1p(e) - xv * lam
            sig = one / (one + e) if lam >= 0 else e / (one + e)
            # BEGIN SOLUTION 2.1
            dlogits[i, j] = s * (sig - xv)
            # END SOLUTION
        nll[i] = total


@njit(cache=True, error_model="numpy")
def bernoulli_from_exp_kernel(logits, x, row_scale, e, u, nll, dlogits):
    """One pass given e = e^-|l| and u = log(1 + e), precomputed by NumPy. All (B, D) but row_scale, nll: (B,)."""
    rows, cols = logits.shape
    for i in range(rows):
        s = row_scale[i]
        total = 0.0
        for j in range(cols):
            lam = logits[i, j]
            xv = x[i, j]
            one = type(lam)(1.0)
            ej = e[i, j]
            total += (lam if lam > 0 else type(lam)(0.0)) + u[i, j] - xv * lam
            sig = one / (one + ej) if lam >= 0 else ej / (one + ej)
            # BEGIN SOLUTION 2.1
            dlogits[i, j] = (sig - xv) * s
            # END SOLUTION
        nll[i] = total


def bernoulli_one_pass(logits, x, row_scale):
    logits, x = np.ascontiguousarray(logits), np.ascontiguousarray(x)
    nll, dlogits = np.empty(len(logits), logits.dtype), np.empty_like(logits)
    bernoulli_one_pass_kernel(logits, x, row_scale, nll, dlogits)
    return nll, dlogits


def bernoulli_split(logits, x, row_scale):
    logits, x = np.ascontiguousarray(logits), np.ascontiguousarray(x)
    e = np.abs(logits)
    np.negative(e, out=e)
    np.exp(e, out=e)                                     # NumPy's SIMD exp
    u = np.log1p(e)                                      # NumPy's SIMD log1p
    nll, dlogits = np.empty(len(logits), logits.dtype), np.empty_like(logits)
    bernoulli_from_exp_kernel(logits, x, row_scale, e, u, nll, dlogits)
    return nll, dlogits


lam = (3 * rng.standard_normal((B, D))).astype(np.float32)
lam[0, :5] = [-800, -30, 0, 30, 800]                     # extremes: e^800 would overflow
xs = rng.uniform(size=(B, D)).astype(np.float32)
scale = np.full(B, 1.0 / B, dtype=np.float32)
nll_ref, d_ref = reference.bernoulli_nll(lam, xs, scale)
versions = {"NumPy twin (16 passes)": bernoulli_numpy, "one pass, math.exp": bernoulli_one_pass,
            "split: np.exp + one pass": bernoulli_split, "npvae.kernels.fast": fast.bernoulli_nll}
for name, fn in versions.items():
    nll_got, d_got = fn(lam, xs, scale)
    err = max(np.abs(nll_got - nll_ref).max() / np.abs(nll_ref).max(),
              np.abs(d_got - d_ref).max() / np.abs(d_ref).max())
    assert np.all(np.isfinite(nll_got)) and np.all(np.isfinite(d_got)), f"{name}: not finite"
    assert err <= 1e-5, f"{name}: relative error {err:.1e} against reference.bernoulli_nll"
    print(f"{name:>26}: agrees with reference.bernoulli_nll to {err:.1e} (float32)")

# %%
t_pass_bd = best_us(np.add, xs, np.float32(1), np.empty_like(xs))
timings = {name: best_us(fn, lam, xs, scale) for name, fn in versions.items()}
timings["reference.bernoulli_nll"] = best_us(reference.bernoulli_nll, lam, xs, scale)
print(f"one plain pass over {B}x{D}: {t_pass_bd:.1f} us")
for name, t in timings.items():
    print(f"{name:>26}: {t:8.1f} us  = {t / t_pass_bd:5.1f} plain passes")

# %% [markdown]
# Not every pass costs the same: `exp`, `log1p` and the divisions do more work per number than the plain pass, so
# the NumPy twin's 16 passes may cost more than 16 plain ones. The one-pass kernel reads each input once, and yet it
# need not be the fastest: compare its time with the split version's. Section 4 says why. The split version keeps
# the two things each tool does best: NumPy evaluates the transcendental functions over whole arrays, and Numba
# fuses everything around them into one pass. `npvae.kernels.fast` itself goes one step further (section 4, "Writing
# `exp` out").
#
# ## 4. What Numba does well, and what it does not
#
# **Transcendental functions.** Inside a Numba loop, `math.exp`, `math.log1p` and `math.tanh` become calls to the C
# library's scalar `expf`, `log1pf`, `tanhf`, one element at a time. LLVM can turn a loop of additions and
# multiplications into SIMD instructions, which handle 8 or 16 float32 numbers at once. It cannot do that to a
# loop that calls a scalar library function, unless Numba can use a vector math library (Intel's SVML, which the
# PyPI packages do not install; the first line printed below says whether Numba uses it here). NumPy 2 has its own SIMD implementations of `exp`, `log1p`, `tanh` and others. We compare `np.tanh` with
# a Numba loop over `math.tanh`, and with a loop that does a similar number of multiplications and additions
# and no library call.

# %%
@njit(cache=True, error_model="numpy")
def tanh_loop(a, out):
    """out = tanh(a) elementwise, by the C library's scalar tanh. a, out: (N,). Returns None."""
    for i in range(a.size):
        out[i] = math.tanh(a[i])


@njit(cache=True, error_model="numpy")
def polynomial_loop(a, out):
    """out = a rational function of a (multiplies, adds, one divide per element): no library call."""
    for i in range(a.size):
        v = a[i]
        v2 = v * v
        out[i] = v * (type(v)(27.0) + v2) / (type(v)(27.0) + type(v)(9.0) * v2)


flat = lam.reshape(-1) / np.float32(10)
out_flat = np.empty_like(flat)
tanh_loop(flat, out_flat)
assert np.abs(out_flat - np.tanh(flat)).max() < 1e-6, "the loop computes tanh"
print("Numba uses Intel SVML:", numba.config.USING_SVML)
t_np_tanh = best_us(np.tanh, flat, out_flat)
t_loop_tanh = best_us(tanh_loop, flat, out_flat)
t_poly = best_us(polynomial_loop, flat, out_flat)
print(f"np.tanh (NumPy SIMD)             : {t_np_tanh:8.1f} us")
print(f"Numba loop of math.tanh           : {t_loop_tanh:8.1f} us")
print(f"Numba loop, 6 arithmetic ops each : {t_poly:8.1f} us")

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 3.2), layout="constrained")
ax0.barh(list(timings), [t / t_pass_bd for t in timings.values()], color="C0")
ax0.set(xlabel="time, in plain passes over the array", title=f"Bernoulli loss and gradient, {B} x {D} float32")
ax0.invert_yaxis()
tanh_times = {"np.tanh": t_np_tanh, "Numba loop, math.tanh": t_loop_tanh, "Numba loop, arithmetic": t_poly}
ax1.barh(list(tanh_times), list(tanh_times.values()), color="C1")
ax1.set(xlabel="microseconds", title=f"{flat.size} float32 numbers")
ax1.invert_yaxis()
show(fig, "05_timings.png")

# %% [markdown]
# **Writing `exp` out.** The arithmetic loop is fast because LLVM can vectorise it. So `npvae.kernels.fast` does not
# call a library `exp` at all: it computes $e^{x}$ from multiplications and additions. For $x \le 0$ (we only need
# $e^{-|\lambda|}$), write $x = n \ln 2 + r$ with $n = \operatorname{round}(x / \ln 2)$, so that $|r| \le \ln(2)/2$:
#
# $$e^{x} = 2^{n} e^{r}, \qquad e^{r} = \sum_{k=0}^{7} \frac{r^k}{k!} + \text{(an error below } \tfrac{0.35^8}{8!}
# \approx 6\cdot 10^{-9}\text{, under half a float32 ulp)}.$$
#
# $2^n$ needs no arithmetic at all: a float32 is $2^{E - 127}\times 1.m$, so the integer $(n + 127)$ shifted into the
# exponent bits (23 places to the left) *is* $2^n$ (`np.int32(...).view(np.float32)`). One detail keeps $r$ exact:
# $n \ln 2$ is computed as $n\,c_1 + n\,c_2$ with $c_1 = 0.693359375$, a number with few bits so that $n c_1$ is
# exact, and $c_2 = \ln 2 - c_1$ (Cody and Waite's method). Below is a float32 version for $x \ge -87$
# ($2^n$ stays a normal number there; npvae's version also reaches the subnormal range).
#
# The same trick gives $\log(1 + e)$ for $0 \le e \le 1$ without a library call: with $t = e/(2 + e) \in [0, 1/3]$,
# $\log(1+e) = 2\operatorname{atanh}(t) = 2\sum_k t^{2k+1}/(2k+1)$, and eight terms reach float32 precision.

# %%
LN2_HI, LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)   # c1 + c2 = ln 2
INV_FACTORIAL = tuple(np.float32(1 / math.factorial(k)) for k in range(8))


@njit(cache=True, error_model="numpy")
def exp_written_out(x):
    """e^x for one float32 x in [-87, 0]: 2^n e^r, r = x - n ln 2, e^r by its Taylor polynomial."""
    n = np.floor(x * np.float32(1.4426950408889634) + np.float32(0.5))   # round(x / ln 2)
    r = (x - n * LN2_HI) - n * LN2_LO
    p = INV_FACTORIAL[7]
    for k in range(6, -1, -1):                                          # Horner's rule
        p = p * r + INV_FACTORIAL[k]
    return p * np.int32((np.int32(n) + 127) << 23).view(np.float32)   # times 2^n


@njit(cache=True, error_model="numpy")
def exp_written_out_loop(a, out):
    """out = e^a elementwise for a in [-87, 0]. a, out: (N,) float32."""
    for i in range(a.size):
        out[i] = exp_written_out(a[i])


@njit(cache=True, error_model="numpy")
def exp_library_loop(a, out):
    """out = e^a elementwise by the C library's scalar expf. a, out: (N,) float32."""
    for i in range(a.size):
        out[i] = math.exp(a[i])


xs_exp = -np.abs(flat * 10).clip(max=87)                                  # float32 in [-87, 0]
got, want = np.empty_like(xs_exp), np.exp(xs_exp.astype(np.float64))
exp_written_out_loop(xs_exp, got)
ulps = np.abs(got - want) / np.spacing(want.astype(np.float32))
assert ulps.max() <= 1.5, f"within 1.5 units in the last place of the exact e^x, got {ulps.max():.2f}"
print(f"written-out exp: at most {ulps.max():.2f} ulp from the exact value (np.exp in float32: "
      f"{(np.abs(np.exp(xs_exp) - want) / np.spacing(want.astype(np.float32))).max():.2f})")
for name, fn in {"np.exp (NumPy SIMD)": np.exp, "Numba loop, math.exp": exp_library_loop,
                 "Numba loop, exp written out": exp_written_out_loop}.items():
    print(f"{name:>28}: {best_us(fn, xs_exp, got):8.1f} us")

# %% [markdown]
# With both functions written out, the Bernoulli loss becomes one pass again, now a vectorised one: this is what
# `npvae.kernels.fast.bernoulli_nll` does (its table above). Whether it beats the split version depends on the
# machine. The split version makes five passes over memory, and the one-pass version does more arithmetic per
# number, in 8-lane vectors where NumPy's `exp` uses 16 lanes on an AVX-512 machine. On the development machine,
# for the 1100 x 784 arrays of an M2 step, it took 1.5 ms against 2.4 ms (docs/performance.md).
#
# **`error_model="numpy"`.** By default (`error_model="python"`) Numba makes division behave as in Python: every
# `a / b` tests whether `b` is zero and raises `ZeroDivisionError`. That test is a branch per element, and a loop with
# a branch that may raise cannot be vectorised. With `error_model="numpy"`, `x / 0` gives `inf` or `nan`, as NumPy
# arrays do, and the loop vectorises. The arithmetic is still IEEE, in the order written: this is not `fastmath`.
# npvae's kernels never divide by zero on purpose, so the choice changes no result, only the speed.

# %%
@njit(cache=True)
def divide_python_model(a, b, out):
    for i in range(a.size):
        out[i] = a[i] / b[i]


@njit(cache=True, error_model="numpy")
def divide_numpy_model(a, b, out):
    for i in range(a.size):
        out[i] = a[i] / b[i]


num, den = np.ones(3), np.array([2.0, 0.0, 4.0])
res = np.empty(3)
with np.errstate(divide="ignore"):
    divide_numpy_model(num, den, res)
print("error_model='numpy' :", res)
assert np.isinf(res[1]), "x / 0 is inf under the NumPy error model"
if JIT:
    try:
        divide_python_model(num, den, res)
    except ZeroDivisionError as e:
        print(f"error_model='python': ZeroDivisionError: {e}")
    else:
        raise AssertionError("the Python error model should raise on division by zero")
big_num = rng.uniform(1, 2, size=B * D).astype(np.float32)
big_den = big_num + np.float32(1)
big_out = np.empty_like(big_num)
t_div_python = best_us(divide_python_model, big_num, big_den, big_out)
t_div_numpy = best_us(divide_numpy_model, big_num, big_den, big_out)
print(f"{big_num.size} float32 divisions: error_model='python' {t_div_python:.1f} us, 'numpy' {t_div_numpy:.1f} us")

# %% [markdown]
# **Never `fastmath=True`.** `fastmath` lets LLVM assume that no value is NaN or infinite and that floating-point
# addition is associative. The second assumption changes sums: LLVM may split a running sum into partial sums and
# add them in an order of its choosing, so the result depends on the compiler and its version, not only on the code
# as written. The first assumption is worse. A test for NaN may be compiled to "false". npvae's training loop stops when a gradient holds
# a NaN or an infinity (`count_nonfinite`). Under `fastmath` that check could be compiled away. Here is the same
# NaN count compiled both ways.

# %%
@njit(cache=True)
def count_nan(a):
    n = 0
    for i in range(a.size):
        n += math.isnan(a[i])
    return n


@njit(cache=True, fastmath=True)                        # for this demonstration only: npvae never uses fastmath
def count_nan_fastmath(a):
    n = 0
    for i in range(a.size):
        n += math.isnan(a[i])
    return n


with_nans = np.array([1.0, np.nan, 2.0, np.inf, np.nan])
print(f"NaNs in {with_nans}: without fastmath {count_nan(with_nans)}, with fastmath {count_nan_fastmath(with_nans)}")
assert count_nan(with_nans) == 2
if JIT:
    assert count_nan_fastmath(with_nans) != 2, "under fastmath LLVM may assume no NaN exists, and here it does"

# %% [markdown]
# **`parallel=True`.** Numba can spread a `prange` loop over threads. On a machine with two cores, npvae's kernels
# stay serial. Numba's worker threads keep spinning for a while after a parallel loop ends. During that time they
# compete for the two cores with the threads that OpenBLAS starts for the next matrix product. The matrix products
# are most of a step and the elementwise passes are small, so one thread for the passes is the better trade. The
# section on the Numba kernels in `docs/performance.md` records the measurement. Exercise 5.3 repeats it.
#
# **`cache=True`.** Compiling a kernel takes a fraction of a second to seconds. `cache=True` writes the machine code to
# disk, in `__pycache__` next to the source file (in Jupyter, IPython's cache directory), and later processes load it
# instead of compiling. The cache is keyed by the function's source and by the argument types, so an edited kernel
# compiles afresh. Numba compiles once per **signature**: a float32 call and a float64 call are two compilations, and
# so are a C-contiguous array and a strided view of one. `fast.py`'s wrappers cast scalars to the arrays' dtype and
# copy strided inputs with `np.ascontiguousarray`, so each kernel is compiled once per dtype and no more. We run a
# tiny kernel in two fresh processes that share a cache directory. The first compiles it and writes the cache. The
# second loads it. (Each process first calls another small kernel, so that Numba's one-time start-up is not
# counted in the first call.)

# %%
def run_python(code, tmp, **env):
    """Run `code` as a script file in `tmp` in a fresh Python process. Returns CompletedProcess (text)."""
    script = Path(tmp) / "snippet.py"
    script.write_text(textwrap.dedent(code))
    full_env = {**os.environ, "NUMBA_CACHE_DIR": str(Path(tmp) / "numba-cache"), **env}
    return subprocess.run([sys.executable, str(script)], env=full_env, capture_output=True, text=True,
                          timeout=300, cwd=tmp)


CACHE_DEMO = """
    import time
    import numpy as np
    from numba import njit

    @njit(cache=True, error_model="numpy")
    def warm_up(a):                     # called first: pays Numba's one-time start-up in each process
        return a[0]

    @njit(cache=True, error_model="numpy")
    def scaled_sum(a, s):
        total = 0.0
        for i in range(a.size):
            total += a[i] * s
        return total

    a = np.arange(10.0)
    warm_up(a)
    t0 = time.perf_counter()
    scaled_sum(a, 2.0)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    scaled_sum(a, 2.0)
    second = time.perf_counter() - t0
    print(f"{first * 1e3:.1f} {second * 1e3:.3f} {len(scaled_sum.signatures)}")
"""
with tempfile.TemporaryDirectory(prefix="npvae-numba-") as tmp:
    env = {"NUMBA_DISABLE_JIT": "0"}
    runs = [run_python(CACHE_DEMO, tmp, **env) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    cached = sorted(p.suffix for p in (Path(tmp) / "numba-cache").rglob("*") if p.is_file())
(first_a, second_a, _), (first_b, second_b, _) = (r.stdout.split() for r in runs)
print(f"process 1 (compiles, writes the cache): first call {first_a} ms, second call {second_a} ms")
print(f"process 2 (loads the cache):            first call {first_b} ms, second call {second_b} ms")
print(f"files in the cache directory: {cached}")
assert ".nbi" in cached and ".nbc" in cached, "cache=True should write an index (.nbi) and code (.nbc)"

if JIT:
    before = len(count_nan.signatures)
    count_nan(with_nans.astype(np.float32))              # a second dtype: a second compilation
    count_nan(np.zeros(8)[::2])                          # a strided view: a third
    print("count_nan's compiled signatures:", *count_nan.signatures, sep="\n  ")
    assert len(count_nan.signatures) == before + 2

# %% [markdown]
# ## 5. Debugging: `NUMBA_DISABLE_JIT=1`
#
# Compiled code does not check array bounds. An index one past the end reads or writes whatever memory is there: a
# wrong number, a crash, or a corrupted array somewhere else. Two switches help, both environment variables that
# must be set before Numba is imported:
#
# * `NUMBA_DISABLE_JIT=1` turns `@njit` into a no-op. The kernels run as ordinary Python: slowly, but with Python's
#   bounds checks and tracebacks, and `print` or a debugger (`breakpoint()`) work inside them. npvae's kernels are
#   written so that they also run this way (`tests/test_nojit.py` runs the core test files with it).
# * `NUMBA_BOUNDSCHECK=1` keeps the compilation and adds bounds checks, which raise `IndexError`.
#
# We run a kernel with an off-by-one loop in two fresh processes, one with each switch. (We do not run it without
# them.)

# %%
OFF_BY_ONE = """
    import numpy as np
    from numba import njit

    @njit(cache=True)
    def row_sums(a, out):
        for i in range(a.shape[0] + 1):       # the bug: one row too many
            s = 0.0
            for j in range(a.shape[1]):
                s += a[i, j]
            out[i] = s

    print(type(row_sums).__name__)
    row_sums(np.ones((3, 4)), np.empty(3))
"""
with tempfile.TemporaryDirectory(prefix="npvae-numba-") as tmp:
    no_jit = run_python(OFF_BY_ONE, tmp, NUMBA_DISABLE_JIT="1")
    checked = run_python(OFF_BY_ONE, tmp, NUMBA_DISABLE_JIT="0", NUMBA_BOUNDSCHECK="1")
print("NUMBA_DISABLE_JIT=1:", no_jit.stdout.strip(), "|", no_jit.stderr.strip().splitlines()[-1])
print("   ... traceback lines:", *[ln for ln in no_jit.stderr.splitlines() if "line" in ln][-2:], sep="\n      ")
print("NUMBA_BOUNDSCHECK=1:", checked.stdout.strip(), "|", checked.stderr.strip().splitlines()[-1])
assert no_jit.stdout.split()[0] == "function", "with the JIT disabled, @njit returns the plain Python function"
assert "IndexError" in no_jit.stderr and "s += a[i, j]" in no_jit.stderr, "Python names the failing line"
assert checked.stdout.split()[0] == "CPUDispatcher" and "IndexError" in checked.stderr

# %% [markdown]
# ## 6. The agreement test: a twin equals its reference
#
# A fast kernel is only useful if it computes what the reference computes. `tests/test_kernels.py` proves it for
# every kernel of `fast.py`. Here is the same test in a few lines, to use on your own kernels. For every output:
#
# * the same dtype and shape as the reference's, and finite;
# * $\max|\text{fast} - \text{ref}| \,/\, \max|\text{ref}| \le 10^{-12}$ in float64 and $10^{-5}$ in float32. The two
#   compute the same maths in a different order, so they differ by rounding only: a few units in the last place,
#   about $10^{-16}$ or $10^{-7}$ relative, summed over a row;
# * for **odd shapes**: a batch of 1, widths that are not multiples of 4, 8 or 16. Vectorised and unrolled loops
#   handle a remainder separately, and that remainder is where bugs hide;
# * for **non-contiguous input**: the same values as a strided view (every other column of a wider array). A
#   kernel, or its wrapper, that assumes a contiguous layout reads the wrong numbers.

# %%
SHAPES = [(1, 1), (3, 7), (17, 33), (65, 129)]
TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


def strided(arr):
    """The same values as a non-contiguous view: every other entry along the last axis of a wider array."""
    wide = np.zeros(arr.shape[:-1] + (2 * arr.shape[-1],), dtype=arr.dtype)
    wide[..., ::2] = arr
    view = wide[..., ::2]
    assert not view.flags.c_contiguous or arr.size <= 1
    return view


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def assert_twin_agrees(twin, ref, make_inputs, name, shapes=SHAPES, seed=0):
    """twin(*inputs) == ref(*inputs) for every output, every shape, float64 and float32, contiguous and strided.

    make_inputs(rng, shape, dtype) -> tuple of arrays (and scalars) for both functions. Returns None; raises
    AssertionError naming the case.
    """
    r = np.random.default_rng(seed)
    for dtype in (np.float64, np.float32):
        for shape in shapes:
            inputs = make_inputs(r, shape, np.dtype(dtype))
            want = [w for w in as_tuple(ref(*inputs)) if w is not None]
            views = tuple(strided(v) if isinstance(v, np.ndarray) and v.ndim else v for v in inputs)
            for layout, args in (("contiguous", inputs), ("strided", views)):
                got = [g for g in as_tuple(twin(*args)) if g is not None]
                assert len(got) == len(want), f"{name}: {len(got)} outputs, reference {len(want)}"
                for k, (g, w) in enumerate(zip(got, want)):
                    case = f"{name}, output {k}, {np.dtype(dtype).name}, shape {shape}, {layout} input"
                    assert g.dtype == w.dtype and g.shape == w.shape, \
                        f"{case}: got {g.dtype} {g.shape}, reference {w.dtype} {w.shape}"
                    assert np.all(np.isfinite(g)), f"{case}: non-finite values"
                    err = np.abs(g.astype(np.float64) - w).max() / max(1e-30, np.abs(w.astype(np.float64)).max())
                    assert err <= TOL[w.dtype], f"{case}: relative error {err:.2e} > {TOL[w.dtype]:.0e}"


def dense_inputs(r, shape, dtype):
    rows, din = shape
    dout = din + 2                                   # odd output widths too
    return (r.standard_normal((rows, din)).astype(dtype), r.standard_normal((din, dout)).astype(dtype),
            r.standard_normal(dout).astype(dtype))


def bernoulli_inputs(r, shape, dtype):
    logits = 3 * r.standard_normal(shape)
    logits.flat[::5] = 40 * r.standard_normal(logits.flat[::5].shape)   # some far out in the tails
    return logits.astype(dtype), r.uniform(size=shape).astype(dtype), r.uniform(0.1, 1, shape[0]).astype(dtype)


checks = [
    ("fused bias + relu", dense_relu_fused, lambda x_, W_, b_: reference.dense_forward(x_, W_, b_, RELU), dense_inputs),
    ("Bernoulli, one pass", bernoulli_one_pass, reference.bernoulli_nll, bernoulli_inputs),
    ("Bernoulli, split", bernoulli_split, reference.bernoulli_nll, bernoulli_inputs),
    ("fast.bernoulli_nll", fast.bernoulli_nll, reference.bernoulli_nll, bernoulli_inputs),
    ("fast.gaussian_kl", fast.gaussian_kl, reference.gaussian_kl,
     lambda r, shape, dt: (r.standard_normal(shape).astype(dt), r.normal(0, 0.5, shape).astype(dt),
                           r.uniform(0.1, 1, shape[0]).astype(dt))),
]
for act_name, act in ACTIVATIONS.items():
    checks.append((f"fast.dense_forward, {act_name}", lambda x_, W_, b_, a=act: fast.dense_forward(x_, W_, b_, a),
                   lambda x_, W_, b_, a=act: reference.dense_forward(x_, W_, b_, a), dense_inputs))
for name, twin, ref, make in checks:
    assert_twin_agrees(twin, ref, make, name)
    print(f"{name:>30}: agrees, {len(SHAPES)} shapes x 2 dtypes x 2 layouts")

# %% [markdown]
# **The test catches a bug that the usual shapes hide.** To sum a row quickly, a kernel keeps four partial sums and
# steps through the row four entries at a time (the additions of different sums can overlap in the processor). The
# last `D % 4` entries need a loop of their own. Forget it, and every row whose width is a multiple of 4, including
# MNIST's 784, still comes out right.

# %%
@njit(cache=True, error_model="numpy")
def row_sums_unrolled(a, out):
    """out[i] = sum_j a[i, j], four partial sums at a time. The remainder loop is missing: a bug."""
    rows, cols = a.shape
    for i in range(rows):
        s0 = s1 = s2 = s3 = 0.0
        for j in range(0, cols - cols % 4, 4):
            s0 += a[i, j]
            s1 += a[i, j + 1]
            s2 += a[i, j + 2]
            s3 += a[i, j + 3]
        out[i] = (s0 + s1) + (s2 + s3)


def row_sums_twin(a):
    out = np.empty(a.shape[0], dtype=a.dtype)
    row_sums_unrolled(np.ascontiguousarray(a), out)
    return out


def rows_of(r, shape, dtype):
    return (r.standard_normal(shape).astype(dtype),)


assert_twin_agrees(row_sums_twin, lambda a: a.sum(axis=1), rows_of, "row sums", shapes=[(128, 784), (64, 400)])
print("row sums: agrees on 128 x 784 and 64 x 400")
try:
    assert_twin_agrees(row_sums_twin, lambda a: a.sum(axis=1), rows_of, "row sums")
except AssertionError as e:
    print("with odd shapes:", e)
else:
    raise AssertionError("the agreement test should catch the missing remainder loop")

# %% [markdown]
# ## Exercises

# %%
# %% [markdown]
# ### Exercise 5.1: a fused leaky-ReLU layer
#
# Write `dense_leaky_fused(x, W, b, alpha)`: $a = xW + b$ and $h = a$ where $a > 0$, $\alpha a$ elsewhere, with the
# matrix product by `np.matmul` and everything else in **one** `@njit(cache=True, error_model="numpy")` pass, like
# section 2's kernel. Keep float32 arithmetic in float32: cast `alpha` to the arrays' dtype before the kernel sees
# it. The check runs the agreement test against `reference.dense_forward(x, W, b, LEAKY_RELU, alpha)`.

# %%
LEAKY_RELU = activation_code("leaky_relu")


def dense_leaky_fused(x, W, b, alpha):
    """a = x W + b; h = leaky_relu(a, alpha). x: (B, Din), W: (Din, Dout), b: (Dout,). Returns (h, a)."""
    raise NotImplementedError("Exercise 5.1: fused leaky ReLU")


def check_exercise_5_1(fn):
    def make(r, shape, dtype):
        return (*dense_inputs(r, shape, dtype), 0.3)

    assert_twin_agrees(fn, lambda x_, W_, b_, al: reference.dense_forward(x_, W_, b_, LEAKY_RELU, al), make,
                       "dense_leaky_fused", seed=51)


attempt(check_exercise_5_1, dense_leaky_fused, "Exercise 5.1")

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution 5.1
@njit(cache=True, error_model="numpy")
def bias_leaky_kernel(a, b, alpha, h):
    rows, cols = a.shape
    for i in range(rows):
        for j in range(cols):
            v = a[i, j] + b[j]
            a[i, j] = v
            h[i, j] = v if v > 0 else v * alpha


def dense_leaky_fused_solution(x, W, b, alpha):
    a = np.matmul(x, W)
    h = np.empty_like(a)
    bias_leaky_kernel(a, b, a.dtype.type(alpha), h)
    return h, a


def _leaky_bias_twice(x, W, b, alpha):
    h, a = dense_leaky_fused_solution(x, W, b, alpha)
    return h, a + b                                     # a wrong second output: b added twice


check_exercise_5_1(dense_leaky_fused_solution)
rejects(check_exercise_5_1, _leaky_bias_twice)
print("solution 5.1 passes")

# %% [markdown]
# ### Exercise 5.2: counting non-finite numbers
#
# Training stops when a gradient holds a NaN or an infinity. Write a Numba kernel that counts the NaN and infinite
# entries of an array of any shape and layout, and a wrapper `count_nonfinite_numba(arrays)` that returns the
# total over a list of arrays, as `npvae.kernels.reference.count_nonfinite` does. (Hint: `math.isfinite`; a strided
# array can be made contiguous first, or indexed with `.flat`.) Why must this kernel never be compiled with
# `fastmath=True`?

# %%
def count_nonfinite_numba(arrays):
    """Number of NaN or +-inf entries over a list of float arrays. Returns an int."""
    raise NotImplementedError("Exercise 5.2: count non-finite entries")


def check_exercise_5_2(fn):
    r = np.random.default_rng(52)
    for dtype in (np.float64, np.float32):
        for shape in SHAPES:
            arrays = [r.standard_normal(shape).astype(dtype), r.standard_normal(shape[1]).astype(dtype)]
            for arr in arrays:
                hit = r.random(arr.shape) < 0.2
                arr[hit] = r.choice([np.nan, np.inf, -np.inf], size=int(hit.sum()))
            want = reference.count_nonfinite(arrays)
            for layout, args in (("contiguous", arrays), ("strided", [strided(a) for a in arrays])):
                got = fn(args)
                assert int(got) == want, f"{np.dtype(dtype).name} {shape} {layout}: counted {got}, expected {want}"


attempt(check_exercise_5_2, count_nonfinite_numba, "Exercise 5.2")

# %% jupyter={"source_hidden": true} tags=["solution"]
# Solution 5.2: one pass per array; math.isfinite is false for NaN and for +-inf.
@njit(cache=True, error_model="numpy")
def nonfinite_in(flat):
    n = 0
    for i in range(flat.size):
        if not math.isfinite(flat[i]):
            n += 1
    return n


def count_nonfinite_numba_solution(arrays):
    return sum(nonfinite_in(np.ascontiguousarray(a).reshape(-1)) for a in arrays)


@njit(cache=True, error_model="numpy")
def _nan_only(flat):
    n = 0
    for i in range(flat.size):
        if flat[i] != flat[i]:          # true for NaN only: misses the infinities
            n += 1
    return n


check_exercise_5_2(count_nonfinite_numba_solution)
rejects(check_exercise_5_2, lambda arrays: sum(_nan_only(np.ascontiguousarray(a).reshape(-1)) for a in arrays))
print("solution 5.2 passes")

# %% [markdown]
# ### Exercise 5.3 (no check): `parallel=True` on two cores
#
# Copy `bias_relu_kernel`, decorate the copy with `@njit(cache=True, error_model="numpy", parallel=True)`, and
# change its outer `range` to `numba.prange`. Time three things in a loop, one after the other: `np.matmul(x, W)`, the
# parallel kernel, and `np.matmul` again. Compare with the serial kernel. Then set `NUMBA_NUM_THREADS=1` before
# starting Python and time again. Where did the time go? (Section 4 and `docs/performance.md`.)
