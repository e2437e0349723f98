"""Files of the right name and the wrong shape: manifests, configs, result cards, checkpoint sidecars
and training states, generated malformed (Hypothesis) and fed to the public readers and the CLI.

Every input must end in one of two ways: read back exactly as written (nothing coerced), or a
:class:`~visec.errors.VisecError` whose message is one line, short, and names the file (and for a
manifest the line and the field). Never another exception type, never a traceback from ``visec``.
"""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from visec.cards import CARD_VERSION, CardFile, ResultCard
from visec.checkpoint import read_sidecar
from visec.cli import main
from visec.config import MAX_YAML_VALUES, load_config, parse_overrides
from visec.data.manifest import REQUIRED, make_record, read_manifest, validate, write_manifest
from visec.engine import Engine  # Lightning's log handler binds to the session's stderr, not a test's
from visec.errors import CheckpointError, ConfigError, DataError, ManifestError, VisecError

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# any JSON value, small: the wrong types a file can hold where a field expects another
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                    | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)
STR_FIELDS = ("path", "dataset", "split", "manipulation", "video_id", "media", "sha256")
INT_FIELDS = ("label", "frame_index")


def one_line(exc: BaseException, *names: str) -> str:
    """The message of a user-facing error: one line, bounded, naming every one of ``names``."""
    assert isinstance(exc, VisecError), f"{type(exc).__name__}: {exc}"
    msg = str(exc)
    assert "\n" not in msg and 0 < len(msg) < 500, msg
    for name in names:
        assert name in msg, (name, msg)
    return msg


def cli_error(capsys, args: list[str], *words: str) -> str:
    """Run ``visec ARGS`` in-process: exit status 2, no traceback, and one stderr line 'error: ...',
    the last (Lightning's own info lines, "GPU available: False", may come before it)."""
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert [x for x in lines if x.startswith("error:")] == lines[-1:], err
    assert "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    return err


# -- manifests -------------------------------------------------------------------------------------------
def _row(i: int, label: int = 0) -> dict:
    return {"path": f"f{i}.png", "dataset": "d", "split": "train", "label": label,
            "manipulation": "real" if label == 0 else "swap", "video_id": f"d/v{i}", "frame_index": 0,
            "media": "image", "sha256": ""}


def _write_lines(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(x + b"\n" for x in lines))


def _right_type(field: str, value) -> bool:
    """What the manifest's columns hold, said independently of visec's schema."""
    if field in INT_FIELDS:
        return type(value) is int
    return type(value) is str


@FUZZ
@given(field=st.sampled_from(REQUIRED), value=JSON, position=st.integers(0, 2), drop=st.booleans())
def test_a_manifest_field_of_any_json_value_is_read_exactly_or_refused(tmp_path, field, value, position, drop):
    """One line of three has a field set to a generated JSON value (or missing): the manifest reads
    back with that value unchanged, or the error names the file, the line and the field."""
    rows = [_row(i) for i in range(3)]
    if drop:
        del rows[position][field]
    else:
        rows[position][field] = value
    path = tmp_path / "fuzz.jsonl"
    _write_lines(path, [json.dumps(r).encode() for r in rows])
    try:
        m = read_manifest(path, check_files=False)
    except VisecError as exc:
        msg = one_line(exc, "fuzz.jsonl")
        if drop or not _right_type(field, value):
            assert f"fuzz.jsonl:{position + 1}:" in msg and field in msg, msg
        return
    assert not drop and _right_type(field, value), f"accepted {field}={value!r}"
    got = m.df.at[position, field]
    assert got == value and type(got.item() if hasattr(got, "item") else got) is type(value)


@FUZZ
@given(line=JSON | st.binary(max_size=40), position=st.integers(0, 2))
def test_a_manifest_line_that_is_not_an_object_or_not_text_is_refused_with_its_line(tmp_path, line, position):
    """Lines that are lists, numbers, strings, null, or arbitrary bytes (often not UTF-8)."""
    lines = [json.dumps(_row(i)).encode() for i in range(3)]
    bad = line if isinstance(line, bytes) else json.dumps(line).encode()
    if not bad.strip() or isinstance(line, dict):
        return  # a blank line is skipped; an object is the field test's business
    lines.insert(position, bad.replace(b"\n", b" "))
    path = tmp_path / "lines.jsonl"
    _write_lines(path, lines)
    with pytest.raises(ManifestError) as info:
        read_manifest(path, check_files=False)
    one_line(info.value, "lines.jsonl", f":{position + 1}:")


