"""A user's own norm class, named by import path (``norm=custom norm._target_=my_pkg.norms.MyNorm``).

The class is imported, built as ``cls(num_features, **options)`` and checked once at start-up against
the interface every model relies on, so a class that does not fit stops the run with one line naming
what is missing instead of a stack trace mid-training:

- ``forward(x, mask)`` with ``x[B, T, C]``, ``mask[B, T]`` (True = real token), returning ``x``'s shape;
- the same on one recurrent time step: ``x[B, C]``, ``mask[B]``;
- finite outputs when a row of the batch is all padding (a padded position's output still reaches the
  loss, as 0 * output in a masked mean), in training and in eval mode.

A class may declare ``uses_batch_stats = True`` (its output at a token depends on other examples;
then ``norm.sync`` is passed to it if its constructor takes ``sync``) and ``per_token`` (the output at a
token depends on that token alone; the default is ``not uses_batch_stats``), as the built-in norms do.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from typing import Any

import torch
from torch import Tensor, nn

from normbench.errors import ConfigError
from normbench.norms import SequenceNorm

#: the config key naming the class (Hydra's convention)
TARGET = "_target_"
#: interface checks already passed in this process: (target, options, num_features)
_checked: set[tuple[str, str, int]] = set()


class CustomNorm(SequenceNorm):
    """Adapter between a user's norm and the models: always passes a mask tensor, passes the recurrent
    time step only to a forward that takes ``step``, and carries the class's declarations."""

    def __init__(self, inner: nn.Module, num_features: int, label: str) -> None:
        super().__init__(num_features)
        self.inner, self.label = inner, label
        self.uses_batch_stats = bool(getattr(inner, "uses_batch_stats", False))
        self.per_token = bool(getattr(inner, "per_token", not self.uses_batch_stats))
        self.takes_step = "step" in inspect.signature(inner.forward).parameters

    def forward(self, x: Tensor, mask: Tensor | None = None, step: int | None = None) -> Tensor:
        if mask is None:
            mask = x.new_ones(x.shape[:-1], dtype=torch.bool)
        return self.inner(x, mask, step=step) if self.takes_step else self.inner(x, mask)


def import_class(target: Any) -> type:
    """The class ``target`` names (``package.module.Class``), or a one-line ConfigError."""
    if not isinstance(target, str) or "." not in target or target == "???":
        raise ConfigError(
            f"norm=custom needs norm._target_=<module>.<Class> naming your norm class, got {target!r}; "
            "accepted: an importable dotted path such as my_pkg.norms.MyNorm"
        )
    module_name, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(
            f"norm._target_={target} cannot be imported ({type(err).__name__}: {err}); "
            "accepted: a class importable from the Python path (PYTHONPATH)"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"norm._target_={target} is {type(cls).__name__} {cls!r}; accepted: a torch.nn.Module class")
    return cls


def build_custom_norm(cls: type, target: str, options: dict[str, Any], label: str, num_features: int) -> CustomNorm:
    """A user's class ``cls`` (named ``target`` in the config) built with its constructor ``options`` (the
    norm config less normbench's keys: normbench.norm_factory), adapted to the interface and checked once."""
    try:
        inner = cls(num_features, **options)
    except TypeError as err:
        accepted = list(inspect.signature(cls.__init__).parameters)[1:]
        raise ConfigError(
            f"norm._target_={target}: {cls.__name__}(num_features, **options) failed ({err}); "
            f"accepted: __init__({', '.join(accepted)})"
        ) from None
    norm = CustomNorm(inner, num_features, label)
    key = (target, repr(sorted(options.items())), num_features)
    if key not in _checked:
        problem = interface_problem(norm, num_features)
        if problem:
            raise ConfigError(f"norm._target_={target} does not fit the norm interface: {problem}")
        _checked.add(key)
    return norm


def _probe_inputs(num_features: int) -> tuple[Tensor, Tensor]:
    """``x[4, 6, C]`` and a mask with padded rows of different lengths, row 1 all padding."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, num_features, generator=gen) * 2.0 + 0.5
    mask = torch.arange(6)[None, :] < torch.tensor([6, 0, 3, 5])[:, None]
    return x, mask


def _call(norm: CustomNorm, x: Tensor, mask: Tensor) -> tuple[Tensor | None, str | None]:
    shapes = f"x{list(x.shape)}, mask{list(mask.shape)}"
    try:
        out = norm(x, mask)
    except Exception as err:  # noqa: BLE001  (any failure of user code is reported as one line)
        message = str(err).splitlines()[0] if str(err) else ""
        return None, f"forward({shapes}) raised {type(err).__name__}: {message}"
    if not isinstance(out, Tensor):
        return None, f"forward({shapes}) returned {type(out).__name__}; accepted: a tensor of x's shape"
    if out.shape != x.shape:
        return None, f"forward({shapes}) returned shape {list(out.shape)}; accepted: x's shape {list(x.shape)}"
    return out, None


@torch.no_grad()
def interface_problem(norm: CustomNorm, num_features: int) -> str | None:
    """What ``norm`` (on a copy, so running statistics stay untouched) gets wrong, or None."""
    forward = norm.inner.forward
    try:
        inspect.signature(forward).bind(torch.empty(0), torch.empty(0))
    except TypeError:
        return f"forward{inspect.signature(forward)} cannot be called as forward(x, mask)"
    x, mask = _probe_inputs(num_features)
    for training in (True, False):
        probe = copy.deepcopy(norm).train(training)
        mode = "training" if training else "eval"
        for inputs in ((x, mask), (x[:, 0], mask[:, 2])):  # a sequence batch, then one recurrent time step
            out, problem = _call(probe, *inputs)
            if problem:
                return f"{problem} (in {mode} mode)"
        out, _ = _call(probe, x, mask)
        if not torch.isfinite(out).all():
            where = "at real tokens" if not torch.isfinite(out[mask]).all() else "at padding positions"
            return (
                f"NaN/inf output {where} in {mode} mode for a batch with an all-padding row (mask[1] all False); "
                "accepted: finite outputs everywhere (a padded position still reaches the loss as 0 * output)"
            )
    return None
