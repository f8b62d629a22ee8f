"""River models in one line: ``river.preprocessing.StandardScaler|linear_model.LinearRegression``.

A spec is a Python-like expression over River's modules, parsed with
:mod:`ast` and built by walking the tree — never ``eval``-ed, because a spec
comes from configuration and configuration must not be a way to run code.
Allowed:

* ``module.Class`` or ``module.Class(arg, key=value)``: a class of a public
  River module (``river.`` in front is optional), or ``selflearn.Class`` for
  the River estimators of :mod:`projections.learners.river_parts`, that is a
  River object (``river.base.Base``: estimators, transformers, optimizers,
  losses, stats); a bare class is called without arguments;
* arguments: literals (numbers, strings, tuples, lists, dicts, ``None``,
  booleans), other River objects, or ``math.log1p`` / ``math.expm1`` /
  ``math.log`` / ``math.exp`` (for ``compose.TargetTransformRegressor``);
* ``a | b`` (a River pipeline) and ``a + b`` (a union of transformers).

Anything else (names, attribute access on objects, lambdas, comprehensions,
``**kwargs``) is refused with :class:`SpecError`.

>>> model = build("river.preprocessing.StandardScaler|linear_model.LinearRegression")
>>> [type(step).__name__ for step in model.steps.values()]
['StandardScaler', 'LinearRegression']
>>> build("feature_extraction.TFIDF(on='title') | linear_model.PARegressor(C=0.1)")[-1].C
0.1
>>> try:
...     build("__import__('os').system('true')")
... except SpecError as exc:
...     print(exc)
River spec "__import__('os').system('true')": "__import__('os').system" is not a dotted name
>>> try:
...     build("os.system")
... except SpecError as exc:
...     print(str(exc)[:40])
'river.os.system' is not a River class (
"""

from __future__ import annotations

import ast
import importlib
import math
import pkgutil
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import river
from river import base

PREFIX = "river."
OWN = "selflearn"  # ``selflearn.X``: River estimators of projections.learners.river_parts
_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "math.log1p": math.log1p, "math.expm1": math.expm1, "math.log": math.log, "math.exp": math.exp,
}


class SpecError(ValueError):
    """A River spec that is not valid (syntax, unknown class, forbidden construct)."""


@lru_cache(maxsize=1)
def _modules() -> frozenset[str]:
    return frozenset(m.name for m in pkgutil.iter_modules(river.__path__)
                     if not m.name.startswith("_"))


def is_spec(name: str) -> bool:
    """True when ``name`` is a River spec rather than a registered learner name.

    >>> is_spec("river.linear_model.LinearRegression"), is_spec("knn_median")
    (True, False)
    """
    return name.startswith(PREFIX)


def build(spec: str) -> base.Estimator:
    """A fresh River estimator (or pipeline) from ``spec``; see the module docstring."""
    text = spec[len(PREFIX):] if spec.startswith(PREFIX) else spec
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise SpecError(f"River spec {spec!r} is not an expression: {exc.msg}") from exc
    model = _object(tree.body, spec)
    if not isinstance(model, base.Estimator):
        raise SpecError(f"River spec {spec!r} builds a {type(model).__name__}, not an estimator")
    return model


def _object(node: ast.expr, spec: str) -> Any:
    """A River object from an expression node."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr | ast.Add):
        left, right = _object(node.left, spec), _object(node.right, spec)
        return left | right if isinstance(node.op, ast.BitOr) else left + right
    if isinstance(node, ast.Call):
        cls = _class(node.func, spec)
        if any(kw.arg is None for kw in node.keywords):
            raise SpecError(f"River spec {spec!r}: **kwargs are not allowed")
        args = [_value(a, spec) for a in node.args]
        kwargs = {kw.arg: _value(kw.value, spec) for kw in node.keywords if kw.arg}
        try:
            return cls(*args, **kwargs)
        except (TypeError, ValueError) as exc:
            raise SpecError(f"River spec {spec!r}: {cls.__name__}: {exc}") from exc
    if isinstance(node, ast.Attribute | ast.Name):
        return _class(node, spec)()
    raise SpecError(f"River spec {spec!r}: {ast.unparse(node)!r} is not a River class or call")


def _value(node: ast.expr, spec: str) -> Any:
    """An argument: a literal, an allowed math function or another River object."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    dotted = _dotted(node)
    if dotted in _FUNCTIONS:
        return _FUNCTIONS[dotted]
    return _object(node, spec)


def _dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _class(node: ast.expr, spec: str) -> type:
    """The River class a dotted name refers to (``river.`` optional)."""
    dotted = _dotted(node)
    if dotted is None:
        raise SpecError(f"River spec {spec!r}: {ast.unparse(node)!r} is not a dotted name")
    parts = dotted.split(".")
    if parts[0] == "river":
        parts = parts[1:]
    shown = "river." + ".".join(parts)
    if len(parts) < 2 or parts[0] not in _modules() | {OWN} or any(
            p.startswith("_") for p in parts):
        raise SpecError(f"{shown!r} is not a River class (write module.Class, "
                        f"e.g. linear_model.LinearRegression) in spec {spec!r}")
    module = "projections.learners.river_parts" if parts[0] == OWN else f"river.{parts[0]}"
    obj: Any = importlib.import_module(module)
    for part in parts[1:]:
        obj = getattr(obj, part, None)
        if obj is None:
            raise SpecError(f"{shown!r} does not exist (River {river.__version__}) "
                            f"in spec {spec!r}")
    if not (isinstance(obj, type) and issubclass(obj, base.Base)):
        raise SpecError(f"{shown!r} is not a River class in spec {spec!r}")
    return obj