@pytest.mark.parametrize("text,reason", [
    (b'{"path": "\xff\xfe.png"}', "not UTF-8"),
    (b"[" * 100_000, "nested deeper"),
    (b'{"a": ' * 2000 + b"1" + b"}" * 2000, "nested deeper"),
    (b'{"label": 0, "label": 1}', "duplicate key 'label'"),
    (b'{"label": ' + b"9" * 5000 + b"}", "not usable JSON"),
    (b'{"path": "a.png"', "not valid JSON"),
])
def test_bytes_nesting_and_duplicate_keys_on_a_manifest_line(tmp_path, text, reason):
    path = tmp_path / "raw.jsonl"
    _write_lines(path, [json.dumps(_row(0)).encode(), text])
    with pytest.raises(ManifestError) as info:
        read_manifest(path, check_files=False)
    one_line(info.value, "raw.jsonl:2:", reason)


@pytest.mark.parametrize("field,value", [
    ("label", 1.5), ("label", True), ("label", 1.0), ("label", "1"), ("label", None), ("label", 2),
    ("frame_index", 2.5), ("frame_index", False), ("frame_index", "3"), ("frame_index", -2),
    ("frame_index", 10**30),
    ("path", 5), ("path", None), ("path", ""), ("video_id", 7), ("sha256", "xyz"), ("split", "dev"),
])
def test_no_label_or_frame_index_is_coerced_in_files_or_tables(tmp_path, field, value):
    """The same refusal whether the row comes from a file (line named) or a table (row named)."""
    rows = [_row(0), _row(1, label=1)]
    rows[1][field] = value
    path = tmp_path / "coerce.jsonl"
    _write_lines(path, [json.dumps(r).encode() for r in rows])
    with pytest.raises(ManifestError) as info:
        read_manifest(path, check_files=False)
    one_line(info.value, "coerce.jsonl:2:", field)
    import pandas as pd

    if type(value) is float and value.is_integer():
        # a table: pandas holds integers as floats beside a float, so 1.0 is an integer written
        # as a float (taken, as the integer), while 1.5 or 2.5 is refused
        out = write_manifest(pd.DataFrame(rows), tmp_path / "out.jsonl")
        assert json.loads(out.read_text().splitlines()[1])[field] == int(value)
        return
    with pytest.raises(ManifestError) as info:
        write_manifest(pd.DataFrame(rows), tmp_path / "out.jsonl")
    one_line(info.value, "out.jsonl", "row 1", field)
    assert not (tmp_path / "out.jsonl").exists()


def test_mixed_type_video_ids_name_the_column_not_a_sort(tmp_path):
    import pandas as pd

    rows = [_row(0), _row(1)]
    rows[0]["video_id"] = 17  # a number among strings: sorting them would fail
    for df in (pd.DataFrame(rows), pd.DataFrame(rows).astype({"video_id": object})):
        with pytest.raises(ManifestError) as info:
            write_manifest(df, tmp_path / "ids.jsonl")
        msg = one_line(info.value, "ids.jsonl", "video_id 17 (an integer)", "row 0")
        assert "<" not in msg and "sort" not in msg
    with pytest.raises(ManifestError, match="field 'label' is missing"):
        validate(pd.DataFrame([_row(0), {k: v for k, v in _row(1).items() if k != "label"}]))


