"""TIT and its baselines as named tracers: the :data:`TRACERS` registry and :func:`make_tracer`.

Every entry is a factory ``(population, schema, **tracer_kwargs) -> Tracer``; its summary is the
label the reports print. An unknown name gets the registry's one-line "did you mean" error.
"""

from __future__ import annotations

from typing import Any

from visec.identity.schema import Schema
from visec.identity.tracer import Tracer
from visec.registry import Registry

#: method name -> factory ``(population, schema, **tracer_kwargs) -> Tracer``
TRACERS = Registry("TIT method")
METHODS = TRACERS  # the name visec.identity exported before the registry
BASELINES = ("face_only", "random_order", "most_unique_first", "naive_bayes_all")


@TRACERS.register("tit", summary="TIT (expected information gain)")
def _tit(pop: Any, schema: Schema | None, **kw: Any) -> Tracer:
    return Tracer(pop, schema, policy="eig", name=kw.pop("name", "tit"), **kw)


@TRACERS.register("tit_cost", summary="TIT (gain per cost)")
def _tit_cost(pop: Any, schema: Schema | None, **kw: Any) -> Tracer:
    return Tracer(pop, schema, policy="eig", use_cost=True, name=kw.pop("name", "tit_cost"), **kw)


@TRACERS.register("face_only", summary="face-ID only")
def _face_only(pop: Any, schema: Schema | None, *, face_attribute: str = "face_id", **kw: Any) -> Tracer:
    kw.pop("epsilon", None)
    kw.pop("tau", None)
    return Tracer(pop, schema, policy="fixed", attributes=[face_attribute], order=[face_attribute],
                  decision="argmax", name=kw.pop("name", "face_only"), **kw)


@TRACERS.register("random_order", summary="random attribute order")
def _random_order(pop: Any, schema: Schema | None, **kw: Any) -> Tracer:
    return Tracer(pop, schema, policy="random", name=kw.pop("name", "random_order"), **kw)


@TRACERS.register("most_unique_first", summary="fixed most-unique-first order")
def _most_unique_first(pop: Any, schema: Schema | None, **kw: Any) -> Tracer:
    return Tracer(pop, schema, policy="fixed", name=kw.pop("name", "most_unique_first"), **kw)


@TRACERS.register("naive_bayes_all", summary="all-attributes naive Bayes")
def _naive_bayes_all(pop: Any, schema: Schema | None, **kw: Any) -> Tracer:
    return Tracer(pop, schema, policy="all", name=kw.pop("name", "naive_bayes_all"), **kw)


def make_tracer(method: str, population: Any, schema: Schema | None = None, **kwargs: Any) -> Tracer:
    """Build the tracer of a named method (``tit``, ``tit_cost`` or one of :data:`BASELINES`)."""
    factory = TRACERS.get(method).obj  # raises RegistryError with "did you mean"
    if method != "face_only":
        kwargs.pop("face_attribute", None)
    return factory(population, schema, **kwargs)
