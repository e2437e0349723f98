"""Flower's in-process simulation (Ray backend) running visec's ServerApp and ClientApp end to end."""

from __future__ import annotations

import json

import pytest

from visec.config import load_config

TINY = ("model.backbone=tiny_cnn", "model.weights=null", "model.width=8", "model.num_codes=16",
        "data.image_size=32", "train.bootstrap=0", "data.batch_size=32")


@pytest.mark.slow
def test_simulation_survives_a_failed_client_and_the_server_sees_only_arrays(synth_small, tmp_path):
    """3 clients x 3 rounds; client 2 crashes in round 2. Every round is aggregated from the replies
    that arrived (3, 2, 3 clients), the server receives arrays and metrics only, the clients' training
    loss falls, and the run folder is an ordinary run: its card names the federated recipe."""
    from visec.engine import Engine
    from visec.federated.server import run_federated

    cfg = load_config("fedforgery", [*TINY, f"data.manifest={synth_small.manifest}", f"output_dir={tmp_path}",
                                     "name=fed", "fed.clients=3", "fed.rounds=3", "fed.partition=iid",
                                     "fed.fail_client=2", "fed.fail_round=2", "fed.min_clients=2",
                                     "fed.client_eval=false", "train.lr=0.003"])
    summary = run_federated(cfg, tmp_path / "fed")
    rounds = {r["round"]: r for r in summary["rounds"]}
    assert sorted(rounds) == [0, 1, 2, 3]
    assert [rounds[t]["clients_used"] for t in (1, 2, 3)] == [3, 2, 3]
    assert rounds[2]["clients_failed"] == 1 and rounds[2]["clients"] == [0, 1]
    assert "crashed in round 2" in rounds[2]["errors"][0]
    for t in (1, 2, 3):
        assert rounds[t]["received"] == ["arrays:ArrayRecord", "metrics:MetricRecord"]
    losses = [rounds[t]["train_loss"] for t in (1, 2, 3)]
    assert losses[2] < losses[0], losses  # the local loss falls from round 1 to round 3
    assert json.loads((tmp_path / "fed" / "federated.json").read_text())["best_round"] in (1, 2, 3)
    card = Engine.from_run(tmp_path / "fed").test()
    assert card.method == "fedforgery/tiny_cnn@fedavg-iid"
    assert [r.get("clients_used") for r in card.extra["federated"]["rounds"]] == [None, 3, 2, 3]
