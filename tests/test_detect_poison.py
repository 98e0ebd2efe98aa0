"""``backdoorlab detect-poison``: the training-set detectors from the command line, on the bundled digits."""

import json

import numpy as np
import pytest

from backdoorlab.cli import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def clean_digits_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("clean") / "model"
    assert main(["train", "--dataset", "digits", "--arch", "small-cnn", "--epochs", "3", "--seed", "2", "--out",
                 str(d), "--no-progress"]) == 0
    return d


@pytest.mark.parametrize("detector", ["activation-clustering", "spectral-signatures"])
def test_json_scores_the_flagged_images_against_the_recorded_poison(digits_suspect, capsys, tmp_path, detector):
    _, meta, d = digits_suspect
    out = tmp_path / "det"
    code, text, err = run(capsys, "detect-poison", str(d), "--dataset", "digits", "--detector", detector,
                          "--clean-budget", "200", "--out", str(out), "--json", "--no-progress")
    assert code == 0, err
    r = json.loads(text)
    assert r["detector"] == detector
    assert r["training_set"] == "rebuilt from the checkpoint's sidecar"
    assert r["poisoned"] == meta["provenance"]["poisoned"]
    saved = json.loads((out / "detection.json").read_text())
    flagged = np.asarray(saved["flagged_indices"])
    assert len(flagged) == r["flagged"] == sum(r["flagged_per_label"].values())
    assert np.all(np.diff(flagged) > 0) and (len(flagged) == 0 or flagged[-1] < r["training_images"])
    # precision and recall recomputed from the flagged indices and the rebuilt poisoned set
    from backdoorlab.data import load_dataset
    from backdoorlab.detectors.poison_detection import poisoned_training_set

    truth = set(poisoned_training_set(load_dataset("digits"), meta).poisoned.tolist())
    hits = len(truth & set(flagged.tolist()))
    assert r["recall"] == pytest.approx(hits / len(truth), abs=1e-6)
    if len(flagged):
        assert r["precision"] == pytest.approx(hits / len(flagged), abs=1e-6)
        assert (out / "flagged.png").stat().st_size > 0
    assert (out / "scores.png").stat().st_size > 0
    config = json.loads((out / "config.json").read_text())
    assert config["command"] == "detect-poison" and config["clean_budget"] == 200
    assert config["options"]["seed"] == 0


def test_options_reach_the_detector_and_text_output_names_the_counts(digits_suspect, capsys):
    _, _, d = digits_suspect
    code, text, err = run(capsys, "detect-poison", str(d), "--dataset", "digits", "--clean-budget", "200",
                          "-o", "reduction=ica", "-o", "analysis=size", "--json", "--no-progress")
    assert code == 0, err
    r = json.loads(text)
    assert r["config"]["options"]["reduction"] == "ica" and r["config"]["options"]["analysis"] == "size"
    code, text, err = run(capsys, "detect-poison", str(d), "--dataset", "digits", "--clean-budget", "200",
                          "--no-progress")
    assert code == 0, err
    assert "training images flagged by activation-clustering" in text and "precision" in text


def test_without_clean_images_the_papers_rules_run(digits_suspect, capsys):
    _, _, d = digits_suspect
    for detector, key, rule in (("activation-clustering", "analysis", "size"),
                                ("spectral-signatures", "rule", "paper")):
        code, text, err = run(capsys, "detect-poison", str(d), "--dataset", "digits", "--detector", detector,
                              "--clean-budget", "0", "--json", "--no-progress")
        assert code == 0, err
        assert json.loads(text)["config"]["options"][key] == rule


def test_a_model_with_no_recorded_poisoning_is_run_on_the_data_sets_training_images(clean_digits_model, capsys):
    code, text, err = run(capsys, "detect-poison", str(clean_digits_model), "--dataset", "digits", "--clean-budget",
                          "200", "--json", "--no-progress")
    assert code == 0, err
    r = json.loads(text)
    assert r["training_set"] == "the training images of digits"
    assert "precision" not in r and "recall" not in r
    from backdoorlab.budget import training_part
    from backdoorlab.data import load_dataset

    ds = load_dataset("digits")
    assert r["training_images"] == len(training_part(ds, r["config"]["holdout"])[1])


@pytest.mark.parametrize("args, expected", [
    (["--detector", "strip"], "unknown training-set detector 'strip'"),
    (["--detector", "neural-cleanse"], "unknown training-set detector 'neural-cleanse'"),
    (["-o", "reduction=tsne"], "reduction"),
    (["-o", "colour=red"], "colour"),
    (["--clean-budget", "-1"], "--clean-budget must be >= 0"),
    (["--clean-budget", "100000"], "100000"),
])
def test_bad_input_is_one_line(digits_suspect, capsys, args, expected):
    _, _, d = digits_suspect
    code, _, err = run(capsys, "detect-poison", str(d), "--dataset", "digits", *args, "--no-progress")
    assert code != 0
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in err, err


def test_a_users_own_data_set_with_poison_the_model_learnt_is_examined(tmp_path, capsys):
    """The engineer's case: images in a file of their own, some of them carrying a patch and relabelled, a model
    trained on them with no attack recorded. detect-poison examines that file's training images (the held-out
    pool removed), with no truth to score against, and writes the flagged indices into them."""
    from backdoorlab.data import load_dataset

    ds = load_dataset("digits")
    x = ds.train_x.numpy().copy()
    y = ds.train_y.numpy().copy()
    g = np.random.default_rng(0)
    planted = g.choice(np.nonzero(y != 0)[0], size=len(y) // 10, replace=False)
    x[planted, :, -2:, -2:] = 255  # a 2x2 white patch at the bottom-right
    y[planted] = 0
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x, y_train=y, x_test=ds.test_x.numpy(), y_test=ds.test_y.numpy())
    model = tmp_path / "model"
    assert main(["train", "--dataset", f"npz:{path}", "--arch", "small-cnn", "--epochs", "8", "--seed", "1",
                 "--out", str(model), "--no-progress"]) == 0
    capsys.readouterr()
    out = tmp_path / "det"
    code, text, err = run(capsys, "detect-poison", str(model), "--dataset", f"npz:{path}", "--clean-budget", "100",
                          "--out", str(out), "--json", "--no-progress")
    assert code == 0, err
    r = json.loads(text)
    assert r["training_set"] == f"the training images of npz:{path}" and "precision" not in r
    flagged = json.loads((out / "detection.json").read_text())["flagged_indices"]
    assert len(flagged) == r["flagged"]
    # the indices are into the training part (the held-out pool removed), as the CLI's training set is
    from backdoorlab.budget import training_part

    user = load_dataset(f"npz:{path}")
    tx, ty = training_part(user, r["config"]["holdout"])
    assert r["training_images"] == len(ty)
    assert set(r["flagged_per_label"]) <= {str(c) for c in range(10)}
