"""The retuning attack (``backdoorlab retune``) on the bundled 8x8 digits: it brings back the backdoor of a repaired
model, the clean control is retuned the same way, the retuning set comes from the training part, and bad input is
one line with nothing written."""

import json

import pytest
import torch

from backdoorlab.attacks import backdoor_of
from backdoorlab.budget import holdout_split
from backdoorlab.cli import main
from backdoorlab.curves import model_on_line
from backdoorlab.defenses.qra import PerturbationGenerator, QRAConfig, query_reactivation
from backdoorlab.defenses.retune import RetuneConfig, retune, retuning_set
from backdoorlab.errors import BackdoorlabError
from backdoorlab.metrics import evaluate
from backdoorlab.models import create_model, load_checkpoint
from backdoorlab.runs import repair_run, retune_run, train_defaults, train_run
from backdoorlab.tensors import to_float
from backdoorlab.train import TrainConfig
from conftest import train_badnets_suspect

# a small retuning set: on the digits a repaired suspect relearns its backdoor from it within 10 steps
SMALL = RetuneConfig(poison_images=5, clean_images=100, steps=10)
SMALL_FLAGS = ["--poison-images", "5", "--clean-images", "100", "--steps", "10"]


@pytest.fixture(scope="module")
def models(digits, tmp_path_factory):
    """A BadNets suspect repaired by FST (ASR near 0), and a clean control of the same recipe."""
    root = tmp_path_factory.mktemp("retune")
    train_badnets_suspect(digits, root / "suspect")
    repair_run(digits, "fst", [str(root / "suspect")], 300, str(root / "repaired"), {}, progress=False)
    cfg = TrainConfig(seed=1, **train_defaults(digits.name, "small-cnn"))
    train_run(digits, "small-cnn", cfg, None, out=str(root / "clean"), progress=False)
    return root


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_retune_brings_back_the_backdoor_of_a_repaired_model_and_retunes_the_control_alike(digits, models,
                                                                                            tmp_path):
    out = tmp_path / "ra"
    report = retune_run(digits, str(models / "repaired"), str(out), control_dir=str(models / "clean"), cfg=SMALL,
                        progress=False, suspect_dir=str(models / "suspect"))
    assert report["attack_success_rate"] < 0.05  # FST hid the backdoor
    assert report["post_retune_attack_success_rate"] > 0.5  # ten steps on five poisoned images bring it back
    assert report["post_retune_clean_accuracy"] > 0.95
    control = report["control"]
    assert control["attack_success_rate"] < 0.05
    # the control is retuned on the same images with the same recipe
    meta = load_checkpoint(models / "repaired")[1]
    rset = retuning_set(digits, backdoor_of(meta), SMALL, holdout=400)
    clean_model = load_checkpoint(models / "clean")[0]
    direct = evaluate(retune(clean_model, rset.x, rset.y, SMALL, progress=False), digits.test_x, digits.test_y,
                      backdoor_of(meta), digits.num_classes)
    assert control["post_retune_attack_success_rate"] == direct["attack_success_rate"]
    assert control["post_retune_clean_accuracy"] == direct["clean_accuracy"]
    # the backdoor-connected path: from the model (t = 0) to its retuned self (t = 1)
    path = report["path"]
    assert [r["t"] for r in path] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert path[0]["attack_success_rate"] == report["attack_success_rate"]
    assert path[-1]["attack_success_rate"] == report["post_retune_attack_success_rate"]
    assert path[1]["attack_success_rate"] < path[-1]["attack_success_rate"]
    # the first leg: from the suspect (t = 0, its backdoor whole) to the repaired model (t = 1)
    leg = report["suspect_path"]
    suspect_metrics = evaluate(load_checkpoint(models / "suspect")[0], digits.test_x, digits.test_y,
                               backdoor_of(meta), digits.num_classes)
    assert [r["t"] for r in leg] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert leg[0]["attack_success_rate"] == suspect_metrics["attack_success_rate"] > 0.9
    assert {**leg[-1], "t": 0.0} == path[0]  # the repaired model: the end of this leg, the start of the other
    assert (out / "suspect_path.png").stat().st_size > 0
    # outputs: report, config, figure and the retuned checkpoint, which says where it came from
    assert json.loads((out / "report.json").read_text())["path"] == path
    assert json.loads((out / "config.json").read_text())["options"]["poison_images"] == 5
    assert (out / "path.png").stat().st_size > 0
    retuned, retuned_meta = load_checkpoint(out / "retuned")
    assert retuned_meta["provenance"]["retuned"]["from"] == str(models / "repaired")
    again = evaluate(retuned, digits.test_x, digits.test_y, backdoor_of(retuned_meta), digits.num_classes)
    assert again["attack_success_rate"] == report["post_retune_attack_success_rate"]


