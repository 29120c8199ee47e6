"""Layers with explicit forward/backward: ``Dense`` (affine + optional fused activation), activation
layers, and the ``MLP`` container.

Every layer holds ``params`` and ``grads``: dicts with matching names whose arrays keep their identity
for the layer's lifetime (backward writes gradients in place), so an optimizer can hold references.
The forward pass stores its cache on the layer (``self.cache``); backward consumes it.

``reuse=True`` (forward and backward of ``Dense`` and ``MLP``) writes the outputs into arrays the layer
keeps, one set per batch size, instead of allocating new ones: a training step then allocates nothing
large. The returned arrays are overwritten by the layer's next ``reuse=True`` call with the same batch
size, so use them before that (a model's step does; copy them otherwise).
"""

import numpy as np

from npvae import functional as F
from npvae.init import default_scheme, init_weight
from npvae.kernels import activation_code


class Buffers:
    """Arrays reused from one training step to the next: one per (name, shape, dtype), allocated once.

    ``get`` returns the same array every time it is asked for the same name, shape and dtype. Beyond
    ``max_arrays`` (a few batch sizes' worth) all are dropped and allocated afresh.
    """

    def __init__(self, max_arrays=32):
        self.max_arrays = max_arrays
        self._arrays = {}

    def get(self, name, shape, dtype):
        """The array called ``name`` of this shape and dtype (uninitialised the first time)."""
        key = (name, shape, dtype)
        buf = self._arrays.get(key)
        if buf is None:
            if len(self._arrays) >= self.max_arrays:
                self._arrays.clear()
            buf = self._arrays[key] = np.empty(shape, dtype=dtype)
        return buf


class Layer:
    """Base class: a layer maps (B, Din) -> (B, Dout) and back-propagates (B, Dout) -> (B, Din)."""

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.cache = None
        self.buffers = Buffers()

    def _pop_cache(self):
        if self.cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        cache, self.cache = self.cache, None
        return cache

    def zero_grad(self):
        for g in self.grads.values():
            g[...] = 0


class Activation(Layer):
    """h = f(a) elementwise; no parameters."""

    name = None

    def __init__(self, name=None, alpha=0.01, backend=None):
        super().__init__()
        self.name = name or self.name
        activation_code(self.name)  # validates the name early
        self.alpha = alpha
        self.backend = backend

    def forward(self, a):
        """a: (B, D) -> h: (B, D)."""
        h, self.cache = F.activation_forward(a, self.name, self.alpha, self.backend)
        return h

    def backward(self, dh):
        """dh: (B, D) -> da: (B, D)."""
        return F.activation_backward(dh, self._pop_cache(), self.backend)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Identity(Activation):
    """f(a) = a."""

    name = "identity"


class ReLU(Activation):
    """f(a) = max(a, 0)."""

    name = "relu"


class LeakyReLU(Activation):
    """f(a) = a if a > 0 else alpha a."""

    name = "leaky_relu"


class Tanh(Activation):
    """f(a) = tanh(a); f' = 1 - f^2."""

    name = "tanh"


class Sigmoid(Activation):
    """f(a) = 1 / (1 + e^{-a}); f' = f (1 - f)."""

    name = "sigmoid"


class Softplus(Activation):
    """f(a) = log(1 + e^a); f' = sigmoid(a)."""

    name = "softplus"


# name -> activation layer class, in the order of npvae.kernels.ACTIVATIONS
ACTIVATION_LAYERS = {cls.name: cls for cls in Activation.__subclasses__()}


