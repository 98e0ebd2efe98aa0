"""Every command's ``--json`` output keeps its fields: a script that reads them keeps working across refactors.
Each command runs once on the bundled digits with tiny settings; the test checks the keys, not the figures."""

import json

import pytest

from backdoorlab.cli import main

METRICS = {"clean_accuracy", "attack_success_rate", "robust_accuracy"}


def run_json(capsys, *args) -> dict:
    code = main([*args, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def suspect(tmp_path_factory):
    root = tmp_path_factory.mktemp("json")
    d = root / "suspect"
    assert main(["train", "--dataset", "digits", "--arch", "small-cnn", "--attack", "badnets", "--epochs", "8",
                 "--seed", "1", "--out", str(d), "--no-progress"]) == 0
    return root, d


def test_train_and_evaluate(suspect, capsys):
    root, _ = suspect
    r = run_json(capsys, "train", "--dataset", "digits", "--arch", "small-cnn", "--epochs", "1", "--out",
                 str(root / "clean"), "--no-progress")
    assert METRICS | {"out"} <= set(r)
    r = run_json(capsys, "evaluate", str(root / "suspect"))
    assert METRICS | {"backdoor", "n_test"} <= set(r)


def test_sanitize_and_repair(suspect, capsys):
    root, d = suspect
    common = ["--dataset", "digits", "--clean-budget", "300", "--no-progress"]
    r = run_json(capsys, "sanitize", str(d), *common, "--steps", "20", "--grid", "3", "--refine-steps", "0",
                 "--no-verify", "--out", str(root / "san"))
    assert {"t", "ensemble", "clean_accuracy", "attack_success_rate", "path", "stages", "refined_steps",
            "refine_check", "verdict", "warnings", "out"} <= set(r)
    path_json = json.loads((root / "san" / "path.json").read_text())
    assert {"t", "ensemble", "endpoints", "curve", "rule", "verdict", "warnings", "refined_steps", "refine_check",
            "reused_second_endpoint", "unit_groups", "seconds", "path", "stages"} <= set(path_json)
    r = run_json(capsys, "repair", "noise", str(d), *common, "-o", "sigmas=0.1", "-o", "draws=1", "--out", str(root / "noise"))
    assert set(r) >= {"defense", "before", "after", "seconds", "out"}
    report = json.loads((root / "noise" / "report.json").read_text())
    assert {"defense", "before", "after", "seconds", "info", "clean_budget"} <= set(report)
    config = json.loads((root / "noise" / "config.json").read_text())
    assert {"command", "defense", "models", "dataset", "clean_budget", "budget_seed", "holdout", "options",
            "evaluated_backdoor", "backdoorlab_version"} <= set(config)


def test_scan(suspect, capsys):
    root, d = suspect
    r = run_json(capsys, "scan", str(d), "--dataset", "digits", "--clean-budget", "300", "--no-progress",
                 "-o", "epochs=2", "-o", "batches_per_epoch=2", "-o", "batch_size=32")
    assert {"backdoored", "suspected_target", "suspected_target_name", "anomaly_index", "threshold",
            "flagged_labels", "l1_norms", "anomaly_indices", "attack_success", "strip", "seconds", "config",
            "report"} <= set(r)


def test_attack(suspect, capsys):
    root, d = suspect
    r = run_json(capsys, "attack", "single-bias", str(d), "--images", "1", "--out", str(root / "sba"),
                 "--no-progress")
    assert {"attack", "before", "after", "seconds", "relative_weight_change", "out"} <= set(r)


def test_evasion_commands(suspect, capsys):
    root, d = suspect
    r = run_json(capsys, "robustness", str(d), "--attack", "pgd", "--eps", "0.1", "--steps", "2", "--n-images",
                 "20", "--no-progress")
    assert {"model", "dataset", "attack", "defense", "clean_accuracy", "robust_accuracy", "clean_loss",
            "robust_loss", "n", "seconds"} <= set(r)
    train = ["--dataset", "digits", "--arch", "small-cnn", "--epochs", "1", "--eval-eps", "0.1", "--eval-steps",
             "2", "--eval-images", "20", "--no-progress"]
    r = run_json(capsys, "adv-train", *train, "--pgd-steps", "1", "--out", str(root / "adv"))
    assert {"clean_accuracy", "robust_accuracy", "pgd", "defense", "out"} <= set(r)
    r = run_json(capsys, "distill", *train, "--out", str(root / "distilled"))
    assert {"clean_accuracy", "robust_accuracy", "pgd", "defense", "out"} <= set(r)
    r = run_json(capsys, "path-robustness", str(root / "clean"), str(root / "adv"), "--out", str(root / "path"),
                 "--eps", "0.1", "--pgd-steps", "1", "--curve-steps", "5", "--grid", "2", "--n-images", "10",
                 "--hessian-images", "2", "--hessian-iters", "1", "--no-progress")
    assert {"pearson", "barrier", "path", "curve_source", "out"} <= set(r)


def test_retune(suspect, capsys):
    root, d = suspect
    control = root / "retune-control"
    assert main(["train", "--dataset", "digits", "--arch", "small-cnn", "--epochs", "1", "--out", str(control),
                 "--no-progress"]) == 0
    capsys.readouterr()
    r = run_json(capsys, "retune", str(d), "--dataset", "digits", "--control", str(control), "--poison-images", "2",
                 "--clean-images", "10", "--steps", "1", "--out", str(root / "retune"), "--no-progress")
    four = {"clean_accuracy", "attack_success_rate", "post_retune_clean_accuracy", "post_retune_attack_success_rate"}
    assert set(r) == four | {"control", "out"} and set(r["control"]) == four
