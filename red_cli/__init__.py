"""red: an RLHF experiment runner for token-level reward redistribution."""

__version__ = "0.1.0"
