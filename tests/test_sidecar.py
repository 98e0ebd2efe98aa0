"""The checkpoint sidecar schema (models/sidecar.py): the builder, the accessors and their one-line errors, and
every writer's model.json on digits, whose key order and fields are those the hand-written dicts wrote before
the schema (recorded from the commit before it)."""

import json

import pytest

from backdoorlab.budget import SPLIT_SEED, default_holdout
from backdoorlab.cli import main
from backdoorlab.errors import BackdoorlabError
from backdoorlab.models.sidecar import (FIELDS, SECOND_ENDPOINT_ORDER, build_sidecar, dataset_fields, derived_sidecar,
                                        holdout_record, holdout_size, inherited_fields, planted_attack, provenance,
                                        training, training_record)
from backdoorlab.train import TrainConfig

ARGS = {"num_classes": 10, "in_channels": 1, "input_size": [8, 8], "mean": [0.5], "std": [0.5]}

# The top-level keys of each writer's model.json, as the commit before the schema wrote them.
_HEAD, _TAIL = ["format", "format_version", "created", "backdoorlab_version"], ["weights_sha256"]
# the fields a built-in data set's models have always had: data_source (a user's images only) is not written
BUILT_IN_FIELDS = ["arch", "arch_args", "dataset", "class_names", "input_shape", "seed", "training", "holdout",
                   "provenance", "metrics"]
TRAINED = _HEAD + BUILT_IN_FIELDS + _TAIL  # train, adv-train, distill, and a model attack on a trained model
DERIVED = _HEAD + [f for f in BUILT_IN_FIELDS if f != "training"] + _TAIL  # sanitize, repair, an attack on those
SECOND = _HEAD + ["arch", "arch_args", "dataset", "class_names", "input_shape", "holdout", "seed", "provenance",
                  "metrics"] + _TAIL  # sanitize's scratch second endpoint
TRAINING_KEYS = list(TrainConfig().to_dict()) + ["train_images", "seconds", "final_loss"]


def one_line_error(excinfo, *parts):
    text = str(excinfo.value)
    assert "\n" not in text and all(p in text for p in parts), text


def test_build_sidecar_writes_the_given_fields_in_the_schema_order():
    meta = build_sidecar("small-cnn", ARGS, "digits", metrics={"clean_accuracy": 0.9}, seed=3,
                         holdout=holdout_record(300), class_names=("a", "b"), input_shape=[1, 8, 8])
    assert list(meta) == ["arch", "arch_args", "dataset", "class_names", "input_shape", "seed", "holdout", "metrics"]
    assert meta["holdout"] == {"size": 300, "split_seed": SPLIT_SEED} and meta["class_names"] == ["a", "b"]
    second = build_sidecar("small-cnn", ARGS, "digits", seed=3, holdout=None, provenance={}, metrics={},
                           order=SECOND_ENDPOINT_ORDER)
    assert list(second) == ["arch", "arch_args", "dataset", "holdout", "seed", "provenance", "metrics"]
    # None is kept (a field copied from a sidecar that lacks it), an omitted field is not written
    assert build_sidecar("a", {}, "d", class_names=None) == {"arch": "a", "arch_args": {}, "dataset": "d",
                                                             "class_names": None}


@pytest.mark.parametrize("kwargs,parts", [
    (dict(arch=1), ["'arch'", "a string", "int"]),
    (dict(arch_args=[1]), ["'arch_args'", "an object", "list"]),
    (dict(seed="3"), ["'seed'", "an integer", "str"]),
    (dict(seed=True), ["'seed'", "an integer", "bool"]),
    (dict(holdout=300), ["'holdout'", "an object", "int"]),
    (dict(provenance="badnets"), ["'provenance'", "an object", "str"]),
    (dict(order=("arch",)), ["field order"]),
])
def test_build_sidecar_refuses_wrong_types_in_one_line(kwargs, parts):
    given = {"arch": "small-cnn", "arch_args": ARGS, "dataset": "digits", **kwargs}
    with pytest.raises(BackdoorlabError) as e:
        build_sidecar(given.pop("arch"), given.pop("arch_args"), given.pop("dataset"), **given)
    one_line_error(e, *parts)


def test_derived_sidecar_keeps_the_source_order_and_appends_new_fields():
    source = {"format": "backdoorlab-checkpoint", "arch": "a", "arch_args": {}, "dataset": "d", "seed": 1,
              "training": {"epochs": 2}, "provenance": {"attack": None}, "metrics": {}}
    meta = derived_sidecar(source, seed=7, metrics={"x": 1}, provenance={"attack": {"name": "single-bias"}})
    assert list(meta) == list(source) and meta["seed"] == 7 and meta["training"] == {"epochs": 2}
    assert source["seed"] == 1  # the source is not changed
    assert list(derived_sidecar({"arch": "a"}, seed=1, metrics={})) == ["arch", "seed", "metrics"]
    with pytest.raises(BackdoorlabError) as e:
        derived_sidecar(source, sead=7)
    one_line_error(e, "unknown checkpoint sidecar field(s) 'sead'", "valid: arch")
    with pytest.raises(BackdoorlabError) as e:
        derived_sidecar(source, metrics=[1])
    one_line_error(e, "'metrics' must be an object")


