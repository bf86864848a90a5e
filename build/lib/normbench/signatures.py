"""What a constructor accepts, following ``**kwargs`` up to the parents it passes them on to.

Read from the objects (the norm factory's one-line refusal of an option no class takes) or from the source,
without importing it (the config schemas, registered before Hydra composes: importing the classes would
bring torch and Lightning into every command, one refused at once included, at seconds each).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: a parameter without a default
REQUIRED = inspect.Parameter.empty


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


def source_defaults(target: str) -> dict[str, Any]:
    """``{parameter: default}`` of ``target(...)`` (``package.module.Name``, a class or a function) read from its
    source file, the same walk as ``constructor_parameters``; a default that is not a literal is left out, and so
    is a parent outside the source tree (the walk stops there)."""
    found: dict[str, Any] = {}
    for function in _inits(*target.rsplit(".", 1)):
        takes_kwargs = function.args.kwarg is not None
        args = function.args
        positional = [*args.posonlyargs, *args.args]
        pairs = [
            *zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True),
            *zip(args.kwonlyargs, args.kw_defaults, strict=True),
        ]
        for arg, node in pairs:
            if node is None or arg.arg in found:
                continue
            try:
                value = ast.literal_eval(node)
            except ValueError:
                continue
            found[arg.arg] = list(value) if isinstance(value, tuple) else value
        if not takes_kwargs:
            break
    return found


def _inits(module: str, name: str) -> Iterator[ast.FunctionDef]:
    """The function, or each ``__init__`` up the class's first bases, as the source defines them."""
    while True:
        tree = _module_tree(module)
        node = (
            next((n for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef) and n.name == name), None)
            if tree
            else None
        )
        if node is None:
            return
        if isinstance(node, ast.FunctionDef):
            yield node
            return
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        if init is not None:
            yield init
        if not node.bases or not isinstance(node.bases[0], ast.Name):
            return  # no base, or one reached as an attribute (L.LightningDataModule): outside the source tree
        base = node.bases[0].id
        module = next(
            (
                imp.module
                for imp in tree.body
                if isinstance(imp, ast.ImportFrom) and any(a.name == base and a.asname is None for a in imp.names)
            ),
            module,
        )
        name = base


@functools.cache
def _module_tree(module: str) -> ast.Module | None:
    """The parsed source of ``module``, found from its top-level package alone (a subpackage's ``__init__``
    may import torch), or None outside a source tree."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None:
        return None
    if not spec.submodule_search_locations:  # a top-level module
        path = Path(spec.origin or "") if not rest else Path()
    else:
        base = Path(next(iter(spec.submodule_search_locations)), *rest)
        path = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
    return ast.parse(path.read_text()) if path.suffix == ".py" and path.is_file() else None
