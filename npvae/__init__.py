"""npvae: variational autoencoders built from scratch in NumPy, with hand-written gradients."""

__version__ = "0.1.0"