def test_field_helpers():
    class Data:
        class_names, in_channels, image_size = ("zero", "one"), 1, (8, 8)
    assert dataset_fields(Data) == {"class_names": ["zero", "one"], "input_shape": [1, 8, 8]}
    assert inherited_fields({"class_names": ["a"], "holdout": {"size": 5}}) == {
        "class_names": ["a"], "input_shape": None, "holdout": {"size": 5}}
    cfg = TrainConfig(epochs=2)
    record = training_record(cfg, 100, 1.234, {"loss": [0.5, 0.25]})
    assert list(record) == TRAINING_KEYS and record["seconds"] == 1.2 and record["final_loss"] == 0.25
    assert training_record(cfg, 100, 0.0, {"loss": []})["final_loss"] is None


def test_holdout_size():
    assert holdout_size({"holdout": {"size": 300, "split_seed": SPLIT_SEED}}, "digits") == 300
    assert holdout_size({"holdout": {"size": 0}}, "digits") == 0
    for meta in ({}, {"holdout": None}, {"holdout": {}}, {"holdout": {"size": None}}):
        assert holdout_size(meta, "digits") == default_holdout("digits")
        assert holdout_size(meta, "cifar10") == default_holdout("cifar10")
        assert holdout_size(meta) is None  # the budget functions then take the data set's default
    for meta, part in (({"holdout": 300}, "'holdout' must be an object, got int"),
                       ({"holdout": {"size": "300"}}, "'holdout.size' must be a non-negative integer, got '300'"),
                       ({"holdout": {"size": -1}}, "got -1"), ({"holdout": {"size": True}}, "got True")):
        with pytest.raises(BackdoorlabError) as e:
            holdout_size(meta, "digits")
        one_line_error(e, part)


def test_provenance_attack_and_training_accessors():
    attack = {"name": "badnets", "target": 0}
    meta = {"provenance": {"attack": attack, "poison_seed": 1}, "training": {"augment": "crop"}}
    assert provenance(meta) == meta["provenance"] and planted_attack(meta) == attack
    assert training(meta) == {"augment": "crop"}
    for empty in ({}, {"provenance": None}, {"provenance": {"attack": None}}, {"provenance": {"attack": {}}}):
        assert planted_attack(empty) is None and training(empty) == {}
    assert provenance({}) == {}
    for meta, part in (({"provenance": ["badnets"]}, "'provenance' must be an object, got list"),
                       ({"provenance": {"attack": "badnets"}}, "'provenance.attack' must be an object, got str"),
                       ({"training": 3}, "'training' must be an object, got int")):
        with pytest.raises(BackdoorlabError) as e:
            planted_attack(meta) if "provenance" in meta else training(meta)
        one_line_error(e, part)