# -- content hashes ----------------------------------------------------------------------------------------
def _png(path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def _dataset(root, n: int = 4):
    """A tiny hashed manifest with every split holding real and fake images (8x8 PNGs)."""
    rows = []
    for split in ("train", "val", "test"):
        for i in range(n):
            label = i % 2
            p = root / split / f"{label}{i}.png"
            _png(p, 40 + 150 * label + i)
            rows.append(make_record(root, p, dataset="t", split=split, label=label,
                                    manipulation="swap" if label else "real", video_id=f"t/{split}{i}"))
    return write_manifest(rows, root / "manifest.jsonl")


def test_verify_refuses_files_whose_bytes_changed(tmp_path, capsys):
    manifest = _dataset(tmp_path / "data")
    assert read_manifest(manifest).verify() == 0
    _png(tmp_path / "data" / "train" / "00.png", 3)
    (tmp_path / "data" / "val" / "11.png").write_bytes(b"not the image that was hashed")
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest).verify()
    one_line(info.value, "manifest.jsonl", "2 of 12 file(s)", "train/00.png", "val/11.png")
    # `visec train --verify` refuses before any training (and so writes no run folder)
    runs = tmp_path / "runs"
    cli_error(capsys, ["train", "classifier", f"data.manifest={manifest}", f"output_dir={runs}",
                       "data.image_size=8", "--verify"], "2 of 12 file(s) differ")
    assert not runs.exists()


def test_data_build_warns_of_one_class_and_of_changed_files_on_a_rerun(tmp_path, capsys):
    root = tmp_path / "ds"
    for i in range(6):
        _png(root / "real" / f"v{i}.png", 10 * i)
    assert main(["data", "build", "generic", "--root", str(root)]) == 0
    err = capsys.readouterr().err
    assert "warning: only one class" in err and "changed" not in err
    _png(root / "real" / "v1.png", 200)
    assert main(["data", "build", "generic", "--root", str(root)]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 file(s) changed since the previous build of manifest.jsonl" in err and "real/v1.png" in err
    report = json.loads((root / "manifest.report.json").read_text())
    assert report["hash_changed"] == ["real/v1.png"] and len(report["warnings"]) == 2


# -- YAML configs ------------------------------------------------------------------------------------------
KEYS = st.sampled_from(["method", "model", "data", "train", "lr", "seed", "backbone", "image_size", "x", "1"])
YAML_SCALARS = st.sampled_from(["classifier", "0.1", "-3", "true", "null", "[1, 2]", "{a: 1}", "'8/255'", "~",
                                "*nope", "&a 1", "!!python/name:os.system", "!!binary aGk=", "1e999", "0x1F"])


def _yaml_doc(draw) -> str:
    """A small YAML document: nested mappings of generated keys and scalar texts."""
    lines = ["method: classifier"] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(0, 5))):
        indent = "  " * draw(st.integers(0, 2))
        lines.append(f"{indent}{draw(KEYS)}: {draw(YAML_SCALARS) if draw(st.booleans()) else ''}")
    return "\n".join(lines) + "\n"


@st.composite
def yaml_configs(draw):
    kind = draw(st.sampled_from(["doc", "duplicate", "bomb", "nested", "bytes", "cycle"]))
    if kind == "doc":
        return kind, _yaml_doc(draw).encode()
    if kind == "duplicate":
        key = draw(st.sampled_from(["method", "train", "data"]))
        value = "classifier" if key == "method" else "{}"
        middle = draw(st.sampled_from(["", "model: {}\n", "train: {lr: 0.1}\n", "data:\n  image_size: 8\n"]))
        return kind, (f"{key}: {value}\n{middle}{key}: {value}\n").encode()
    if kind == "bomb":  # each level repeats the one before `width` times
        width, depth = draw(st.integers(2, 12)), draw(st.integers(1, 9))
        lines = ["method: classifier", "l0: &l0 [lol]"]
        lines += [f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * width)}]" for k in range(1, depth + 1)]
        return kind, ("\n".join(lines) + "\n").encode()
    if kind == "nested":
        n = draw(st.integers(1, 400))
        return kind, ("method: classifier\nmodel: " + "[" * n + "]" * n + "\n").encode()
    if kind == "cycle":
        return kind, b"method: classifier\nmodel: &m {a: *m}\n"
    return kind, draw(st.binary(max_size=60))


