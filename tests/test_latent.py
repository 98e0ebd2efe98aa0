"""The latent backdoor: its pieces (target images, the optimised trigger, the sidecar round trip), a teacher whose
student carries it, and one-line errors."""

import copy
import json

import pytest
import torch

from backdoorlab.attacks import backdoor_from_dict, build_attack
from backdoorlab.attacks.any_target import AnyTargetBackdoor
from backdoorlab.attacks.latent import (LatentBackdoor, LatentConfig, mean_representation, optimise_trigger,
                                        relative_distance, square_trigger, target_images)
from backdoorlab.cli import main
from backdoorlab.data import load_dataset
from backdoorlab.errors import BackdoorlabError
from backdoorlab.models import new_model
from backdoorlab.tensors import to_float
from backdoorlab.triggers import PatchTrigger


@pytest.fixture(scope="module")
def teacher_task(digits):
    return load_dataset("digits[0-4]")


def test_target_images_come_from_the_parent_outside_its_pool(digits, teacher_task):
    from backdoorlab.budget import training_part
    x, test, label = target_images(teacher_task, "7", 50, seed=0)
    px, py = training_part(digits)
    part = {bytes(img.numpy()) for img in px[py == 7]}
    assert label == 7 and len(x) == 50 and all(bytes(img.numpy()) in part for img in x)
    assert torch.equal(test, digits.test_x[digits.test_y == 7])
    assert torch.equal(target_images(teacher_task, "7", 50, seed=0)[0], x)  # seeded
    for args, msg in [(("3", 10), "is in the teacher's task"), (("x", 10), "not a class of digits; valid: 5, 6"),
                      (("7", 10_000), "training images of class '7'")]:
        with pytest.raises(BackdoorlabError, match=msg):
            target_images(teacher_task, *args)
    with pytest.raises(BackdoorlabError, match="train the teacher on a class subset"):
        target_images(digits, "7", 10)


def test_the_target_class_is_a_name_or_a_label():
    from backdoorlab.attacks.latent import class_label
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert class_label(names, "Sneaker") == 7 and class_label(names, "7") == 7 and class_label(names, " 9") == 9
    assert class_label(names, "10") is None and class_label(names, "-1") is None and class_label(names, "boot") is None
    assert class_label(["3", "2", "1"], "1") == 2  # a name wins over a label


def test_the_trigger_pulls_triggered_images_towards_the_target(teacher_task):
    torch.manual_seed(0)
    model = new_model("small-cnn", teacher_task, seed=0).eval()
    xt, _, _ = target_images(teacher_task, "7", 40)
    target = mean_representation(model, xt, "body.5")
    trigger, losses = optimise_trigger(model, "body.5", teacher_task.train_x, target, size=3,
                                       position="top-left", margin=1, steps=60, lr=0.1, batch_size=32,
                                       progress=False)
    assert sum(losses[-10:]) / 10 < 0.9 * sum(losses[:10]) / 10
    x = to_float(teacher_task.test_x[:64])
    stamped = trigger.apply(x)
    assert torch.equal(stamped[..., 4:, :], x[..., 4:, :]) and torch.equal(stamped[..., 1:4, 1:4],
                                                                          stamped[0:1, :, 1:4, 1:4].expand(64, 1, 3, 3))
    from backdoorlab.models.layers import representation
    with torch.no_grad():
        assert relative_distance(representation(model, stamped, "body.5"), target) < \
            relative_distance(representation(model, x, "body.5"), target)


def test_a_grey_trigger_keeps_its_8_bit_values():
    values = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]])
    trigger = square_trigger(values, "bottom-right", 0)
    stamped = trigger.apply(torch.zeros(1, 1, 4, 4))
    assert torch.equal(stamped[0, 0, 2:, 2:] * 255, (values[0] * 255).round())


def test_backdoors_round_trip_through_the_sidecar():
    latent = LatentBackdoor(square_trigger(torch.rand(1, 3, 3), (2, 3), 0), "7", "body.5", "mnist")
    again = backdoor_from_dict(json.loads(json.dumps(latent.to_dict())))
    assert isinstance(again, LatentBackdoor) and again.to_dict() == latent.to_dict()
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(again.trigger.apply(x), latent.trigger.apply(x))
    assert again.measure(None, x, torch.zeros(2), 5)["attack_success_rate"] is None
    with pytest.raises(BackdoorlabError, match="not among this model's classes"):
        again.eligible(torch.zeros(2))
    orphan = backdoor_from_dict(AnyTargetBackdoor(PatchTrigger(2)).to_dict())
    assert isinstance(orphan, AnyTargetBackdoor) and orphan.trigger.size == 2


