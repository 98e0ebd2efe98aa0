"""The command line end to end on the bundled 8x8 digits (small and fast), and its one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from backdoorlab.cli import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two small backdoored digit models, trained once for the module."""
    root = tmp_path_factory.mktemp("cli")
    dirs = []
    for seed in (1, 2):
        d = root / f"m{seed}"
        assert main(["train", "--dataset", "digits", "--arch", "small-cnn", "--attack", "badnets", "--target", "0",
                     "--poison-rate", "0.1", "--epochs", "25", "--seed", str(seed), "--out", str(d), "--no-progress"]) == 0
        dirs.append(d)
    return root, dirs


def test_train_writes_checkpoint_with_provenance(trained):
    _, (m1, _) = trained
    meta = json.loads((m1 / "model.json").read_text())
    assert (m1 / "model.safetensors").exists()
    assert meta["arch"] == "small-cnn" and meta["dataset"] == "digits" and meta["seed"] == 1
    assert meta["provenance"]["attack"]["name"] == "badnets"
    assert meta["provenance"]["attack"]["trigger"] == {"kind": "patch", "size": 3, "position": "bottom-right",
                                                       "value": 1.0, "margin": 1}
    assert meta["metrics"]["attack_success_rate"] > 0.5
    assert not [p for p in m1.iterdir() if p.name.endswith(".tmp")]


def test_evaluate_json_uses_recorded_attack(trained, capsys):
    _, (m1, _) = trained
    code, out, _ = run(capsys, "evaluate", str(m1), "--dataset", "digits", "--json")
    assert code == 0
    r = json.loads(out)
    meta = json.loads((m1 / "model.json").read_text())
    assert r["clean_accuracy"] == pytest.approx(meta["metrics"]["clean_accuracy"])
    assert r["attack_success_rate"] == pytest.approx(meta["metrics"]["attack_success_rate"])
    assert 0 <= r["robust_accuracy"] <= 1 - r["attack_success_rate"] + 1e-9
    # an explicitly given attack overrides the sidecar: another target gives another ASR
    code, out, _ = run(capsys, "evaluate", str(m1), "--attack", "badnets", "--target", "5", "--json")
    assert code == 0 and json.loads(out)["backdoor"]["target"] == 5


