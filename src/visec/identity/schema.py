"""Attribute metadata for TIT populations, and the population / query file format.

A **population** is a :class:`pandas.DataFrame` with one row per object and one column per identity
attribute; the index holds the object ids. A :class:`Schema` says, per attribute, how values are
compared and how noisy their observation is:

``kind``
    ``categorical`` (exact match of labels), ``ordinal`` (ordered ``levels``; errors go to adjacent
    levels), ``numeric`` (compared through ``bins``: strictly increasing edges, bin ``i`` is
    ``[edges[i-1], edges[i])``, open at both ends; without bins the exact value is a label) or
    ``id`` (a unique or near-unique identifier: fingerprint, phone number, face template).
``reliability``
    ``r_a`` in (0, 1]: probability that an observation equals the true (binned) value.
``confusion``
    where the other ``1 - r_a`` of the mass goes: ``uniform`` over the other values, ``adjacent``
    (neighbouring levels / bins), ``neighbours`` (an explicit look-alike map, e.g. face templates or
    homophone surnames) or ``gaussian`` (binned numeric value plus N(0, ``noise_sd``)). Every
    structured confusion is mixed with a ``leak`` share of uniform mass so nothing is ever
    eliminated outright while ``r_a < 1``. The exact model is in :mod:`visec.identity.encoding`.
``cost``
    cost of querying the attribute (used when the tracer scores information gain per unit cost).

**Files.** A population is a CSV file (first column ``object_id``, one column per attribute) plus
a JSON sidecar ``<stem>.schema.json`` next to it::

    {"format": "visec-tit-population", "version": 1, "id_column": "object_id", "leak": 0.05,
     "attributes": [{"name": "age", "kind": "numeric", "bins": [23, 28, ...], "reliability": 0.44,
                     "confusion": "gaussian", "noise_sd": 4.0, "cost": 1.0}, ...],
     "meta": {...}}

A query set is a CSV file ``query_id, true_id, <attributes...>`` (``true_id`` optional). In both
files **a missing value is an empty cell** (and only that: the string ``none`` is a real value).
Non-numeric attributes are read as strings, numeric ones as floats.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from visec.errors import DataError
from visec.identity.errors import IdentityError, SchemaError, unknown_attribute
from visec.utils import json_safe, parse_json

KINDS = ("categorical", "ordinal", "numeric", "id")
CONFUSIONS = ("uniform", "adjacent", "neighbours", "gaussian")
SCHEMA_FORMAT = "visec-tit-population"
SCHEMA_VERSION = 1
DEFAULT_LEAK = 0.05


@dataclass
class AttributeSpec:
    """How one attribute is compared and observed. See the module docstring for the fields."""

    name: str
    kind: str = "categorical"
    bins: tuple[float, ...] | None = None
    levels: tuple[Any, ...] | None = None
    reliability: float = 1.0
    confusion: str | None = None
    neighbours: Mapping[Any, Sequence[Any]] | None = None
    noise_sd: float | None = None
    cost: float = 1.0
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SchemaError(f"attribute name must be a non-empty string, got {self.name!r}")
        if self.kind not in KINDS:
            raise SchemaError(f"attribute '{self.name}': kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.bins is not None:
            if self.kind != "numeric":
                raise SchemaError(f"attribute '{self.name}': bins are only allowed for numeric attributes")
            edges = np.asarray(self.bins, dtype=float)
            if edges.ndim != 1 or len(edges) == 0 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
                raise SchemaError(f"attribute '{self.name}': bins must be finite, strictly increasing edges")
            self.bins = tuple(float(e) for e in edges)
        if self.levels is not None:
            if self.kind != "ordinal":
                raise SchemaError(f"attribute '{self.name}': levels are only allowed for ordinal attributes")
            self.levels = tuple(self.levels)
            if len(set(self.levels)) != len(self.levels) or not self.levels:
                raise SchemaError(f"attribute '{self.name}': levels must be non-empty and distinct")
        r = float(self.reliability)
        if not (0.0 < r <= 1.0) or math.isnan(r):
            raise SchemaError(f"attribute '{self.name}': reliability must be in (0, 1], got {self.reliability!r}")
        self.reliability = r
        c = float(self.cost)
        if not (c > 0.0) or not math.isfinite(c):
            raise SchemaError(f"attribute '{self.name}': cost must be a positive number, got {self.cost!r}")
        self.cost = c
        if self.confusion is None:
            self.confusion = self.default_confusion()
        if self.confusion not in CONFUSIONS:
            raise SchemaError(f"attribute '{self.name}': confusion must be one of {', '.join(CONFUSIONS)}, "
                              f"got {self.confusion!r}")
        if self.confusion == "adjacent" and not self.is_ordered:
            raise SchemaError(f"attribute '{self.name}': confusion 'adjacent' needs an ordinal or binned numeric attribute")
        if self.confusion == "gaussian":
            if self.kind != "numeric" or self.bins is None:
                raise SchemaError(f"attribute '{self.name}': confusion 'gaussian' needs a numeric attribute with bins")
            if self.noise_sd is None or not float(self.noise_sd) > 0:
                raise SchemaError(f"attribute '{self.name}': confusion 'gaussian' needs noise_sd > 0")
        if self.noise_sd is not None:
            self.noise_sd = float(self.noise_sd)
        if self.confusion == "neighbours" and self.neighbours is None:
            raise SchemaError(f"attribute '{self.name}': confusion 'neighbours' needs a neighbours map")

    @property
    def is_ordered(self) -> bool:
        return self.kind == "ordinal" or (self.kind == "numeric" and self.bins is not None)

    def default_confusion(self) -> str:
        return "adjacent" if self.is_ordered else "uniform"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.bins is not None:
            out["bins"] = list(self.bins)
        if self.levels is not None:
            out["levels"] = json_safe(self.levels)
        out["reliability"] = self.reliability
        out["confusion"] = self.confusion
        if self.noise_sd is not None:
            out["noise_sd"] = self.noise_sd
        if self.neighbours is not None:
            out["neighbours"] = json_safe({k: list(vs) for k, vs in self.neighbours.items()})
        out["cost"] = self.cost
        if self.description:
            out["description"] = self.description
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AttributeSpec":
        allowed = {"name", "kind", "bins", "levels", "reliability", "confusion", "neighbours", "noise_sd",
                   "cost", "description"}
        extra = set(d) - allowed
        if extra:
            raise SchemaError(f"attribute {d.get('name', '?')!r}: unknown schema field(s) {', '.join(sorted(extra))}")
        return cls(**dict(d))


@dataclass
class Schema:
    """Ordered attribute specs plus the uniform ``leak`` of the confusion models."""

    attributes: list[AttributeSpec]
    leak: float = DEFAULT_LEAK
    id_column: str = "object_id"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise SchemaError("attribute names in a schema must be unique")
        if not (0.0 <= float(self.leak) <= 1.0):
            raise SchemaError(f"leak must be in [0, 1], got {self.leak!r}")
        self.leak = float(self.leak)
        if self.id_column in names:
            raise SchemaError(f"id column '{self.id_column}' cannot also be an attribute")

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.attributes]

    def __getitem__(self, name: str) -> AttributeSpec:
        for a in self.attributes:
            if a.name == name:
                return a
        raise unknown_attribute(name, self.names)

    def __contains__(self, name: object) -> bool:
        return any(a.name == name for a in self.attributes)

    def __len__(self) -> int:
        return len(self.attributes)

    def subset(self, names: Iterable[str]) -> "Schema":
        return Schema([self[n] for n in names], leak=self.leak, id_column=self.id_column, meta=dict(self.meta))

    def with_reliability(self, value: float | Mapping[str, float]) -> "Schema":
        """A copy with reliabilities replaced (one number for all, or a name -> value map)."""
        out = []
        for a in self.attributes:
            d = a.to_dict()
            d["neighbours"] = a.neighbours
            d["levels"] = a.levels
            if isinstance(value, Mapping):
                if a.name in value:
                    d["reliability"] = value[a.name]
            else:
                d["reliability"] = value
            out.append(AttributeSpec.from_dict(d))
        return Schema(out, leak=self.leak, id_column=self.id_column, meta=dict(self.meta))

    def to_dict(self) -> dict[str, Any]:
        return {"format": SCHEMA_FORMAT, "version": SCHEMA_VERSION, "id_column": self.id_column,
                "leak": self.leak, "attributes": [a.to_dict() for a in self.attributes],
                "meta": json_safe(self.meta)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Schema":
        if d.get("format", SCHEMA_FORMAT) != SCHEMA_FORMAT:
            raise SchemaError(f"not a TIT population schema (format {d.get('format')!r})")
        if int(d.get("version", SCHEMA_VERSION)) > SCHEMA_VERSION:
            raise SchemaError(f"schema version {d.get('version')} is newer than this visec ({SCHEMA_VERSION})")
        attrs = d.get("attributes")
        if not isinstance(attrs, list):
            raise SchemaError("schema has no 'attributes' list")
        return cls([AttributeSpec.from_dict(a) for a in attrs], leak=d.get("leak", DEFAULT_LEAK),
                   id_column=d.get("id_column", "object_id"), meta=dict(d.get("meta", {})))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Schema":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"schema file not found: {path}")
        try:
            d = parse_json(path.read_bytes())
        except ValueError as e:  # not UTF-8, not JSON, duplicate keys, nested too deep
            raise SchemaError(f"{path}: {e}") from None
        if not isinstance(d, dict):
            raise SchemaError(f"{path}: expected a JSON object (a TIT population schema), got {type(d).__name__}")
        try:
            return cls.from_dict(d)
        except IdentityError as e:
            raise SchemaError(f"{path}: {e}") from None
        except (TypeError, ValueError, AttributeError) as e:  # a value of the wrong type in valid JSON
            reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
            raise SchemaError(f"{path}: a field holds a value of the wrong type ({reason})") from None


def infer_schema(population: pd.DataFrame) -> Schema:
    """A schema guessed from dtypes: ordered categoricals are ordinal, all-distinct columns are ids,
    everything else is categorical (numbers are matched exactly; give bins explicitly to bin them).
    All reliabilities are 1 and all costs 1."""
    specs = []
    for name in population.columns:
        col = population[name]
        levels = None
        if isinstance(col.dtype, pd.CategoricalDtype) and col.dtype.ordered:
            kind, levels = "ordinal", tuple(col.cat.categories)
        else:
            present = col.dropna()
            kind = "id" if len(present) > 1 and present.is_unique and len(present) == len(col) else "categorical"
        specs.append(AttributeSpec(str(name), kind=kind, levels=levels))
    return Schema(specs)


def resolve_schema(population: pd.DataFrame, schema: Schema | None) -> Schema:
    """``schema`` restricted/ordered to the population's columns (inferred when ``None``)."""
    if schema is None:
        return infer_schema(population)
    cols = [str(c) for c in population.columns]
    for n in schema.names:
        if n not in cols:
            raise SchemaError(f"schema attribute '{n}' is not a column of the population")
    missing = [c for c in cols if c not in schema]
    if missing:
        raise SchemaError(f"population column(s) without a schema entry: {', '.join(missing[:5])}")
    return schema.subset(cols)


