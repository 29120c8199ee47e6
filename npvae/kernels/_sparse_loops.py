"""The compiled loops of the products that skip the zeros of a mostly-zero x (an input layer on images).

``_sparse_rows_kernel`` lists x's nonzeros row by row; ``_rows_matmul_kernel`` computes x W from that list
(each row of out sums the rows of W at its row's nonzeros, eight rows of W at a time: ``_add_rows``);
``_rows_matmul_tn_kernel`` computes x^T D, two rows of out at a time. ``_sparse.py`` decides when they run.

Two rows of x^T D at once, their sums held in registers. Row j of x^T D is the sum of the rows of D where
column j of x is nonzero; done one output row at a time, every row of D it reads is used once. Here two
neighbouring pixels (j, j + 1) share one list of the images where either is nonzero (on MNIST 80-85 % of the
entries of such a list are nonzero for both), so every loaded piece of a row of D is used twice:

    out[o0, c0:c0+w] = sum_t v0[t] R[rows[t], c0:c0+w];   out[o1, c0:c0+w] = sum_t v1[t] R[rows[t], c0:c0+w]

with the sums in order of t and w = PANEL_VECTORS vectors of 32 bytes (40 float32 or 20 float64 columns). A
compiled loop over t cannot keep ten running sums of eight floats in registers by itself (it keeps them in
memory), so ``_panel2`` writes that loop directly in LLVM's vector types. ``_panel2_loops`` is the same
computation as plain loops, in the same order: its twin in the tests (the results are bit-identical), the
loop over the last Dout % panel_width columns, and ``_panel2`` itself when the kernels run as Python
(``NUMBA_DISABLE_JIT=1``; the products then take BLAS, so only the tests call them). A zero in one of the
two lists multiplies its row of R (an inf or NaN there gives NaN, as in BLAS); a row of R that neither pixel
meets is never read.
"""

import numba
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_jit = njit(cache=True, error_model="numpy", nogil=True)   # as in _loops.py: never fastmath

PANEL_VECTORS = 5   # vectors per output row: 2 x 5 running sums, 5 loads and 20 arithmetic ops per entry
VECTOR_BYTES = 32   # AVX2 (on wider machines LLVM keeps 32-byte vectors; on narrower ones it splits them)


@_jit
def _panel_columns(itemsize):
    """Columns one panel covers for floats of ``itemsize`` bytes: 40 float32 or 20 float64."""
    return PANEL_VECTORS * VECTOR_BYTES // itemsize


def panel_width(dtype):
    """Columns one panel covers for float dtype: 40 float32 or 20 float64."""
    return _panel_columns(np.dtype(dtype).itemsize)


@_jit
def _panel2_loops(out, R, rows, v0, v1, t0, t1, c0, o0, o1):
    """out[o0, c0:c0+w] = sum_t v0[t] R[rows[t], c0:c0+w] and out[o1, ...] with v1, t in t0..t1-1 in order
    (w = panel_width, or fewer columns at the end of the rows); plain loops. out (.., Dout), R (.., Dout)
    C-contiguous, one dtype; rows int64."""
    zero = type(out[o0, c0])(0.0)
    for c in range(c0, min(c0 + _panel_columns(out.itemsize), out.shape[1])):
        s0 = zero
        s1 = zero
        for t in range(t0, t1):
            r = R[rows[t], c]
            s0 += v0[t] * r
            s1 += v1[t] * r
        out[o0, c] = s0
        out[o1, c] = s1


