"""Cadenza: find similar 10-second musical moments across a library, and explain them."""

__version__ = "0.1.0"
