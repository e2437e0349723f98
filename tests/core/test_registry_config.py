import pytest
from pydantic import BaseModel

from visec.config import load_config, parse_overrides
from visec.errors import ConfigError, RegistryError
from visec.registry import BACKBONES, METHODS, Registry


def test_registry_register_get_list_and_did_you_mean():
    reg = Registry("thing")

    @reg.register("alpha", summary="first")
    def alpha():
        return 1

    reg.register("beta")(lambda: 2)
    assert reg.build("alpha") == 1
    assert reg.names() == ["alpha", "beta"] and reg.names("a*") == ["alpha"]
    assert "alpha" in reg and len(reg) == 2
    with pytest.raises(RegistryError, match="did you mean 'alpha'"):
        reg.get("alpah")
    with pytest.raises(RegistryError, match="known: alpha, beta"):
        reg.get("zzzzzz")
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("alpha")(lambda: 3)


def test_builtin_registries_are_populated():
    assert "classifier" in METHODS
    assert {"tiny_cnn", "xception", "mobilenetv2"} <= set(BACKBONES.names())


def test_parse_overrides_nests_and_parses_scalars():
    assert parse_overrides(["train.lr=0.01", "train.max_epochs=2", "data.manifest=a/b.jsonl", "name=x"]) == {
        "train": {"lr": 0.01, "max_epochs": 2}, "data": {"manifest": "a/b.jsonl"}, "name": "x"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.lr"])


def test_load_config_from_shipped_yaml_with_overrides():
    cfg = load_config("classifier", ["train.lr=0.5", "model.backbone=resnet18"])
    assert cfg.method == "classifier" and cfg.train.lr == 0.5 and cfg.model["backbone"] == "resnet18"
    assert cfg.data.image_size == 32  # from configs/classifier/default.yaml


@pytest.mark.parametrize("override,message", [
    ("train.lrr=0.1", "unknown config key 'train.lrr'; did you mean 'lr'"),
    ("train.lr=fast", "config key 'train.lr'"),
    ("model.dropuot=0.1", "unknown config key 'model.dropuot'; did you mean 'dropout'"),
    ("model.backbone=xceptoin", None),
    ("method=clasifier", "did you mean 'classifier'"),
    ("train.select_on=best", "config key 'train.select_on'"),
])
def test_config_typos_are_errors_naming_the_key(override, message):
    with pytest.raises((ConfigError, RegistryError)) as info:
        cfg = load_config("classifier", [override])
        # the backbone is checked when the method is built
        from visec.engine import build_module

        build_module(cfg)
    if message:
        assert message in str(info.value)
    else:
        assert "did you mean 'xception'" in str(info.value)


def test_config_saved_and_reloaded_identically(tmp_path):
    cfg = load_config("classifier", ["train.seed=7"])
    path = cfg.save(tmp_path / "config.yaml")
    assert load_config(path).to_dict() == cfg.to_dict()


def test_missing_config_file_is_clear():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("nope.yaml")
    with pytest.raises(ConfigError, match="no config 'nomethod'"):
        load_config("nomethod")


def test_method_params_class_validates_types():
    cfg = load_config("classifier", ["model.dropout=0.3"])
    params = cfg.method_params()
    assert isinstance(params, BaseModel) and params.dropout == 0.3
    with pytest.raises(ConfigError, match="model.dropout"):
        load_config("classifier", ["model.dropout=2"])


def test_registries_fill_from_the_package_entry_points():
    from importlib.metadata import entry_points

    from visec.errors import RegistryError
    from visec.registry import METHODS, Registry

    groups = {ep.value for ep in entry_points(group="visec.methods")}
    assert "visec.methods" in groups and "acmf" in METHODS  # the built-ins come through the metadata
    empty = Registry("widget", "visec.no_such_group")
    with pytest.raises(RegistryError, match="entry points .* are missing"):
        empty.names()
