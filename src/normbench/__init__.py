"""normbench: measure where batch normalization breaks down in sequence models."""

__version__ = "0.1.0"