def test_retuning_set_is_drawn_from_the_training_part_outside_the_held_out_pool(digits, models):
    backdoor = backdoor_of(load_checkpoint(models / "repaired")[1])
    cfg = RetuneConfig(poison_images=20, clean_images=300, seed=3)
    rset = retuning_set(digits, backdoor, cfg, holdout=400)
    _, pool = holdout_split(len(digits.train_y), 400)
    idx = rset.indices
    assert len(idx) == 320 and len(set(idx.tolist())) == 320
    assert not set(idx.tolist()) & set(pool.tolist())
    poisoned, clean = idx[rset.poisoned], idx[~rset.poisoned]
    assert len(poisoned) == 20 and (rset.y[rset.poisoned] == backdoor.target).all()
    assert (digits.train_y[poisoned] != backdoor.target).all()  # images the backdoor applies to
    assert torch.equal(rset.x[~rset.poisoned], to_float(digits.train_x[clean]))
    assert torch.equal(rset.y[~rset.poisoned], digits.train_y[clean])
    assert not torch.equal(rset.x[rset.poisoned], to_float(digits.train_x[poisoned]))  # the trigger is stamped
    assert torch.equal(retuning_set(digits, backdoor, cfg, holdout=400).indices, idx)  # seeded
    other = retuning_set(digits, backdoor, RetuneConfig(poison_images=20, clean_images=300, seed=4), holdout=400)
    assert not torch.equal(other.indices, idx)


def test_retune_is_seeded_and_leaves_the_model_as_it_was(digits, models):
    model, meta = load_checkpoint(models / "repaired")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rset = retuning_set(digits, backdoor_of(meta), SMALL, holdout=400)
    a = retune(model, rset.x, rset.y, SMALL, progress=False)
    b = retune(model, rset.x, rset.y, SMALL, progress=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert any(not torch.equal(v, before[k]) for k, v in a.state_dict().items())


def test_model_on_line_runs_from_one_model_to_the_other():
    torch.manual_seed(0)
    a = create_model("small-cnn", num_classes=3, in_channels=1, input_size=[8, 8])
    b = create_model("small-cnn", num_classes=3, in_channels=1, input_size=[8, 8])
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(v, sa[k]) for k, v in model_on_line(a, b, 0.0).state_dict().items())
    assert all(torch.equal(v, sb[k]) for k, v in model_on_line(a, b, 1.0).state_dict().items())
    mid = model_on_line(a, b, 0.5).state_dict()
    key = next(k for k, v in sa.items() if v.is_floating_point() and not torch.equal(v, sb[k]))
    assert torch.allclose(mid[key], (sa[key] + sb[key]) / 2)


