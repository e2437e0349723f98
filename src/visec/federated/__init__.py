"""Federated training of any visec detector on Flower: partitions, the ClientApp (local training on
the engine's module), the ServerApp (Flower's strategies by name, global evaluation on the server's
held-out split, an ordinary run folder) and ``run_federated`` (Flower's in-process simulation).

Flower is imported only here: ``import visec.federated`` needs ``flwr`` installed."""

from visec.federated.partition import describe, partition


def require_flower() -> None:
    """A one-line error, before any work, where Flower is not installed."""
    import importlib.util

    from visec.errors import ConfigError

    if importlib.util.find_spec("flwr") is None:
        raise ConfigError("federated training needs Flower: pip install 'flwr[simulation]==1.42.0' "
                          "(or the project's `fed` extra)")


__all__ = ["describe", "partition", "require_flower"]
