"""Errors raised by :mod:`visec.identity`; all are :class:`visec.errors.VisecError` (one-line messages)."""

from __future__ import annotations

from typing import Iterable

from visec.errors import VisecError
from visec.utils import did_you_mean


class IdentityError(VisecError, ValueError):
    """Bad input to the identity model or tracer (empty population, bad parameter, ...)."""


class SchemaError(IdentityError):
    """An attribute schema (kind, bins, levels, reliability, cost, ...) is invalid."""


class UnknownAttributeError(IdentityError, KeyError):
    """An attribute name is not a column of the population."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ObjectIndexError(IdentityError, IndexError):
    """An object index or object id is not in the population."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def unknown_attribute(name: object, known: Iterable[str]) -> UnknownAttributeError:
    """An :class:`UnknownAttributeError` with a "did you mean" hint."""
    known = list(known)
    hint = did_you_mean(name, known) or f"; known: {', '.join(known[:12])}" + (", ..." if len(known) > 12 else "")
    return UnknownAttributeError(f"unknown attribute '{name}'{hint}")
