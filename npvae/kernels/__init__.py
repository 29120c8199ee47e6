"""Hot kernels in two twins: ``reference`` (readable NumPy, the truth) and ``fast`` (Numba).

Both modules expose the same functions with the same signatures. Activations are passed to the
kernels as small integer codes (Numba compiles one specialisation per code type, not per string).
"""

ACTIVATIONS = {
    "identity": 0,
    "relu": 1,
    "leaky_relu": 2,
    "tanh": 3,
    "sigmoid": 4,
    "softplus": 5,
}

# the codes as names, for the kernels' branches (reference.py and the compiled loops import these)
IDENTITY, RELU, LEAKY_RELU, TANH, SIGMOID, SOFTPLUS = (ACTIVATIONS[name] for name in (
    "identity", "relu", "leaky_relu", "tanh", "sigmoid", "softplus"))

KERNEL_NAMES = (
    "activation_forward",
    "activation_backward",
    "dense_forward",
    "dense_backward",
    "sparse_rows",
    "sparse_matmul",
    "sparse_matmul_tn",
    "gather_add",
    "bernoulli_nll",
    "gaussian_kl",
    "adam_update",
    "adam_update_many",
    "count_nonfinite",
)


def activation_code(name):
    """Integer code of an activation name; raises ValueError listing the known names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        known = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {name!r}; expected one of: {known}") from None
