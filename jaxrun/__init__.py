"""jaxrun: the modded-nanogpt speedrun (record #60) in JAX."""

__version__ = "0.1.0"