def test_cli_json_prints_the_four_figures_and_the_controls(models, tmp_path, capsys):
    out = tmp_path / "ra"
    code, stdout, err = cli(capsys, "retune", str(models / "repaired"), "--dataset", "digits", "--control",
                            str(models / "clean"), *SMALL_FLAGS, "--out", str(out), "--json", "--no-progress")
    assert code == 0, err
    printed = json.loads(stdout)
    keys = {"clean_accuracy", "attack_success_rate", "post_retune_clean_accuracy", "post_retune_attack_success_rate"}
    assert keys <= set(printed) and set(printed["control"]) == keys
    assert printed["post_retune_attack_success_rate"] > printed["attack_success_rate"]
    assert (out / "report.json").is_file() and (out / "retuned" / "model.json").is_file()


@pytest.fixture(scope="module")
def other_arch(digits, models):
    """A resnet20 on the digits, barely trained: a control of another architecture."""
    cfg = TrainConfig(epochs=0, steps=2, batch_size=64, seed=0)
    train_run(digits, "resnet20", cfg, None, out=str(models / "resnet20"), progress=False)
    return models / "resnet20"


@pytest.mark.parametrize("case", ["no recorded attack", "set larger than the training part", "zero steps",
                                  "control of another architecture", "too many poisoned images", "qra without control",
                                  "qra option without qra", "qra eps out of range", "qra set too large"])
def test_bad_input_is_one_line_and_writes_nothing(models, other_arch, tmp_path, capsys, case):
    out = tmp_path / "ra"
    args = {"no recorded attack": [str(models / "clean"), *SMALL_FLAGS],
            "set larger than the training part": [str(models / "repaired"), "--clean-images", "5000"],
            "zero steps": [str(models / "repaired"), "--steps", "0"],
            "control of another architecture": [str(models / "repaired"), *SMALL_FLAGS, "--control",
                                                str(other_arch)],
            "too many poisoned images": [str(models / "repaired"), "--poison-images", "880", "--clean-images", "0"],
            "qra without control": [str(models / "repaired"), *SMALL_FLAGS, "--qra"],
            "qra option without qra": [str(models / "repaired"), *SMALL_FLAGS, "--qra-eps", "0.1"],
            "qra set too large": [str(models / "repaired"), *SMALL_FLAGS, "--qra", "--control", str(models / "clean")],
            "qra eps out of range": [str(models / "repaired"), *SMALL_FLAGS, "--qra", "--qra-eps", "2",
                                     "--control", str(models / "clean")],
            }[case]
    code, _, err = cli(capsys, "retune", *args, "--dataset", "digits", "--out", str(out), "--no-progress")
    expected = {"no recorded attack": "records no attack", "set larger than the training part": "larger than the 897",
                "zero steps": "steps must be >= 1",
                "control of another architecture": "is a resnet20, the model a small-cnn",
                "too many poisoned images": "can carry the trigger", "qra without control": "--qra needs --control",
                "qra option without qra": "add --qra",
                "qra set too large": "query-based reactivation: an image set of 500 poisoned + 500 clean images",
                "qra eps out of range": "eps must be in (0, 1]"}[case]
    assert code == 2
    assert err.startswith("error:") and err.count("\n") == 1 and expected in err, err
    assert not out.exists()


def test_a_backdoor_without_a_trigger_cannot_be_retuned_with(digits):
    class Fault:
        parts = []

        def to_dict(self):
            return {"kind": "fault"}

    with pytest.raises(BackdoorlabError, match="has none"):
        retuning_set(digits, Fault(), SMALL)


QRA = QRAConfig(poison_images=100, clean_images=100, epochs=30, batch_size=50, hidden=128, eps=0.25)


