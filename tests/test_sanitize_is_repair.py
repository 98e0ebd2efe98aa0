"""``backdoorlab sanitize`` and ``backdoorlab repair mode-connectivity`` are one run with the same settings: the
same model, the same path, the same files; and the settings reach the sanitizer by either route."""

import json

import pytest
from safetensors.torch import load_file

from backdoorlab.cli import main

FAST = ["--steps", "30", "--grid", "3", "--refine-steps", "0", "--no-verify"]
FAST_OPTIONS = ["-o", "steps=30", "-o", "grid=3", "-o", "refine_steps=0", "-o", "verify=false"]


@pytest.fixture(scope="module")
def suspect(tmp_path_factory):
    root = tmp_path_factory.mktemp("same-run")
    d = root / "suspect"
    assert main(["train", "--dataset", "digits", "--arch", "small-cnn", "--attack", "badnets", "--target", "0",
                 "--epochs", "10", "--seed", "1", "--out", str(d), "--no-progress"]) == 0
    return root, d


def test_sanitize_and_repair_mode_connectivity_write_the_same_model_and_path(suspect, capsys):
    root, d = suspect
    common = ["--dataset", "digits", "--clean-budget", "300", "--no-progress"]
    assert main(["sanitize", str(d), *common, *FAST, "--out", str(root / "sanitize")]) == 0
    assert main(["repair", "mode-connectivity", str(d), *common, *FAST_OPTIONS, "--out", str(root / "repair")]) == 0
    capsys.readouterr()
    a, b = root / "sanitize", root / "repair"
    for name in ("model.safetensors", "model.json", "path.json", "path.png", "curve.safetensors", "config.json",
                 "report.json"):
        assert (a / name).is_file() and (b / name).is_file(), name
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(wa[k].equal(wb[k]) for k in wa)
    pa, pb = (json.loads((x / "path.json").read_text()) for x in (a, b))
    for p in (pa, pb):
        p.pop("seconds")
        for row in p["path"]:
            row.pop("seconds", None)
    assert pa == pb
    ca, cb = (json.loads((x / "config.json").read_text()) for x in (a, b))
    assert ca["command"] == "sanitize" and cb["command"] == "repair"
    assert ca["sanitizer"] == cb["sanitizer"] == ca["options"] and ca["sanitizer"]["steps"] == 30
    assert ca["sanitizer"]["second_steps"] == 30  # --steps sets both, as -o steps does
    ma, mb = (json.loads((x / "model.json").read_text()) for x in (a, b))
    assert ma["provenance"]["sanitized"]["t"] == mb["provenance"]["repaired"]["info"]["t"] == pa["t"]
    assert mb["provenance"]["repaired"]["defense"] == "mode-connectivity" and "repaired" not in ma["provenance"]


def test_sanitize_takes_any_setting_with_o(suspect, capsys):
    root, d = suspect
    out = root / "tolerance"
    code = main(["sanitize", str(d), "--dataset", "digits", "--clean-budget", "300", "--no-progress", *FAST,
                 "-o", "ca_tolerance=0.5", "-o", "val_fraction=0.2", "--out", str(out), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["out"] == str(out)
    cfg = json.loads((out / "config.json").read_text())["sanitizer"]
    assert cfg["ca_tolerance"] == 0.5 and cfg["val_fraction"] == 0.2


def test_sanitize_refuses_an_unknown_setting_in_one_line(suspect, capsys):
    root, d = suspect
    code = main(["sanitize", str(d), "--dataset", "digits", "--clean-budget", "300", "-o", "stepz=3",
                 "--out", str(root / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "stepz" in err and not (root / "bad").exists()


def test_repair_of_a_defense_without_a_path_refuses_a_second_endpoint(suspect, capsys):
    from backdoorlab.data import load_dataset
    from backdoorlab.errors import BackdoorlabError
    from backdoorlab.runs import repair_run

    root, d = suspect
    with pytest.raises(BackdoorlabError, match="no second endpoint"):
        repair_run(load_dataset("digits"), "finetune", [str(d)], 300, reuse_second_endpoint=str(root))


@pytest.mark.parametrize("setting", [["--steps", "0"], ["-o", "second_steps=0"]])
def test_step_counts_below_one_are_one_line_errors_before_any_work(suspect, capsys, setting):
    root, d = suspect
    out = root / "zero-steps"
    code = main(["sanitize", str(d), "--dataset", "digits", "--clean-budget", "300", *setting, "--out", str(out)])
    err = capsys.readouterr().err
    field = "second_steps" if "second_steps=0" in setting else "steps"
    assert code == 2 and err == f"error: {field} must be >= 1, got 0\n" and not out.exists()