def test_sanitize_two_models_outputs(trained, capsys):
    root, (m1, m2) = trained
    out_dir = root / "san"
    code, out, err = run(capsys, "sanitize", str(m1), str(m2), "--dataset", "digits", "--clean-budget", "300",
                         "--out", str(out_dir), "--steps", "60", "--grid", "5", "--json", "--no-progress")
    assert code == 0, err
    r = json.loads(out)
    assert set(r) >= {"t", "clean_accuracy", "attack_success_rate", "path"}
    assert [p["t"] for p in r["path"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for name in ("model.safetensors", "model.json", "path.json", "path.png", "curve.safetensors", "config.json"):
        assert (out_dir / name).exists(), name
    path = json.loads((out_dir / "path.json").read_text())
    assert path["t"] == r["t"] and len(path["points"] if "points" in path else path["path"]) == 5
    # the exported model is standalone: evaluate reproduces the reported numbers
    code, out, _ = run(capsys, "evaluate", str(out_dir), "--json")
    ev = json.loads(out)
    assert ev["clean_accuracy"] == pytest.approx(r["clean_accuracy"])
    assert ev["attack_success_rate"] == pytest.approx(r["attack_success_rate"])
    meta = json.loads((out_dir / "model.json").read_text())
    assert meta["provenance"]["sanitized"]["t"] == r["t"]
    check = r["refine_check"]  # the refine guard ran exactly when t is inside the path, and decided the refine
    assert (check is not None) == (0 < r["t"] < 1)
    if check is not None:  # the loss decides, unless the backdoor check found the refined model carrying it
        assert check["accepted"] == (r["refined_steps"] == 600)
        assert check["accepted"] == (check["val_loss_after_trial"] < check["val_loss_before"]) or \
            check.get("rejected_by") == "backdoor check"
        assert meta["provenance"]["sanitized"]["refine_check"] == check


@pytest.mark.parametrize("accepted", [False, True])
def test_sanitize_says_why_the_guard_refined_or_not(trained, capsys, monkeypatch, accepted):
    from backdoorlab.defenses import ModeConnectivitySanitizer
    root, (m1, m2) = trained
    record = {"val_accuracy_before": 0.95, "val_accuracy_after_trial": 0.96, "val_loss_before": 0.12,
              "val_loss_after_trial": 0.12 + (-0.01 if accepted else 0.01), "accepted": accepted, "n_val": 30}
    monkeypatch.setattr(ModeConnectivitySanitizer, "refine_check", lambda self, *a, **k: dict(record))
    code, out, err = run(capsys, "sanitize", str(m1), str(m2), "--dataset", "digits", "--clean-budget", "300",
                         "--out", str(root / f"san-guard-{accepted}"), "--steps", "20", "--grid", "3", "--no-verify",
                         "--tolerance", "1.0", "--refine-steps", "5", "--no-progress")
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("sanitized model at t = 0.50"))
    if accepted:
        assert "then fine-tuned on the whole budget (5 steps)" in line
    else:  # the loss decides, even when the accuracy rose
        assert "not refined (a trial refine on the fit part did not lower the validation loss: 0.1200 -> 0.1300, " \
               "accuracy 95.00% -> 96.00%)" in line


@pytest.mark.parametrize("reason, said", [
    ("no backdoor check (Neural Cleanse flags no label of the suspect)",
     "not refined (no backdoor check (Neural Cleanse flags no label of the suspect))"),
    ("backdoor check", "not refined (Neural Cleanse still found the backdoor on the refined model; the curve's "
                       "model is kept)")])
def test_sanitize_says_why_a_refine_was_left_out_without_a_trial(trained, capsys, monkeypatch, reason, said):
    # records without the guard's trial scores (the refine left out before or after it) print their reason
    from backdoorlab.defenses import ModeConnectivitySanitizer
    root, (m1, m2) = trained
    monkeypatch.setattr(ModeConnectivitySanitizer, "refine_check",
                        lambda self, *a, **k: {"accepted": False, "rejected_by": reason})
    code, out, err = run(capsys, "sanitize", str(m1), str(m2), "--dataset", "digits", "--clean-budget", "300",
                         "--out", str(root / f"san-left-out-{len(reason)}"), "--steps", "20", "--grid", "3",
                         "--no-verify", "--tolerance", "1.0", "--refine-steps", "5", "--no-progress")
    assert code == 0, err
    assert said in next(x for x in out.splitlines() if x.startswith("sanitized model at t = 0.50"))


def test_sanitize_one_model_makes_second_endpoint(trained, capsys):
    root, (m1, _) = trained
    code, out, err = run(capsys, "sanitize", str(m1), "--dataset", "digits", "--clean-budget", "300", "--out",
                         str(root / "san1"), "--steps", "40", "--grid", "3", "--second-endpoint", "scratch",
                         "--no-verify", "--no-progress")
    assert code == 0, err
    assert "second endpoint (scratch)" in out and "sanitized (t =" in out


@pytest.mark.parametrize("args,match", [
    (["train", "--dataset", "nope", "--arch", "small-cnn", "--out", "x"], "unknown dataset 'nope'; valid: 'cifar10'"),
    (["train", "--dataset", "digits", "--arch", "nope", "--out", "x"], "unknown architecture 'nope'; valid:"),
    (["train", "--dataset", "digits", "--arch", "small-cnn", "--attack", "badnets", "--poison-rate", "-0.1",
      "--out", "x"], "poison rate must lie in [0, 1]"),
    (["train", "--dataset", "digits", "--arch", "small-cnn", "--attack", "nope", "--out", "x"],
     "unknown attack 'nope'"),
    (["train", "--dataset", "digits", "--arch", "small-cnn", "--attack", "badnets", "--target", "12", "--out", "x"],
     "target label 12 is out of range"),
])
def test_bad_input_one_line_error(args, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and match in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_budget_larger_than_pool(trained, capsys, tmp_path):
    _, (m1, _) = trained
    code, _, err = run(capsys, "sanitize", str(m1), "--dataset", "digits", "--clean-budget", "5000", "--out",
                       str(tmp_path / "o"))
    assert code == 2 and "larger than the held-out pool of 400" in err and err.count("\n") == 1


def test_checkpoint_of_another_dataset_or_architecture(trained, capsys, tmp_path):
    _, (m1, m2) = trained
    code, _, err = run(capsys, "evaluate", str(m1), "--dataset", "mnist")
    assert code == 2 and "trained on 'digits', not 'mnist'" in err
    other = tmp_path / "other"
    assert main(["train", "--dataset", "digits", "--arch", "vgg16-bn", "--epochs", "1", "--out", str(other),
                 "--no-progress"]) == 0
    capsys.readouterr()
    code, _, err = run(capsys, "sanitize", str(m1), str(other), "--dataset", "digits", "--clean-budget", "200",
                       "--out", str(tmp_path / "o"))
    assert code == 2 and "different architectures" in err


def test_corrupt_checkpoint(trained, capsys, tmp_path):
    _, (m1, _) = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.json").write_text((m1 / "model.json").read_text())
    (bad / "model.safetensors").write_bytes((m1 / "model.safetensors").read_bytes()[:1000])
    code, _, err = run(capsys, "evaluate", str(bad), "--dataset", "digits")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    code, _, err = run(capsys, "evaluate", str(tmp_path / "missing"), "--dataset", "digits")
    assert code == 2 and "missing" in err


def test_out_that_would_lose_a_model_is_refused_before_any_work(trained, capsys, tmp_path):
    _, (m1, m2) = trained
    before = (m1 / "model.safetensors").read_bytes()
    # the suspect's own directory
    budget = ("--clean-budget", "200")
    for args in (("sanitize", str(m1), str(m2), *budget), ("repair", "finetune", str(m1), *budget),
                 ("attack", "single-bias", str(m1))):
        code, _, err = run(capsys, *args, "--dataset", "digits", "--out", str(m1))
        assert code == 2 and "is the model directory" in err and err.count("\n") == 1, (args, err)
    # the suspect's directory spelled with a trailing slash
    code, _, err = run(capsys, "sanitize", str(m1), str(m2), "--dataset", "digits", "--clean-budget", "200",
                       "--out", str(m2) + "/")
    assert code == 2 and "is the model directory" in err
    # another command's model (a trained model where a sanitized one would go)
    other = tmp_path / "clean"
    other.mkdir()
    (other / "model.json").write_text((m1 / "model.json").read_text())
    code, _, err = run(capsys, "sanitize", str(m1), "--dataset", "digits", "--clean-budget", "200",
                       "--out", str(other))
    assert code == 2 and "already holds a model written by `backdoorlab train`" in err and err.count("\n") == 1
    (other / "model.json").write_text("{not json")
    code, _, err = run(capsys, "repair", "finetune", str(m1), "--dataset", "digits", "--clean-budget", "200",
                       "--out", str(other))
    assert code == 2 and "not a readable backdoorlab checkpoint" in err
    assert (m1 / "model.safetensors").read_bytes() == before
    # a rerun of the same command into its own directory goes ahead
    rerun = tmp_path / "ft"
    for _ in range(2):
        code, _, err = run(capsys, "repair", "finetune", str(m1), "--dataset", "digits", "--clean-budget", "200",
                           "-o", "steps=5", "--out", str(rerun))
        assert code == 0, err
    code, _, err = run(capsys, "train", "--dataset", "digits", "--arch", "small-cnn", "--epochs", "1",
                       "--out", str(rerun), "--no-progress")
    assert code == 2 and "written by `backdoorlab repair`" in err


def test_missing_data_files_clear_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDOORLAB_MIRROR", "http://127.0.0.1:9")  # nothing listens there: download fails fast
    code, _, err = run(capsys, "train", "--dataset", "mnist", "--arch", "small-cnn", "--out", str(tmp_path / "o"),
                       "--data-dir", str(tmp_path / "empty"), "--no-progress")
    assert code == 2 and err.startswith("error: ") and "mnist" in err and err.count("\n") == 1


def test_console_script_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.run([sys.executable, "-m", "backdoorlab.cli", "train", "--dataset", "digits", "--arch", "resnet99",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "unknown architecture" in p.stderr
    p = subprocess.run([sys.executable, "-m", "backdoorlab.cli", "list"], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and "resnet20" in p.stdout and "digits" in p.stdout


def test_one_model_second_endpoint_row_is_the_made_model(trained, capsys):
    root, _ = trained
    path = json.loads((root / "san1" / "path.json").read_text())
    made = [e for e in path["endpoints"] if "made_by" in e]
    assert len(made) == 1 and made[0]["made_by"] == "scratch"
    # the second endpoint evaluated with its own batch-norm statistics is close to the path's t = 1 point
    # (same weights, statistics re-estimated on the fit part); the suspect's statistics would be far off
    assert abs(made[0]["clean_accuracy"] - path["path"][-1]["clean_accuracy"]) < 0.05


def test_reused_second_endpoint_gives_the_same_sanitized_model(trained, capsys):
    root, (m1, m2) = trained
    saved = root / "san1" / "second-endpoint"
    meta = json.loads((saved / "model.json").read_text())
    assert meta["provenance"]["second_endpoint"]["method"] == "scratch"
    # the saved endpoint is the path's t = 1 model: its own evaluation is the made endpoint's row
    made = [e for e in json.loads((root / "san1" / "path.json").read_text())["endpoints"] if "made_by" in e][0]
    assert meta["metrics"]["clean_accuracy"] == made["clean_accuracy"]
    # another suspect on the same budget and recipe: reusing the endpoint must give what training it again gives
    args = ["--dataset", "digits", "--clean-budget", "300", "--steps", "40", "--grid", "3", "--second-endpoint",
            "scratch", "--no-verify", "--no-progress", "--json"]
    code, out, err = run(capsys, "sanitize", str(m2), "--out", str(root / "fresh"), *args)
    assert code == 0, err
    fresh = json.loads(out)
    code, out, err = run(capsys, "sanitize", str(m2), "--out", str(root / "reused"), "--reuse-second-endpoint",
                         str(root / "san1"), *args)
    assert code == 0, err
    reused = json.loads(out)
    assert reused["t"] == fresh["t"] and reused["path"] == fresh["path"]
    assert (root / "reused" / "model.safetensors").read_bytes() == (root / "fresh" / "model.safetensors").read_bytes()
    config = json.loads((root / "reused" / "config.json").read_text())
    assert config["reused_second_endpoint"] == str(root / "san1")
    # made for another budget, another recipe, or not a second endpoint at all: a one-line error
    for extra, match in [(["--clean-budget", "200"], "clean_budget 300 there, 200 here"),
                         (["--steps", "30"], "steps 40 there, 30 here")]:
        bad = args + extra
        code, _, err = run(capsys, "sanitize", str(m2), "--out", str(root / "bad"), "--reuse-second-endpoint",
                           str(saved), *bad)
        assert code != 0 and match in err and "Traceback" not in err
    code, _, err = run(capsys, "sanitize", str(m2), "--out", str(root / "bad"), "--reuse-second-endpoint", str(m1),
                       *args)
    assert code != 0 and "not a second endpoint saved by sanitize" in err
    code, _, err = run(capsys, "sanitize", str(m1), str(m2), "--out", str(root / "bad"), "--reuse-second-endpoint",
                       str(saved), *args)
    assert code != 0 and "one suspect model, but two were given" in err
    assert not (root / "bad").exists()


def test_sanitize_one_model_default_is_the_permuted_endpoint_with_its_report(trained, capsys):
    root, (m1, _) = trained
    out_dir = root / "san-perm"
    code, out, err = run(capsys, "sanitize", str(m1), "--dataset", "digits", "--clean-budget", "300", "--out",
                         str(out_dir), "--steps", "40", "--grid", "5", "--refine-steps", "0", "--json", "--no-progress")
    assert code == 0, err
    r = json.loads(out)
    assert [s["stage"] for s in r["stages"]] == [1] and 0.2 <= r["t"] <= 0.8
    assert {"within_tolerance", "tolerance", "min_distance", "note"} <= set(r["verdict"])
    assert isinstance(r["warnings"], list)
    path = json.loads((out_dir / "path.json").read_text())
    assert path["unit_groups"]["units"] > 0 and "at least 0.20 from every suspect end" in path["rule"]
    assert (out_dir / "path.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out_dir / "second-endpoint").exists()  # a permuted copy depends on the suspect: nothing to reuse


def test_sanitize_strict_exits_3_when_the_export_falls_short(trained, capsys, monkeypatch):
    from backdoorlab.defenses import mode_connectivity
    root, (m1, m2) = trained
    real = mode_connectivity.select_guarded

    def short(*args, **kwargs):
        ts, verdict = real(*args, **kwargs)
        return ts, {**verdict, "within_tolerance": False}

    monkeypatch.setattr(mode_connectivity, "select_guarded", short)
    args = ["sanitize", str(m1), str(m2), "--dataset", "digits", "--clean-budget", "300", "--steps", "20", "--grid",
            "3", "--refine-steps", "0", "--no-verify", "--no-progress"]
    code, out, err = run(capsys, *args, "--out", str(root / "san-lax"))
    assert code == 0 and "warning: the exported model costs more than the accuracy tolerance" in err
    code, out, err = run(capsys, *args, "--out", str(root / "san-strict"), "--strict")
    assert code == 3 and "error: --strict: 1 warning(s)" in err
    assert (root / "san-strict" / "model.safetensors").exists()  # written all the same, with the warning
    assert json.loads((root / "san-strict" / "path.json").read_text())["warnings"]