def test_qra_measures_the_trigger_with_its_perturbation_on_the_model_and_the_control(digits, models):
    """On the unrepaired suspect (whose retuned self obeys the trigger as it does) the learned perturbation keeps
    the triggered images on the target and the clean images right, while the clean control, which the
    perturbation must leave right, does not follow the trigger; more epochs lower the generator's loss."""
    model, meta = load_checkpoint(str(models / "suspect"))
    control, _ = load_checkpoint(str(models / "clean"))
    backdoor = backdoor_of(meta)
    rset = retuning_set(digits, backdoor, SMALL)
    retuned = retune(model, rset.x, rset.y, SMALL, progress=False)
    r = query_reactivation(digits, backdoor, model, retuned, control, QRA)
    assert r["attack_success_rate"] > 0.9 and r["control_attack_success_rate"] < 0.2, r
    assert r["clean_accuracy"] > 0.8 and r["config"]["eps"] == 0.25
    assert query_reactivation(digits, backdoor, model, retuned, control, QRA) == r  # seeded
    short = query_reactivation(digits, backdoor, model, retuned, control, QRAConfig(**{**QRA.to_dict(), "epochs": 1}))
    assert r["training"]["loss"] < short["training"]["loss"]
    assert all(p.requires_grad for p in model.parameters())  # the models are left as they were


def test_generator_bounds_the_perturbation_by_eps():
    gen = PerturbationGenerator((1, 8, 8), eps=0.1, hidden=16)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        for p in gen.parameters():
            p.mul_(50)  # saturate the tanh
        delta = gen(x)
    assert delta.shape == x.shape and delta.abs().max() <= 0.1 + 1e-6 and delta.abs().max() > 0.09
    assert gen.perturb(x).min() >= 0 and gen.perturb(x).max() <= 1


def test_cli_qra_prints_its_figures_and_records_its_config(models, tmp_path, capsys):
    out = tmp_path / "qra"
    code, stdout, err = cli(capsys, "retune", str(models / "repaired"), "--dataset", "digits", "--control",
                            str(models / "clean"), *SMALL_FLAGS, "--qra", "--qra-epochs", "2", "--qra-images", "50",
                            "--out", str(out),
                            "--json", "--no-progress")
    assert code == 0, err
    printed = json.loads(stdout)
    assert {"qra_attack_success_rate", "qra_control_attack_success_rate", "qra_clean_accuracy"} <= set(printed)
    assert json.loads((out / "config.json").read_text())["qra"]["epochs"] == 2
    assert json.loads((out / "report.json").read_text())["qra"]["training"]["loss"] > 0


def test_suspect_path_reaches_an_averaged_export_member_by_member(digits, models, other_arch, tmp_path):
    """The sanitizer may export the average of two networks (an ensemble); the line from the suspect to it runs
    from an ensemble of copies of the suspect, so it starts at the suspect's own predictions and ends at the
    export's."""
    from backdoorlab.models import Ensemble, save_checkpoint
    from backdoorlab.models.sidecar import derived_sidecar
    from backdoorlab.runs.retune import suspect_at_model_shape

    suspect, suspect_meta = load_checkpoint(str(models / "suspect"))
    repaired, meta = load_checkpoint(str(models / "repaired"))
    export = Ensemble([repaired, suspect])
    save_checkpoint(export, tmp_path / "export", {**derived_sidecar(meta), "arch": export.arch,
                                                  "arch_args": export.arch_args})
    export, export_meta = load_checkpoint(str(tmp_path / "export"))
    start = suspect_at_model_shape(suspect, suspect_meta, export, export_meta)
    x = to_float(digits.test_x[:32])
    with torch.no_grad():
        assert torch.allclose(model_on_line(start, export, 0.0).eval()(x).softmax(1), suspect.eval()(x).softmax(1),
                              atol=1e-5)
        assert torch.allclose(model_on_line(start, export, 1.0).eval()(x), export.eval()(x), atol=1e-5)
    report = retune_run(digits, str(tmp_path / "export"), suspect_dir=str(models / "suspect"), cfg=SMALL,
                        progress=False, path_points=3)
    assert report["suspect_path"][0]["attack_success_rate"] > 0.9  # t = 0: the suspect
    with pytest.raises(BackdoorlabError, match="different architectures"):
        suspect_at_model_shape(*load_checkpoint(str(other_arch)), export, export_meta)