class Dense(Layer):
    """h = f(x W + b), with the activation f fused into the same kernel (identity by default).

    W: (in_dim, out_dim), b: (out_dim,), initialised by ``init`` (He for ReLU-like f, Glorot otherwise)
    from the Generator ``rng``; bias zero. dtype is kept: float32 for training, float64 for checks.
    sparse_input: the input is mostly zeros (images): the fast backend's x W and x^T da skip them.
    """

    def __init__(self, in_dim, out_dim, activation="identity", *, rng, dtype=np.float32, init=None,
                 alpha=0.01, backend=None, sparse_input=False):
        super().__init__()
        self.sparse_input = bool(sparse_input)
        if int(in_dim) < 1 or int(out_dim) < 1:
            raise ValueError(f"Dense sizes must be positive, got in_dim={in_dim}, out_dim={out_dim}")
        activation_code(activation)
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.activation, self.alpha, self.backend = activation, alpha, backend
        scheme = init or default_scheme(activation)
        self.params = {
            "W": init_weight(self.in_dim, self.out_dim, scheme, rng, dtype),
            "b": np.zeros(self.out_dim, dtype=dtype),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    @property
    def dtype(self):
        return self.params["W"].dtype

    def forward(self, x, reuse=False):
        """x: (B, in_dim) -> h: (B, out_dim); reuse=True writes h into the layer's reused arrays."""
        if x.dtype != self.dtype:
            raise TypeError(
                f"Dense({self.in_dim}, {self.out_dim}) holds {self.dtype} weights but got {x.dtype} input; "
                "cast the input or build the layer with a matching dtype"
            )
        out = None
        if reuse:
            shape = (x.shape[0], self.out_dim)
            out = (self.buffers.get("h", shape, x.dtype), self.buffers.get("a", shape, x.dtype))
        h, self.cache = F.dense_forward(x, self.params["W"], self.params["b"], self.activation,
                                        self.alpha, self.backend, out=out, sparse_x=self.sparse_input)
        return h

    def backward(self, dh, need_dx=True, reuse=False):
        """dh: (B, out_dim) -> dx: (B, in_dim) (None when need_dx is False); writes self.grads in place.

        reuse=True writes dx (and the intermediate da) into the layer's reused arrays.
        """
        cache = self._pop_cache()
        dx_buf = da_buf = None
        if reuse:
            B, dt = dh.shape[0], self.dtype
            dx_buf = self.buffers.get("dx", (B, self.in_dim), dt) if need_dx else None
            da_buf = self.buffers.get("da", (B, self.out_dim), dt)
        dx, _, _ = F.dense_backward(dh, cache, need_dx, self.backend,
                                    out=(dx_buf, self.grads["W"], self.grads["b"], da_buf))
        return dx

    def __repr__(self):
        return f"Dense({self.in_dim}, {self.out_dim}, activation={self.activation!r})"


class MLP(Layer):
    """A chain of Dense layers: sizes [D0, D1, ..., DL]; hidden layers use ``activation``, the last
    ``out_activation`` (identity by default, so the output is a logit / mean / log-variance).

    Parameters are exposed flat as ``"{i}.W"``, ``"{i}.b"`` (the same arrays the layers hold).
    sparse_input: the input is mostly zeros (images): the first layer's products skip them (fast backend).
    """

    def __init__(self, sizes, activation="relu", out_activation="identity", *, rng, dtype=np.float32,
                 init=None, alpha=0.01, backend=None, sparse_input=False):
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ValueError(f"MLP needs at least an input and an output size, got sizes={sizes}")
        n = len(sizes) - 1
        self.sizes = sizes
        self.layers = [
            Dense(sizes[i], sizes[i + 1], activation if i < n - 1 else out_activation, rng=rng,
                  dtype=dtype, init=init, alpha=alpha, backend=backend, sparse_input=sparse_input and i == 0)
            for i in range(n)
        ]
        for i, layer in enumerate(self.layers):
            for k in layer.params:
                self.params[f"{i}.{k}"] = layer.params[k]
                self.grads[f"{i}.{k}"] = layer.grads[k]

    @property
    def in_dim(self):
        return self.sizes[0]

    @property
    def out_dim(self):
        return self.sizes[-1]

    def forward(self, x, reuse=False):
        """x: (B, D0) -> (B, DL); reuse=True: every layer writes into its reused arrays."""
        for layer in self.layers:
            x = layer.forward(x, reuse=reuse)
        return x

    def backward(self, dh, need_dx=True, reuse=False):
        """dh: (B, DL) -> dx: (B, D0) (None when need_dx is False); fills self.grads."""
        for i in range(len(self.layers) - 1, -1, -1):
            dh = self.layers[i].backward(dh, need_dx=need_dx or i > 0, reuse=reuse)
        return dh

    def __repr__(self):
        return "MLP(" + ", ".join(repr(l) for l in self.layers) + ")"


def prefixed(prefix, d):
    """{"{prefix}.{k}": v} — how models name the parameters of their sub-networks."""
    return {f"{prefix}.{k}": v for k, v in d.items()}
