"""M2's encoder on rows [x, onehot(y)] with its first layer's x W_x computed once per image.

    a = x W_x + y W_y + b,   h = f(a),   then the encoder MLP's other layers

For the K enumerated copies of an unlabelled batch x W_x is the same in every copy, so it is computed once
and broadcast (a K-fold saving on the largest matrix product of an M2 step); the backward sums the copies'
da before the one product dW_x = x^T sum_y da_y. For a one-hot y, y W_y is row y of W_y (the product
adds only exact zeros to it, so taking the row gives the same bits): the kernel ``gather_add`` builds
a = (x W_x + y W_y) + b in one pass from rows of x W_x and W_y. Machinery of the fast path, kept beside the
readable objective in ``m2.py``: it computes exactly what ``MLP.forward`` on the stacked rows would.
"""

import numpy as np

from npvae import functional as F
from npvae.backend import get_backend


class SharedFirstLayerEncoder:
    """An MLP on [x, y] rows, x the first ``x_dim`` columns, whose rows repeat images ``copies`` times.

    mlp: the encoder MLP (its params and grads are used in place); buffers: a ``layers.Buffers`` for the
    reused arrays (shared with the model).
    """

    def __init__(self, mlp, x_dim, backend=None, buffers=None):
        self.mlp, self.x_dim, self.backend, self.buffers = mlp, x_dim, backend, buffers
        self.cache = None

    def _scratch(self, name, shape, dtype, reuse):
        return self.buffers.get(name, shape, dtype) if reuse else np.empty(shape, dtype)

    def forward(self, x_src, n_single, copies, Y, reuse=True, labels=None):
        """Encoder output for rows [x_src[:n_single]; x_src[n_single:] repeated ``copies`` times], with y = Y.

        x_src: (n_single + B_u, D); Y: (n_single + copies * B_u, K); labels: (rows,) integers with
        Y = onehot(labels) (then y W_y is row labels[i] of W_y: no product), or None (Y soft, e.g. Gumbel-Softmax).
        Returns (rows, 2J). reuse=True: the layers after the first write into their reused arrays (copy the
        result to keep it).
        """
        first = self.mlp.layers[0]
        W, b, D = first.params["W"], first.params["b"], self.x_dim
        H, rows, dt = W.shape[1], len(Y), W.dtype
        # once per image; images are mostly zeros, which the fast backend's product skips
        ax = get_backend(self.backend).sparse_matmul(x_src, W[:D], out=self._scratch("enc_ax", (len(x_src), H), dt, reuse))
        image = self._scratch("enc_image", (rows,), np.intp, reuse)    # the row of ax of each row
        image[:n_single] = np.arange(n_single)
        image[n_single:].reshape(copies, -1)[...] = np.arange(n_single, len(x_src))   # the K copies
        if labels is None:   # soft y: y W_y is a product, row i of it for row i
            ay = np.matmul(Y, W[D:], out=self._scratch("enc_ay", (rows, H), dt, reuse))
            labels = np.arange(rows)
        else:
            ay = W[D:]
        # a = (x W_x + y W_y) + b in one pass over a, the copies included (docs/performance.md, issue 17)
        a = get_backend(self.backend).gather_add(ax, image, ay, labels, b,
                                                 out=self._scratch("enc_a", (rows, H), dt, reuse))
        h, act_cache = F.activation_forward(a, first.activation, first.alpha, self.backend,
                                            out=self._scratch("enc_h", (rows, H), dt, reuse))
        self.cache = (x_src, n_single, copies, Y, act_cache)
        for layer in self.mlp.layers[1:]:
            h = layer.forward(h, reuse=reuse)
        return h

    def backward(self, dout, need_dY, reuse=True):
        """Backward of ``forward``; fills the MLP's grads. dout: (rows, 2J). Returns dY (rows, K) or None."""
        for layer in reversed(self.mlp.layers[1:]):
            dout = layer.backward(dout, reuse=reuse)
        x_src, n_single, copies, Y, act_cache = self.cache
        self.cache = None
        first = self.mlp.layers[0]
        W, D = first.params["W"], self.x_dim
        H, dt = W.shape[1], W.dtype
        da = F.activation_backward(dout, act_cache, self.backend, out=self._scratch("enc_da", dout.shape, dt, reuse))
        da_src = da
        if copies > 1:   # sum the copies of each unlabelled image: sum_y da_(y, b)
            da_src = self._scratch("enc_da_src", (len(x_src), H), dt, reuse)
            da_src[:n_single] = da[:n_single]
            np.sum(da[n_single:].reshape(copies, -1, H), axis=0, out=da_src[n_single:])
        # dW_x = x^T sum_y da_y (given): images are mostly zeros, which the fast backend's product skips
        get_backend(self.backend).sparse_matmul_tn(x_src, da_src, out=first.grads["W"][:D])
        # BEGIN SOLUTION 1.2
        np.matmul(Y.T, da, out=first.grads["W"][D:])
        first.grads["b"][...] = da.sum(axis=0)
        return da @ W[D:].T if need_dY else None
        # END SOLUTION