# ----------------------------------------------------------------------------------------- files
def sidecar_paths(path: str | Path) -> dict[str, Path]:
    """``pop.csv`` -> ``{"population": pop.csv, "schema": pop.schema.json, "queries": pop.queries.csv}``."""
    path = Path(path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return {"population": path, "schema": path.with_name(stem + ".schema.json"),
            "queries": path.with_name(stem + ".queries.csv")}


def _csv_dtypes(schema: Schema) -> dict[str, str]:
    return {a.name: ("float64" if a.kind == "numeric" else "str") for a in schema.attributes}


def write_population(population: pd.DataFrame, schema: Schema, path: str | Path) -> dict[str, Path]:
    """Write ``path`` (CSV) and its ``.schema.json`` sidecar; returns both paths."""
    schema = resolve_schema(population, schema)
    paths = sidecar_paths(path)
    paths["population"].parent.mkdir(parents=True, exist_ok=True)
    df = population.copy()
    df.index = df.index.rename(schema.id_column)
    df.to_csv(paths["population"], index=True)
    schema.save(paths["schema"])
    return {"population": paths["population"], "schema": paths["schema"]}


def read_population(path: str | Path, schema: str | Path | Schema | None = None) -> tuple[pd.DataFrame, Schema]:
    """Read a population CSV and its schema (default: the ``.schema.json`` sidecar next to it)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"population file not found: {path}")
    if not isinstance(schema, Schema):
        schema = Schema.load(schema if schema is not None else sidecar_paths(path)["schema"])
    dtypes = _csv_dtypes(schema)
    dtypes[schema.id_column] = "str"
    try:
        df = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=[""])
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot read population CSV ({str(e).splitlines()[0]})") from None
    if schema.id_column not in df.columns:
        raise DataError(f"{path}: no '{schema.id_column}' column")
    df = df.set_index(schema.id_column)
    if df.index.hasnans or not df.index.is_unique:
        raise DataError(f"{path}: object ids must be present and unique")
    return df, resolve_schema(df, schema)


def write_queries(queries: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = queries.copy()
    df.index = df.index.rename("query_id")
    df.to_csv(path, index=True)
    return path


def read_queries(path: str | Path, schema: Schema) -> pd.DataFrame:
    """Read a query CSV (``query_id``, optional ``true_id``, attribute columns; empty cell = missing)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"query file not found: {path}")
    dtypes = _csv_dtypes(schema)
    dtypes.update({"query_id": "str", "true_id": "str"})
    try:
        df = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=[""])
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"{path}: cannot read query CSV ({str(e).splitlines()[0]})") from None
    if "query_id" in df.columns:
        df = df.set_index("query_id")
    unknown = [c for c in df.columns if c != "true_id" and c not in schema]
    if unknown:
        raise unknown_attribute(unknown[0], schema.names)
    return df


# ----------------------------------------------------------------------------------------- helpers
def check_population(population: Any) -> pd.DataFrame:
    if not isinstance(population, pd.DataFrame):
        raise IdentityError(f"population must be a pandas DataFrame, got {type(population).__name__}")
    if len(population) == 0:
        raise IdentityError("population is empty (no objects)")
    return population
