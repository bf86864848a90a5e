"""normbench: measure where batch normalization breaks down in sequence models."""

__version__ = "0.1.0"

from normbench.cli.resolvers import register as _register_resolvers

_register_resolvers()  # config resolvers conf/train.yaml uses, wherever normbench is imported (Hydra's workers too)
