"""backdoorlab transfer: the layers of the built-in architectures, a student whose frozen layers stay bit for bit
the teacher's, its sidecar (the teacher, the backdoor mapped by class name), and one-line errors."""

import json

import numpy as np
import pytest
import torch

from backdoorlab.attacks import backdoor_from_dict
from backdoorlab.cli import main
from backdoorlab.data import load_dataset
from backdoorlab.errors import BackdoorlabError
from backdoorlab.models import create_model, load_checkpoint
from backdoorlab.models.layers import last_layers, layer_names
from backdoorlab.transfer import student_backdoor

from conftest import state_of

TEACHER = ["--dataset", "digits[0-4]", "--arch", "small-cnn", "--epochs", "4", "--no-progress"]


def _model(arch, channels=1, size=(8, 8)):
    return create_model(arch, num_classes=5, in_channels=channels, input_size=list(size), mean=[0.5] * channels,
                        std=[0.5] * channels)


def test_layers_of_the_built_in_architectures():
    assert layer_names(_model("small-cnn")) == ["body.0", "body.2", "body.5", "fc"]
    resnet = layer_names(_model("resnet20", 3, (32, 32)))
    assert resnet == [f"body.{i}" for i in range(10)] + ["fc"]
    assert last_layers(_model("small-cnn"), 1) == ["fc"] and last_layers(_model("small-cnn"), 2) == ["body.5", "fc"]
    for k in (0, 5):
        with pytest.raises(BackdoorlabError, match="--trainable-layers must be 1..4"):
            last_layers(_model("small-cnn"), k)


@pytest.fixture(scope="module")
def badnets_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "badnets"
    assert main(["train", *TEACHER, "--attack", "badnets", "--target", "0", "--trigger-size", "2",
                 "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("k", [1, 2])
def test_transfer_trains_only_the_last_layers(badnets_teacher, tmp_path, capsys, k):
    out = tmp_path / "student"
    assert main(["transfer", str(badnets_teacher), "--dataset", "digits[5-9]", "--trainable-layers", str(k),
                 "--epochs", "3", "--out", str(out), "--no-progress", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    teacher, _ = load_checkpoint(badnets_teacher)
    student, meta = load_checkpoint(out)
    before, after = state_of(teacher), state_of(student)
    trained = ["fc", "body.5"][:k]
    for key, value in after.items():
        if any(key.startswith(name + ".") for name in trained):
            if key.startswith("fc."):
                assert value.shape[0] == 5  # the new classifier, for the student's 5 classes
            else:
                assert not torch.equal(value, before[key]), key
        else:  # frozen: weights, batch-norm statistics and the teacher's input normalisation, bit for bit
            assert torch.equal(value, before[key]), key
    t = meta["provenance"]["transfer"]
    assert t["trainable_layers"] == k and t["trained_layers"] == ["body.5", "fc"][2 - k:]
    assert t["teacher_dataset"] == "digits[0-4]" and t["teacher_attack"]["name"] == "badnets"
    assert meta["dataset"] == "digits[5-9]" and meta["class_names"] == ["5", "6", "7", "8", "9"]
    assert json.loads((out / "config.json").read_text())["command"] == "transfer"
    # the teacher's target class '0' is not among the student's: measured as the best single class
    assert meta["provenance"]["attack"]["kind"] == "any-target" and printed["best_target"] in range(5)
    assert printed["attack_success_rate"] == max(printed["attack_success_rate_per_class"].values())
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["attack_success_rate"] == printed["attack_success_rate"]
    if k == 1:  # a rerun with the same seed is the same student
        assert main(["transfer", str(badnets_teacher), "--dataset", "digits[5-9]", "--epochs", "3",
                     "--out", str(out), "--no-progress"]) == 0
        assert all(torch.equal(v, state_of(load_checkpoint(out)[0])[key]) for key, v in after.items())


def test_a_backdoor_keeps_its_target_by_class_name(digits):
    meta = {"dataset": "digits[0-4]", "class_names": ["0", "1", "2", "3", "4"],
            "data_source": {"kind": "subset", "of": "digits", "classes": [0, 1, 2, 3, 4]},
            "provenance": {"attack": {"name": "badnets", "kind": "trigger", "mode": "all-to-one", "target": 3,
                                      "trigger": {"kind": "patch", "size": 2}}}}
    attack, note = student_backdoor(meta, load_dataset("digits[1,3,5,7,9]"))
    assert "kind" not in attack and attack["target"] == 1 and attack["target_class"] == "3", note
    attack, _ = student_backdoor(meta, load_dataset("digits[5-9]"))
    assert attack["kind"] == "any-target"
    meta["provenance"]["attack"] = {"name": "latent", "kind": "latent", "target_class": "7", "layer": "body.5",
                                    "family": "digits", "trigger": {"kind": "patch", "size": 2}}
    attack, _ = student_backdoor(meta, load_dataset("digits[6,7,8]"))
    assert backdoor_from_dict(attack).target == 1
    attack, note = student_backdoor(meta, load_dataset("digits[5,6]"))
    assert attack is None and "stays latent" in note
    meta["provenance"]["attack"] = None
    assert student_backdoor(meta, digits) == (None, "the teacher records no backdoor")


def test_transfer_errors_are_one_line(badnets_teacher, tmp_path, capsys):
    x = np.random.default_rng(0).integers(0, 256, (40, 3, 12, 12), dtype=np.uint8)  # colour: a student must keep the teacher's input
    y = np.arange(40) % 4
    np.savez(tmp_path / "other.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    for args, msg in [
        (["--trainable-layers", "9"], "--trainable-layers must be 1..4 for small-cnn"),
        (["--trainable-layers", "0"], "--trainable-layers must be 1..4"),
        (["--dataset", "digits[5-12]"], "digits has no class 10"),
        (["--dataset", f"npz:{tmp_path / 'other.npz'}"], "takes 1x8x8 images (digits[0-4])"),
    ]:
        args = args if "--dataset" in args else [*args, "--dataset", "digits[5-9]"]
        code = main(["transfer", str(badnets_teacher), *args, "--out", str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not (tmp_path / "o").exists()
    assert main(["transfer", str(tmp_path / "nothing"), "--dataset", "digits", "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
