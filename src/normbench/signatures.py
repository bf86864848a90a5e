"""What a constructor accepts, following ``**kwargs`` up to the parents it passes them on to.

One reading of the signatures for the config schemas (each default stated once, in the code:
normbench.cli.schemas) and for the norm factory's one-line refusal of an option no class takes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def constructor_parameters(target: Callable[..., Any]) -> list[inspect.Parameter]:
    """The named parameters of ``target(...)`` (``self`` and ``**kwargs`` left out); a class's ``**kwargs``
    adds the parameters of the next ``__init__`` up its MRO, the nearest class's default winning."""
    found: dict[str, inspect.Parameter] = {}
    inits = (
        [k.__dict__["__init__"] for k in target.__mro__ if "__init__" in k.__dict__]
        if isinstance(target, type)
        else [target]
    )
    for init in inits:
        params = list(inspect.signature(init).parameters.values())
        for param in params:
            if param.name != "self" and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                found.setdefault(param.name, param)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return list(found.values())