@FUZZ
@given(case=yaml_configs())
def test_generated_yaml_configs_load_or_fail_in_one_line_naming_the_file(tmp_path, case):
    kind, text = case
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text)
    try:
        load_config(path)
    except VisecError as exc:
        msg = one_line(exc, "fuzz.yaml")
        assert "lol" not in msg  # a bomb's content is never echoed
        if kind == "duplicate":
            assert "duplicate key" in msg
        return
    assert kind in ("doc", "bomb", "bytes"), (kind, text)
    if kind == "bomb":
        width, depth = text.count(b"*l0"), text.count(b"&l") - 1
        assert width ** depth <= MAX_YAML_VALUES


def test_yaml_refusals_name_the_key_and_the_line(tmp_path):
    cases = {
        "dup.yaml": ("method: classifier\ntrain:\n  lr: 0.1\n  seed: 1\n  lr: 0.2\n",
                     ["dup.yaml:5:", "duplicate key 'lr'", "line 3"]),
        "bomb.yaml": ("method: classifier\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
                      + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi")),
                      ["bomb.yaml:", f"more than {MAX_YAML_VALUES} values"]),
        "tag.yaml": ("method: !!python/object/apply:os.system [ls]\n", ["tag.yaml:1:", "not valid YAML"]),
        "ctrl.yaml": ("method: \x07\n", ["ctrl.yaml", "special character #x0007"]),
        "type.yaml": ("method: classifier\ntrain: {lr: [" + ", ".join(["1"] * 3000) + "]}\n",
                      ["type.yaml:", "train.lr"]),
        "key.yaml": ("method: classifier\n" + "k" * 3000 + ": 1\n", ["key.yaml"]),
    }
    for name, (text, words) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(VisecError) as info:
            load_config(tmp_path / name)
        one_line(info.value, *words)
    # keys merged in with `<<` may be overridden: not a duplicate
    (tmp_path / "merge.yaml").write_text("method: classifier\ntrain:\n  <<: {lr: 0.1, seed: 3}\n  lr: 0.2\n")
    cfg = load_config(tmp_path / "merge.yaml")
    assert (cfg.train.lr, cfg.train.seed) == (0.2, 3)
    # an override value is YAML too: the same bounds, the plain text when it is not YAML
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        parse_overrides(["model.x={a: 1, a: 2}"])
    assert parse_overrides(["name=a: b: c"]) == {"name": "a: b: c"}


# -- result cards and checkpoint sidecars ------------------------------------------------------------------
def _card() -> dict:
    return ResultCard(method="m", train_data="a", test_data="b:test", protocol="intra", seed=0,
                      metrics={"frame": {"auc": {"value": 0.9, "ci": [0.8, 1.0]}}},
                      timings={"test_seconds": 1.5}).to_dict()


def _sidecar() -> dict:
    return {"config": {"method": "classifier"}, "code": {"visec": "0"}, "epoch": 1, "global_step": 10,
            "selection": "val", "metrics": {"val/auc": 0.9}, "runtime": {}, "saved": "now",
            "val_eer_threshold": 0.5}


@st.composite
def mutated(draw, base):
    doc = base()
    how = draw(st.sampled_from(["field", "drop", "extra", "whole", "bytes", "nested"]))
    if how == "field":
        doc[draw(st.sampled_from(sorted(doc)))] = draw(JSON)
    elif how == "drop":
        del doc[draw(st.sampled_from(sorted(doc)))]
    elif how == "extra":
        doc[draw(st.text(max_size=8))] = draw(JSON)
    elif how == "whole":
        doc = draw(JSON)
    elif how == "nested":
        n = draw(st.integers(1, 5000))
        return how, None, ("{\"metrics\": " + "[" * n + "]" * n + "}").encode()
    else:
        return how, None, draw(st.binary(max_size=80))
    return how, doc, json.dumps(doc).encode()