@intrinsic
def _panel2_vector(typingctx, out, R, rows, v0, v1, t0, t1, c0, o0, o1):
    """``_panel2_loops`` with its 2 x PANEL_VECTORS running sums as LLVM vectors (kept in registers). Whole panels
    only: the caller keeps c0 + panel_width <= Dout (the vectors are loaded and stored without a bound). Typed
    only for 2-D C-contiguous out and R and 1-D v0, v1 of one float dtype and int64 rows (a row's start is
    row * shape[1]); any other types fail to compile."""
    floats = (types.float32, types.float64)
    if not (isinstance(out, types.Array) and isinstance(R, types.Array) and out.ndim == R.ndim == 2
            and out.layout == R.layout == "C" and out.dtype in floats
            and all(isinstance(a, types.Array) and a.ndim == 1 for a in (rows, v0, v1))
            and R.dtype == v0.dtype == v1.dtype == out.dtype and rows.dtype == types.int64):
        return None
    sig = types.void(out, R, rows, v0, v1, t0, t1, c0, o0, o1)

    def codegen(context, builder, signature, args):
        a_out, a_R, a_rows, a_v0, a_v1 = (context.make_array(ty)(context, builder, value)
                                          for ty, value in zip(signature.args[:5], args[:5]))
        t0, t1, c0, o0, o1 = args[5:]
        fty = context.get_value_type(signature.args[0].dtype)
        lanes = VECTOR_BYTES // context.get_abi_sizeof(fty)
        vty = ir.VectorType(fty, lanes)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        out_data, ld_out = a_out.data, cgutils.unpack_tuple(builder, a_out.shape)[1]
        R_data, ld_R = a_R.data, cgutils.unpack_tuple(builder, a_R.shape)[1]

        def vector_at(data, row_length, row, k):   # pointer to the k-th vector of row `row` from column c0
            offset = builder.add(builder.add(builder.mul(row, row_length), c0), ir.Constant(i64, k * lanes))
            return builder.bitcast(builder.gep(data, [offset]), vty.as_pointer())

        def splat(scalar):
            one = builder.insert_element(ir.Constant(vty, ir.Undefined), scalar, ir.Constant(i32, 0))
            every_lane_from_0 = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
            return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined), every_lane_from_0)

        # the running sums live in allocas, which LLVM promotes to registers
        align = context.get_abi_sizeof(fty)   # the vectors need only the floats' alignment
        zero = ir.Constant(vty, [ir.Constant(fty, 0.0)] * lanes)
        sums = [[cgutils.alloca_once_value(builder, zero) for _ in range(PANEL_VECTORS)] for _ in range(2)]
        with cgutils.for_range(builder, t1, start=t0) as loop:
            t = loop.index
            row = builder.load(builder.gep(a_rows.data, [t]))
            scales = [splat(builder.load(builder.gep(v.data, [t]))) for v in (a_v0, a_v1)]
            for k in range(PANEL_VECTORS):
                r = builder.load(vector_at(R_data, ld_R, row, k), align=align)
                for s in range(2):
                    builder.store(builder.fadd(builder.load(sums[s][k]), builder.fmul(scales[s], r)), sums[s][k])
        for s, o in enumerate((o0, o1)):
            for k in range(PANEL_VECTORS):
                builder.store(builder.load(sums[s][k]), vector_at(out_data, ld_out, o, k), align=align)
        return context.get_dummy_value()

    return sig, codegen


_panel2 = _panel2_loops if numba.config.DISABLE_JIT else _panel2_vector


@_jit
def _panel2_kernel(out, R, rows, v0, v1, t0, t1, c0, o0, o1):
    """``_panel2`` callable from Python (an intrinsic runs only inside compiled code)."""
    _panel2(out, R, rows, v0, v1, t0, t1, c0, o0, o1)


@_jit
def _add_rows(o, v, R, rows, t, k):
    """o += sum_s v[s] R[rows[s]] over s = t..k-1: eight rows at a time (then four, then one), summed in pairs,
    so that o is loaded and stored once per eight rows (measured: four at a time took 9-24 % longer,
    docs/performance.md)."""
    D = o.shape[0]
    while t + 8 <= k:
        v0, v1, v2, v3, v4, v5, v6, v7 = v[t], v[t + 1], v[t + 2], v[t + 3], v[t + 4], v[t + 5], v[t + 6], v[t + 7]
        r0, r1, r2, r3 = R[rows[t]], R[rows[t + 1]], R[rows[t + 2]], R[rows[t + 3]]
        r4, r5, r6, r7 = R[rows[t + 4]], R[rows[t + 5]], R[rows[t + 6]], R[rows[t + 7]]
        for c in range(D):
            o[c] += (((v0 * r0[c] + v1 * r1[c]) + (v2 * r2[c] + v3 * r3[c]))
                     + ((v4 * r4[c] + v5 * r5[c]) + (v6 * r6[c] + v7 * r7[c])))
        t += 8
    if t + 4 <= k:
        v0, v1, v2, v3 = v[t], v[t + 1], v[t + 2], v[t + 3]
        r0, r1, r2, r3 = R[rows[t]], R[rows[t + 1]], R[rows[t + 2]], R[rows[t + 3]]
        for c in range(D):
            o[c] += (v0 * r0[c] + v1 * r1[c]) + (v2 * r2[c] + v3 * r3[c])
        t += 4
    while t < k:
        v0, r0 = v[t], R[rows[t]]
        for c in range(D):
            o[c] += v0 * r0[c]
        t += 1


