"""Exceptions that the CLI reports as one line (no traceback unless ``--debug``)."""

from __future__ import annotations


class VisecError(Exception):
    """Base class for user-facing errors: bad input, bad config, missing files."""


class ConfigError(VisecError):
    """A configuration file or override is invalid."""


class RegistryError(VisecError, KeyError):
    """An unknown name was looked up in a registry."""

    def __str__(self) -> str:  # KeyError quotes its message; we do not want that
        return str(self.args[0]) if self.args else ""


class ManifestError(VisecError):
    """A manifest is malformed or names files that do not exist."""


class DataError(VisecError):
    """An image, video or data folder cannot be read."""


class CheckpointError(VisecError):
    """A checkpoint is missing, unsafe or does not match the model."""


class MetricError(VisecError, ValueError):
    """A metric is undefined for the given input (e.g. AUC with one class)."""


class DivergedError(VisecError):
    """A training run whose model diverged (non-finite weights or scores) in every evaluation: a
    measured outcome (e.g. FedAvg under a poisoned client), with no model to test."""