@FUZZ
@given(case=mutated(_card))
def test_generated_result_cards_load_typed_or_fail_in_one_line(tmp_path, case):
    how, doc, raw = case
    path = tmp_path / "fuzz.card.json"
    path.write_bytes(raw)
    try:
        card = ResultCard.load(path)
    except VisecError as exc:
        one_line(exc, "fuzz.card.json")
        return
    assert isinstance(doc, dict) and doc.get("card_version") == CARD_VERSION
    for name, field in CardFile.model_fields.items():  # every field has the type the schema says
        value = getattr(card, name)
        if field.annotation is int:
            assert type(value) is int, (name, value)
        elif field.annotation is str:
            assert isinstance(value, str), (name, value)
        elif name in ("metrics", "config", "extra", "timings", "code", "runtime"):
            assert isinstance(value, dict), (name, value)
    assert all(isinstance(n, str) for n in card.notes)


def test_the_card_schema_covers_every_card_field():
    assert set(CardFile.model_fields) == set(ResultCard.__dataclass_fields__)


@FUZZ
@given(case=mutated(_sidecar))
def test_generated_checkpoint_sidecars_read_typed_or_fail_in_one_line(tmp_path, case):
    how, doc, raw = case
    (tmp_path / "best.json").write_bytes(raw)
    try:
        meta = read_sidecar(tmp_path / "best.safetensors")
    except VisecError as exc:
        one_line(exc, "best.json")
        return
    assert isinstance(meta, dict)
    for key in ("epoch", "global_step"):
        assert meta.get(key) is None or type(meta[key]) is int
    assert meta.get("val_eer_threshold") is None or type(meta["val_eer_threshold"]) in (int, float)
    assert meta.get("selection") is None or isinstance(meta["selection"], str)


def _schema() -> dict:
    from visec.identity.schema import AttributeSpec, Schema

    return Schema([AttributeSpec("age", kind="ordinal", levels=("a", "b")),
                   AttributeSpec("hair", kind="categorical")]).to_dict()


@st.composite
def mutated_schema(draw):
    how, doc, raw = draw(mutated(_schema))
    if how == "field" and draw(st.booleans()):  # inside one attribute instead of the top level
        doc = _schema()
        attr = doc["attributes"][draw(st.integers(0, 1))]
        attr[draw(st.sampled_from(sorted(attr)))] = draw(JSON)
        raw = json.dumps(doc).encode()
    return how, doc, raw


@FUZZ
@given(case=mutated_schema())
def test_generated_tit_schemas_load_or_fail_in_one_line(tmp_path, case):
    from visec.identity.schema import Schema

    _, _, raw = case
    (tmp_path / "schema.json").write_bytes(raw)
    try:
        Schema.load(tmp_path / "schema.json")
    except VisecError as exc:
        one_line(exc, "schema.json")


# -- training states, resume, zero batches -----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A one-epoch classifier run on 12 PNGs of 8 px (a few seconds): its folder holds last.ckpt."""
    from shared_runs import run_config

    tmp = tmp_path_factory.mktemp("robust")
    manifest = _dataset(tmp / "data")
    torch.set_num_threads(1)
    cfg = run_config("classifier", f"data.manifest={manifest}", "data.image_size=8", "data.batch_size=4",
                     "train.max_epochs=1", "train.bootstrap=0", out=tmp / "runs", name="tiny")
    engine = Engine(cfg)
    engine.fit()
    return engine.run_dir