def test_a_bad_sidecar_field_is_a_one_line_cli_error(tmp_path, capsys):
    """A checkpoint whose sidecar holds a malformed held-out pool: `repair` says so in one line."""
    from backdoorlab.models import save_checkpoint
    from backdoorlab.models import new_model
    from backdoorlab.data import load_dataset
    ds = load_dataset("digits")
    model = new_model("small-cnn", ds)
    save_checkpoint(model, tmp_path / "m", build_sidecar("small-cnn", model.arch_args, "digits") | {"holdout": 300})
    code = main(["repair", "finetune", str(tmp_path / "m"), "--dataset", "digits", "--clean-budget", "50",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "'holdout' must be an object, got int" in err
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One checkpoint of every writer, made through the CLI on digits with the smallest settings."""
    root = tmp_path_factory.mktemp("sidecars")
    fast = ["--no-progress"]
    runs = [
        ["train", "--dataset", "digits", "--arch", "small-cnn", "--attack", "badnets", "--target", "0",
         "--poison-rate", "0.1", "--epochs", "2", "--seed", "1", "--out", str(root / "train")],
        ["train", "--dataset", "digits", "--arch", "small-cnn", "--epochs", "1", "--seed", "2", "--out",
         str(root / "clean")],
        ["sanitize", str(root / "train"), "--dataset", "digits", "--clean-budget", "100", "--out", str(root / "san"),
         "--steps", "4", "--grid", "3", "--second-endpoint", "scratch", "--no-verify", "--refine-steps", "0"],
        ["repair", "finetune", str(root / "train"), "--dataset", "digits", "--clean-budget", "100", "--out",
         str(root / "rep"), "-o", "steps=2"],
        ["attack", "single-bias", str(root / "clean"), "--out", str(root / "atk")],
        ["attack", "single-bias", str(root / "san"), "--out", str(root / "atk-san")],
        ["distill", "--dataset", "digits", "--arch", "small-cnn", "--epochs", "1", "--seed", "3", "--out",
         str(root / "dist")],
    ]
    for args in runs:
        assert main(args + fast) == 0, args
    return root, {p.parent.relative_to(root).as_posix(): json.loads(p.read_text()) for p in root.rglob("model.json")}


def test_every_writer_keeps_its_key_order(written):
    _, metas = written
    expected = {"train": TRAINED, "clean": TRAINED, "dist": TRAINED, "atk": TRAINED, "san": DERIVED,
                "rep": DERIVED, "atk-san": DERIVED, "san/second-endpoint": SECOND}
    assert {k: list(m) for k, m in metas.items()} == expected
    for name in ("train", "clean", "dist", "atk"):
        assert list(metas[name]["training"]) == TRAINING_KEYS
    assert list(metas["train"]["provenance"]) == ["attack", "poisoned", "poison_seed"]
    assert list(metas["clean"]["provenance"]) == ["attack"]
    assert list(metas["dist"]["provenance"]) == ["attack", "evasion_defense"]
    assert list(metas["san"]["provenance"]) == ["attack", "poisoned", "poison_seed", "sanitized"]
    assert list(metas["san"]["provenance"]["sanitized"]) == ["method", "from", "t", "ensemble", "curve",
                                                            "clean_budget", "second_endpoint", "refined_steps",
                                                            "refine_check"]
    assert list(metas["rep"]["provenance"]) == ["attack", "poisoned", "poison_seed", "repaired"]
    assert list(metas["rep"]["provenance"]["repaired"]) == ["defense", "from", "clean_budget", "info"]
    for name in ("atk", "atk-san"):
        assert list(metas[name]["provenance"]) == ["attack", "attacked_from", "original_provenance", "report"]
    assert list(metas["san/second-endpoint"]["provenance"]) == ["second_endpoint"]


def test_every_writer_records_the_same_fields(written):
    from backdoorlab.data import load_dataset
    root, metas = written
    ds = load_dataset("digits")
    pool = {"size": default_holdout("digits"), "split_seed": SPLIT_SEED}
    for name, meta in metas.items():
        assert meta["arch"] == "small-cnn" and meta["dataset"] == "digits", name
        assert meta["class_names"] == list(ds.class_names) and meta["input_shape"] == [1, 8, 8], name
        assert meta["holdout"] == pool, name
        assert holdout_size(meta, "digits") == pool["size"]
    train, san, rep = metas["train"], metas["san"], metas["rep"]
    assert train["seed"] == 1 and train["training"]["epochs"] == 2 and train["provenance"]["poison_seed"] == 1
    assert train["arch_args"] == {**ARGS, "mean": train["arch_args"]["mean"], "std": train["arch_args"]["std"]}
    assert metas["clean"]["provenance"] == {"attack": None}
    assert metas["dist"]["provenance"]["evasion_defense"]["method"] == "defensive-distillation"
    for derived in (san, rep):  # the suspect's attack and poisoning record, then what was done to it
        assert {k: derived["provenance"][k] for k in ("attack", "poisoned", "poison_seed")} == train["provenance"]
        assert derived["arch_args"] == train["arch_args"] and derived["seed"] == 0
    assert san["provenance"]["sanitized"]["from"] == [str(root / "train")]
    assert rep["provenance"]["repaired"]["from"] == [str(root / "train")]
    second = metas["san/second-endpoint"]
    assert second["provenance"]["second_endpoint"]["method"] == "scratch" and second["seed"] == 0
    for attacked, source in (("atk", "clean"), ("atk-san", "san")):
        meta, src = metas[attacked], metas[source]
        assert meta["provenance"]["original_provenance"] == src["provenance"]
        assert meta["provenance"]["attacked_from"] == str(root / source)
        assert meta.get("training") == src.get("training") and meta["seed"] == 0
        assert planted_attack(meta)["name"] == "single-bias"


def test_data_source_is_a_field_written_only_for_a_data_set_read_from_files():
    """A user's images (folder:, npz:) record where they came from; a built-in set's sidecar has no such key."""
    assert list(FIELDS) == BUILT_IN_FIELDS[:5] + ["data_source"] + BUILT_IN_FIELDS[5:]
    assert list(SECOND_ENDPOINT_ORDER).index("data_source") == list(SECOND_ENDPOINT_ORDER).index("input_shape") + 1

    class Loaded:
        class_names, in_channels, image_size, source = ["a", "b"], 1, (4, 4), None

    assert "data_source" not in build_sidecar("small-cnn", {}, "digits", **dataset_fields(Loaded()))
    assert "data_source" not in inherited_fields({"class_names": ["a"], "input_shape": [1, 4, 4]})
    Loaded.source = {"kind": "folder", "path": "/x"}
    meta = build_sidecar("small-cnn", {}, "folder:/x", **dataset_fields(Loaded()), seed=0)
    assert list(meta) == ["arch", "arch_args", "dataset", "class_names", "input_shape", "data_source", "seed"]
    assert meta["data_source"] == {"kind": "folder", "path": "/x"}
    assert inherited_fields(meta)["data_source"] == meta["data_source"]  # a repaired model keeps it
    with pytest.raises(BackdoorlabError, match="'data_source' must be an object"):
        build_sidecar("small-cnn", {}, "folder:/x", data_source="/x")