@_jit
def _count_nonzero_kernel(a):
    """Number of nonzero entries of a flat (N,) array (NaN counts: it is not zero)."""
    n = 0
    for i in range(a.size):
        n += a[i] != 0
    return n


@_jit
def _sparse_rows_kernel(x, ptr, cols, vals):
    """List x's nonzeros row by row (CSR): row n's are cols[ptr[n]:ptr[n+1]] (in column order), values vals[...].

    x: (B, Din); ptr: (B + 1,); cols, vals: (nnz + 1,) at least (each entry is written before it is known to be
    nonzero, which skips the branch per entry; the slot after the last nonzero takes the last write).
    """
    B, Din = x.shape
    k = 0
    for n in range(B):
        x_n = x[n]
        ptr[n] = k
        for j in range(Din):
            v = x_n[j]
            cols[k] = j
            vals[k] = v
            k += v != 0
    ptr[B] = k


@_jit
def _rows_matmul_kernel(ptr, cols, vals, W, out):
    """out = x W from x's nonzeros by rows (``_sparse_rows_kernel``), W (Din, Dout): each row of out sums the
    rows of W at x's nonzeros."""
    for n in range(out.shape[0]):
        o = out[n]
        for c in range(o.shape[0]):
            o[c] = 0
        _add_rows(o, vals, W, cols, ptr[n], ptr[n + 1])


@_jit
def _rows_matmul_tn_kernel(ptr, cols, vals, D, out):
    """out = x^T D from x's nonzeros by rows, D (B, Dout): rows j, j + 1 of out (j even) are computed together
    from one list of the rows of D where column j or j + 1 of x is nonzero, in row order (``_panel2``, above).

    The lists are made from x's rows in two passes (count, fill); a pair's entry holds x's two values (one of
    them may be 0). The columns of out are done a panel at a time (40 float32 or 20 float64), the last
    Dout % panel_width by plain loops in the same order.
    """
    Din, Dout = out.shape
    B = ptr.shape[0] - 1
    npair = (Din + 1) // 2
    start = np.zeros(npair + 1, dtype=np.int64)   # pair p's entries are start[p]:start[p + 1]
    for n in range(B):
        last = -1
        for t in range(ptr[n], ptr[n + 1]):
            p = cols[t] >> 1
            if p != last:
                start[p + 1] += 1
                last = p
    for p in range(npair):
        start[p + 1] += start[p]
    rows = np.empty(start[npair], dtype=np.int64)
    v0 = np.zeros(start[npair], dtype=vals.dtype)
    v1 = np.zeros(start[npair], dtype=vals.dtype)
    fill = start[:npair].copy()
    for n in range(B):
        last = -1
        k = 0
        for t in range(ptr[n], ptr[n + 1]):
            j = cols[t]
            p = j >> 1
            if p != last:
                k = fill[p]
                fill[p] += 1
                rows[k] = n
                last = p
            if j & 1:
                v1[k] = vals[t]
            else:
                v0[k] = vals[t]
                if j == Din - 1:   # odd Din: the last column is both rows of its pair
                    v1[k] = vals[t]
    width = _panel_columns(out.itemsize)
    for c0 in range(0, Dout - Dout % width, width):
        for p in range(npair):
            _panel2(out, D, rows, v0, v1, start[p], start[p + 1], c0, 2 * p, min(2 * p + 1, Din - 1))
    if Dout % width:
        for p in range(npair):
            _panel2_loops(out, D, rows, v0, v1, start[p], start[p + 1], Dout - Dout % width, 2 * p,
                          min(2 * p + 1, Din - 1))