def _copy_run(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


class _Evil:
    def __reduce__(self):
        return (print, ("this would run code",))


def _state_variants(ckpt_bytes: bytes, tmp_path) -> dict[str, bytes]:
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": _Evil()}, evil)
    plain = tmp_path / "plain.ckpt"
    torch.save({"w": torch.zeros(2)}, plain)
    full = torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)
    full["state_dict"].pop(next(iter(full["state_dict"])))
    other = tmp_path / "other.ckpt"
    torch.save(full, other)
    return {"truncated": ckpt_bytes[: len(ckpt_bytes) // 2], "empty": b"", "text": b"hello, not a checkpoint",
            "pickle": pickle.dumps({"state_dict": {}}), "evil": evil.read_bytes(),
            "weights only": plain.read_bytes(), "another model": other.read_bytes()}


def test_unloadable_training_states_are_one_line_checkpoint_errors(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path)
    good = (run / "last.ckpt").read_bytes()
    for name, data in _state_variants(good, tmp_path).items():
        (run / "last.ckpt").write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            Engine.from_run(run, ["train.max_epochs=2"]).fit(resume=True)
        msg = one_line(info.value, "last.ckpt")
        assert "\x1b" not in msg, name
    (run / "last.ckpt").write_bytes(good[:1000])
    cli_error(capsys, ["train", "--resume", str(run), "train.max_epochs=2", "--no-test"],
              "cannot resume from", "last.ckpt")


def test_an_override_after_resume_is_applied_or_refused(tiny_run, tmp_path, capsys):
    run = _copy_run(tiny_run, tmp_path)
    # applied: this override (given where typer reads the config) stops the resume before training
    cli_error(capsys, ["train", "--resume", str(run), "train.limit_train_batches=0"], "train.limit_train_batches")
    cli_error(capsys, ["train", "--resume", str(run), "classifier"], "is not a key=value override")


def test_test_verify_checks_the_manifest_it_tests_on(tiny_run, tmp_path, capsys):
    data = tmp_path / "copy"
    shutil.copytree(tiny_run.parent.parent / "data", data)
    (data / "test" / "13.png").write_bytes((data / "test" / "13.png").read_bytes() + b"\0")
    cli_error(capsys, ["test", str(tiny_run), "--data", str(data / "manifest.jsonl"), "--verify"],
              "1 of 12 file(s) differ", "test/13.png")
    assert not (tiny_run / "cards").exists()


def test_zero_training_batches_is_an_error_not_a_finished_run(tiny_run, tmp_path):
    with pytest.raises(ConfigError) as info:  # refused with the config, before any engine exists
        load_config(tiny_run / "config.yaml", ["train.limit_train_batches=0", f"output_dir={tmp_path}"])
    one_line(info.value, "config.yaml", "train.limit_train_batches")
    # a fraction of an epoch under one batch: what Lightning refuses, in one line, before training
    cfg = load_config(tiny_run / "config.yaml", ["train.limit_train_batches=0.01", f"output_dir={tmp_path}",
                                                 "name=frac"])
    with pytest.raises(ConfigError) as info:
        Engine(cfg).fit()
    one_line(info.value, "limit_train_batches")
    assert not (tmp_path / "frac" / "last.ckpt").exists()


def test_a_one_image_training_batch_is_named_not_a_batchnorm_traceback(tiny_run, tmp_path):
    """BatchNorm cannot train on a batch of one image: the batch size that leaves one is named."""
    from visec.data.manifest import read_manifest

    cfg = load_config(tiny_run / "config.yaml", [f"output_dir={tmp_path}", "name=one"])
    n = int((read_manifest(cfg.data.manifest).df["split"] == "train").sum())
    cfg = load_config(tiny_run / "config.yaml", [f"output_dir={tmp_path}", "name=one", f"data.batch_size={n - 1}"])
    with pytest.raises(DataError) as info:
        Engine(cfg).fit()
    one_line(info.value, f"data.batch_size={n - 1}", "single image")


# -- the CLI end to end ------------------------------------------------------------------------------------
def test_cli_reports_bad_files_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    _write_lines(bad, [json.dumps(_row(0)).encode(), b"\xff\xfe\xfd"])
    cli_error(capsys, ["data", "show", str(bad)], "bad.jsonl:2:", "not UTF-8")
    _write_lines(bad, [json.dumps(_row(0)).encode(), json.dumps(dict(_row(1), label=True)).encode()])
    cli_error(capsys, ["data", "show", str(bad)], "bad.jsonl:2:", "label true (a boolean)")
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("method: classifier\nmethod: classifier\n")
    cli_error(capsys, ["train", str(cfg)], "dup.yaml:2:", "duplicate key 'method'")
    card = tmp_path / "x.card.json"
    card.write_text(json.dumps(dict(_card(), seed="0")))
    cli_error(capsys, ["bench", str(card)], "x.card.json", "seed")
    card.write_bytes(b"[" * 50_000)
    cli_error(capsys, ["bench", str(card)], "x.card.json", "nested deeper")
