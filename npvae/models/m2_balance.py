"""The label-balance term of M2 (off unless asked for; npvae train m2 asks for 20): on the unlabelled batch,

    R = lam KL(qbar || uniform) = lam sum_k qbar_k log(K qbar_k),   qbar = mean_b q(y|x_b)

It keeps the predicted class frequencies near uniform. Why it helps (docs/m2.md, "Label balance"): with few
labels, q(y|x) is nearly hard on the unlabelled images after the first epoch, so the unlabelled gradient
into the logits, q_k (g_k - E_q g), vanishes and two digits merged into one class stay merged.

Gradient, with a_b the classifier logits of unlabelled example b and q_b = softmax(a_b):
    dR/dqbar_k = lam (log(K qbar_k) + 1),   dqbar_k/da_bj = q_bk (delta_kj - q_bj) / B_u
    dR/da_bj   = (lam / B_u) q_bj (log qbar_j - sum_k q_bk log qbar_k)          (the constants cancel)

Everything is float64. log qbar is a log-sum-exp of the log q's (a mean of exps could underflow to
log 0 for a class every image rules out).
"""

import numpy as np


def balance_forward(log_q, lam, floor=0.0):
    """R and the cache of ``balance_backward``. log_q: (B_u, K) log q(y|x) of the unlabelled batch (B_u >= 1);
    lam >= 0; q below ``floor`` counts as 0 in the gradient (M2 passes its ROW_WEIGHT_FLOOR, so no subnormal
    gradients). Returns (R: float, cache)."""
    log_q = np.asarray(log_q, dtype=np.float64)
    B, K = log_q.shape
    m = log_q.max(axis=0)
    log_qbar = m + np.log(np.exp(log_q - m).sum(axis=0)) - np.log(B)
    R = lam * float(np.sum(np.exp(log_qbar) * (log_qbar + np.log(K))))
    q = np.exp(log_q)
    q[q < floor] = 0.0
    return R, (lam / B, q, log_qbar)


def balance_backward(cache):
    """dR/da for the unlabelled logits a: (B_u, K) float64."""
    scale, q, log_qbar = cache
    return scale * q * (log_qbar - (q @ log_qbar)[:, None])
