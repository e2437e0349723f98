"""visec's ServerApp logic (``run_server``) on an in-process Flower grid: the ClientApp's functions
answer its messages directly, so the server's bookkeeping is checked without Ray or processes."""

from __future__ import annotations

import json

import pytest

from visec.config import load_config

TINY = ("model.backbone=tiny_cnn", "model.weights=null", "model.width=8", "model.num_codes=16",
        "data.image_size=32", "train.bootstrap=0", "data.batch_size=32", "train.limit_train_batches=2")


@pytest.fixture
def task_identity(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def in_process_grid(n: int, behaviour):
    """A Flower grid of ``n`` nodes whose replies come from visec's ClientApp functions called in this
    process; ``behaviour(round, node) -> "ok" | "error" | "silent"`` (silent: no reply at all)."""
    from flwr.app import Context, Error, Message, RecordDict
    from flwr.serverapp import Grid

    from visec.federated import client

    class InProcessGrid(Grid):
        def __init__(self):
            self.contexts = {k: Context(run_id=1, node_id=k, node_config={"partition-id": k, "num-partitions": n},
                                        state=RecordDict(), run_config={}) for k in range(n)}

        def set_run(self, run):
            pass

        @property
        def run(self):
            return None

        def create_message(self, *args, **kwargs):
            raise NotImplementedError

        def get_node_ids(self):
            return list(range(n))

        def push_messages(self, messages):
            raise NotImplementedError

        def pull_messages(self, message_ids):
            raise NotImplementedError

        def send_and_receive(self, messages, *, timeout=None):
            replies = []
            for msg in messages:
                node, rnd = msg.metadata.dst_node_id, int(msg.content["config"]["server-round"])
                what = behaviour(rnd, node)
                if what == "silent":
                    continue
                if what == "error":
                    replies.append(Message(Error(0, f"RuntimeError: node {node} failed"), reply_to=msg))
                    continue
                fn = client.train if msg.metadata.message_type == "train" else client.evaluate
                replies.append(fn(msg, self.contexts[node]))
            return replies

    return InProcessGrid()


def test_server_counts_failed_and_silent_clients_and_writes_an_ordinary_run(synth_small, tmp_path, task_identity,
                                                                             one_torch_thread):
    from visec.engine import Engine
    from visec.federated.server import run_server

    cfg = load_config("fedforgery", [*TINY, f"data.manifest={synth_small.manifest}", f"output_dir={tmp_path}",
                                     "name=fed", "fed.clients=3", "fed.rounds=2", "fed.min_clients=1",
                                     "fed.client_eval=false"])
    plan = {(1, 1): "error", (2, 2): "silent"}
    summary = run_server(in_process_grid(3, lambda r, k: plan.get((r, k), "ok")), cfg, tmp_path / "fed")
    r1, r2 = summary["rounds"][1], summary["rounds"][2]
    assert (r1["clients_used"], r1["clients_failed"], r1["clients_missing"], r1["clients"]) == (2, 1, 0, [0, 2])
    assert (r2["clients_used"], r2["clients_failed"], r2["clients_missing"], r2["clients"]) == (2, 1, 1, [0, 1])
    assert r1["errors"] == ["RuntimeError: node 1 failed"] and r2["errors"] == ["no reply within 3600 s"]
    assert json.loads((tmp_path / "fed" / "federated.json").read_text())["rounds"][2]["clients_missing"] == 1
    card = Engine.from_run(tmp_path / "fed").test()
    assert card.method == "fedforgery/tiny_cnn@fedavg-family" and card.extra["federated"]["best_round"] in (1, 2)


def test_a_run_where_no_client_finished_is_refused_not_carded(synth_small, tmp_path, task_identity, one_torch_thread):
    from visec.errors import ConfigError
    from visec.federated.server import run_server

    cfg = load_config("fedforgery", [*TINY, f"data.manifest={synth_small.manifest}", f"output_dir={tmp_path}",
                                     "name=fed", "fed.clients=2", "fed.rounds=1", "fed.client_eval=false"])
    with pytest.raises(ConfigError, match="no client finished a round; first error: RuntimeError: node [01] failed"):
        run_server(in_process_grid(2, lambda r, k: "error"), cfg, tmp_path / "fed")


def test_a_diverged_global_model_is_recorded_never_selected_and_never_carded(synth_small, tmp_path, task_identity,
                                                                             one_torch_thread):
    """A client's update scaled past float32's range makes FedAvg's global weights non-finite: the
    round is recorded as diverged (no AUC made up), and a run with no finite round raises."""
    from visec.errors import DivergedError
    from visec.federated.server import run_server

    cfg = load_config("fedforgery", [*TINY, f"data.manifest={synth_small.manifest}", f"output_dir={tmp_path}",
                                     "name=fed", "fed.clients=2", "fed.rounds=1", "fed.client_eval=false",
                                     "fed.poison=scale", "fed.poison_scale=1e38", "fed.poison_client=1"])
    with pytest.raises(DivergedError, match="diverged in every round"):
        run_server(in_process_grid(2, lambda r, k: "ok"), cfg, tmp_path / "fed")
    summary = json.loads((tmp_path / "fed" / "federated.json").read_text())
    assert summary["diverged_rounds"] == [1] and summary["final_val_auc"] is None and summary["best_round"] is None
    assert summary["rounds"][0]["val_auc"] is not None  # the initial model was finite
    assert not (tmp_path / "fed" / "best.safetensors").exists()
