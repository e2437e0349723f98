"""Federated training of any visec detector on Flower: partitions, the ClientApp (local training on
the engine's module), the ServerApp (Flower's strategies by name, global evaluation on the server's
held-out split, an ordinary run folder) and ``run_federated`` (Flower's in-process simulation).

Flower is imported only here: ``import visec.federated`` needs ``flwr`` installed."""

from visec.federated.partition import describe, partition

__all__ = ["describe", "partition"]
