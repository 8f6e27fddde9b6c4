"""jax-triton GPU kernels, imported as jaxrun.kernels (see jaxrun/ops.py for the backends that use them)."""