def test_latent_config_and_builder():
    assert LatentConfig().target_images == 300 and LatentConfig().layer is None
    with pytest.raises(BackdoorlabError, match="needs the target class"):
        build_attack("latent", image_shape=(1, 8, 8), num_classes=5)
    with pytest.raises(BackdoorlabError, match="does not fit"):
        build_attack("latent", image_shape=(1, 8, 8), num_classes=5, target_class="7", size=9)


def test_a_latent_teacher_infects_its_student(tmp_path, capsys):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    assert main(["train", "--dataset", "digits[0-4]", "--arch", "small-cnn", "--epochs", "15", "--attack", "latent",
                 "--target-class", "7", "--target-images", "60", "--trigger-size", "3", "--out", str(teacher),
                 "--no-progress", "--json"]) == 0
    t = json.loads(capsys.readouterr().out)
    assert t["attack_success_rate"] is None and t["latent_target_class"] == "7" and t["clean_accuracy"] > 0.9
    meta = json.loads((teacher / "model.json").read_text())
    attack = meta["provenance"]["attack"]
    assert attack["kind"] == "latent" and attack["family"] == "digits" and attack["layer"] == "body.5"
    assert meta["arch_args"]["num_classes"] == 5  # the target's output was removed
    assert meta["provenance"]["report"]["extended_after_injection"]["triggered_to_target"] > 0.9
    assert main(["transfer", str(teacher), "--dataset", "digits[5-9]", "--out", str(student), "--no-progress",
                 "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["backdoor"]["target"] == 2 and s["backdoor"]["target_class"] == "7"  # '7' is label 2 of digits[5-9]
    assert s["attack_success_rate"] >= 0.9 and s["clean_accuracy"] > 0.9
    assert main(["evaluate", str(student), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["attack_success_rate"] == s["attack_success_rate"]


@pytest.mark.parametrize("args, msg", [
    (["--target-class", "3"], "is in the teacher's task"),
    (["--target-class", "7", "--target", "2"], "--target does not apply to --attack latent"),
    (["--target-class", "7", "--latent-layer", "fc"], "not a layer of small-cnn before its classifier"),
    (["--target-class", "7", "--all-to-all"], "no all-to-all mode"),
    (["--target-class", "7", "--alpha", "0.2"], "--alpha does not apply to the latent attack"),
    ([], "needs the target class"),
    (["--target-class", "7", "-o", "nope=1"], "unknown option 'nope' for latent"),
    (["--target-class", "7", "-o", "preserve=-1"], "preserve must be >= 0"),
    (["--target-class", "7", "-o", "size=4", "--trigger-size", "4"], "-o size and --trigger-size set the same"),
    (["-o", "target_class=7", "--target-class", "7"], "-o target_class and --target-class set the same"),
])
def test_latent_errors_are_one_line(tmp_path, capsys, args, msg):
    code = main(["train", "--dataset", "digits[0-4]", "--arch", "small-cnn", "--attack", "latent", *args,
                 "--out", str(tmp_path / "x"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()
    code = main(["train", "--dataset", "digits[0-4]", "--arch", "small-cnn", "--attack", "badnets",
                 "--target-class", "7", "--out", str(tmp_path / "x")])
    assert code == 2 and "--target-class is for --attack latent" in capsys.readouterr().err
    code = main(["train", "--dataset", "digits[0-4]", "--arch", "small-cnn", "--attack", "badnets", "-o", "size=3",
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "-o sets an attack that trains the model" in capsys.readouterr().err


def test_preserve_keeps_clean_representations_where_they_were(teacher_task):
    from backdoorlab.attacks.latent import inject
    from backdoorlab.models.layers import representation
    from backdoorlab.train import TrainConfig
    xt, _, _ = target_images(teacher_task, "7", 40)
    x = torch.cat([teacher_task.train_x[:400], xt])
    y = torch.cat([teacher_task.train_y[:400], torch.full((40,), 5)])
    torch.manual_seed(0)
    start = new_model("small-cnn", teacher_task, seed=0)
    start.fc = torch.nn.Linear(128, 6)  # the extended teacher: one more output, the target
    probe = to_float(teacher_task.test_x[:200])
    with torch.no_grad():
        before = representation(start.eval(), probe, "body.5")
    moved = {}
    for preserve in (0.0, 10.0):
        model = copy.deepcopy(start)
        cfg = TrainConfig(epochs=3, lr=0.05, batch_size=64, schedule="constant", seed=0)
        inject(model, "body.5", PatchTrigger(3), x, y, 5, xt, cfg, progress=False, preserve=preserve)
        with torch.no_grad():
            after = representation(model.eval(), probe, "body.5")
        moved[preserve] = float(((after - before) ** 2).mean() / (before ** 2).mean())
    assert moved[10.0] < 0.5 * moved[0.0], moved
