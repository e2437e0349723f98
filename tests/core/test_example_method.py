"""docs/adding-a-method.md, run: the walk-through's code blocks become a method in a temporary
package and config folder, and that method trains, tests, benches its card name and passes the
contract checks without any change to the engine, the CLI or the registry."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from visec.registry import METHODS

DOC = Path(__file__).resolve().parents[2] / "docs" / "adding-a-method.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture
def example_method(tmp_path, monkeypatch):
    """The doc's package (torch_model + lightning_model blocks) and config, importable and registered."""
    pkg = tmp_path / "pkg" / "example_method"
    pkg.mkdir(parents=True)
    torch_block, lightning_block = _blocks("python")[:2]
    (pkg / "torch_model.py").write_text(torch_block)
    (pkg / "lightning_model.py").write_text("from example_method.torch_model import ExampleNet\n" + lightning_block)
    (pkg / "README.md").write_text("# example\n\n## Core mechanisms\n\n| mechanism | test |\n|---|---|\n"
                                   "| BCE on the logit | `tests/core/test_example_method.py` |\n")
    (pkg / "__init__.py").write_text("from example_method import lightning_model  # noqa: F401\n")
    configs = tmp_path / "configs"
    shipped = Path(__file__).resolve().parents[2] / "configs"
    for d in shipped.iterdir():  # the shipped configs stay reachable
        (configs / d.name).mkdir(parents=True)
        for f in d.glob("*.yaml"):
            (configs / d.name / f.name).write_text(f.read_text())
    (configs / "example").mkdir()
    (configs / "example" / "default.yaml").write_text(_blocks("yaml")[0])
    monkeypatch.setenv("VISEC_CONFIG_DIR", str(configs))
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    METHODS.names()  # built-ins first, so the example is an addition
    import example_method  # noqa: F401  (registers "example")

    yield METHODS.get("example").obj
    METHODS._entries.pop("example", None)
    for mod in [m for m in sys.modules if m.startswith("example_method")]:
        del sys.modules[mod]


def test_the_walkthrough_gives_a_working_method(example_method, toy_manifest, tmp_path, one_torch_thread):
    from visec.config import load_config
    from visec.engine import Engine
    from visec.engine.engine import card_name
    from visec.engine.method import Method

    assert issubclass(example_method, Method) and example_method.name == "example"
    assert "example" in METHODS.names() and METHODS.get("example").summary == "One line for `visec list methods`."
    assert card_name(load_config("example", ["model.width=8"])) == "example-w8"
    from visec.apps.bench import method_entrants

    assert [e.config for e in method_entrants("example")] == ["example"]  # benchable as a forgery method

    torch.manual_seed(0)
    cfg = load_config("example", [f"data.manifest={toy_manifest}", f"output_dir={tmp_path}", "name=ex",
                                  "train.max_epochs=6", "train.bootstrap=0"])
    engine = Engine(cfg)
    engine.fit()
    card = engine.test()
    assert card.method == "example"
    assert card.metrics["frame"]["auc"]["value"] > 0.6  # the toy task is learnable by a tiny CNN


def test_the_walkthrough_names_every_contract_member():
    text = DOC.read_text()
    from visec.engine.method import Method

    members = [m for m in ("Params", "Module", "build_net", "card_name", "family", "bench") if hasattr(Method, m)
               or m in Method.__annotations__]
    for m in members:
        assert m in text, f"docs/adding-a-method.md does not mention {m}"
    assert textwrap.dedent(_blocks("yaml")[0]).startswith("method: example")
