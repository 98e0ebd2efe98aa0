"""Detectors (Neural Cleanse, STRIP, activation clustering, spectral signatures), Neural Cleanse unlearning and
``scan_run``, on the bundled 8x8 digits and on synthetic features."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from backdoorlab.attacks import make_poisoning_attack
from backdoorlab.budget import clean_budget
from backdoorlab.defenses.neural_cleanse import (NeuralCleanseConfig, UnlearningConfig, anomaly_indices,
                                                 nc_unlearning, neural_cleanse, neural_cleanse_unlearn)
from backdoorlab.detectors.activation_clustering import activation_clustering
from backdoorlab.detectors.poison_detection import detection_metrics, penultimate_features, poisoned_training_set
from backdoorlab.detectors.spectral_signatures import spectral_signatures
from backdoorlab.detectors.strip import StripConfig, StripDetector, strip_entropy
from backdoorlab.errors import BackdoorlabError
from backdoorlab.metrics import evaluate
from backdoorlab.runs import train_run
from backdoorlab.runs import scan_run
from backdoorlab.tensors import to_float
from backdoorlab.train import TrainConfig

TARGET = 3
# small and fast on 8x8 digits: 30 epochs of 5 batches of 32 per label, lambda updated every 3 epochs
NC_FAST = dict(epochs=30, batches_per_epoch=5, batch_size=32, patience=3)


@pytest.fixture(scope="module")
def models(digits, tmp_path_factory):
    """A digits model with a 2x2 BadNets backdoor (target 3, 10% poisoned) and a clean one, same recipe."""
    root = tmp_path_factory.mktemp("detectors")
    cfg = TrainConfig(epochs=30, lr=0.05, batch_size=64, seed=0)
    attack = make_poisoning_attack("badnets", target=TARGET, poison_rate=0.1, size=2)
    bd_model, bd_meta = train_run(digits, "small-cnn", cfg, attack, out=str(root / "badnets"), progress=False)
    clean_model, _ = train_run(digits, "small-cnn", cfg, None, out=str(root / "clean"), progress=False)
    assert bd_meta["metrics"]["attack_success_rate"] > 0.9 and bd_meta["metrics"]["clean_accuracy"] > 0.95
    return {"root": root, "badnets": bd_model, "clean": clean_model, "meta": bd_meta, "attack": attack}


@pytest.fixture(scope="module")
def budget(digits):
    return clean_budget(digits, 300, seed=0)


@pytest.fixture(scope="module")
def nc_badnets(models, budget):
    return neural_cleanse(models["badnets"], budget.x, 10, NeuralCleanseConfig(**NC_FAST), progress=False)


# ------------------------------------------------------------------------------------------------ Neural Cleanse


def test_anomaly_index_is_mad_based():
    idx = anomaly_indices([1.0, 10, 10, 11, 9, 10])
    # median 10, absolute deviations [9, 0, 0, 1, 1, 0], MAD 0.5
    assert idx == pytest.approx(np.array([9, 0, 0, 1, 1, 0]) / (1.4826 * 0.5))
    assert list(anomaly_indices([5.0, 5, 5])) == [0, 0, 0]


def test_neural_cleanse_names_the_target(nc_badnets, models, digits):
    r = nc_badnets
    assert r.backdoored and r.suspected_target == TARGET
    assert r.anomaly_index > 2 and r.flagged_labels == [TARGET]
    assert min(r.l1_norms) == r.l1_norms[TARGET]
    t = r.trigger_for(TARGET)
    assert t.mask.shape == (1, 8, 8) and t.pattern.shape == (1, 8, 8)
    assert 0 <= float(t.mask.min()) and float(t.mask.max()) <= 1
    # the reversed trigger works on unseen test images too: it is the backdoor, not an adversarial patch
    pred = models["badnets"](t.apply(to_float(digits.test_x))).argmax(1)
    assert (pred == TARGET).float().mean() > 0.9
    d = r.to_dict()
    json.dumps(d)
    assert d["suspected_target"] == TARGET and len(d["l1_norms"]) == 10


def test_neural_cleanse_saves_images(nc_badnets, budget, tmp_path):
    files = nc_badnets.save_images(tmp_path, budget.x[:4])
    assert len(files) == 40
    from PIL import Image

    with Image.open(tmp_path / f"label{TARGET}_mask.png") as im:
        assert im.size == (32, 32)
    with Image.open(tmp_path / f"label{TARGET}_examples.png") as im:
        assert im.size == (4 * 32, 32)


def test_neural_cleanse_unlearning_removes_backdoor(nc_badnets, models, budget, digits):
    attack, model = models["attack"], models["badnets"]
    before = evaluate(model, digits.test_x, digits.test_y, attack.backdoor, 10)
    cfg = UnlearningConfig(steps=100, lr=0.01, batch_size=32, nc_epochs=30, nc_batches_per_epoch=5, nc_batch_size=32,
                           nc_patience=3, rounds=2, restarts=2)
    repaired, info = nc_unlearning(model, budget, cfg, progress=False)
    after = evaluate(repaired, digits.test_x, digits.test_y, attack.backdoor, 10)
    assert info["unlearned_labels"] == [TARGET] and info["neural_cleanse"]["suspected_target"] == TARGET
    # one more reversal of the target's trigger from a fresh start, recorded
    assert [(r["label"], r["start"]) for r in info["restarts"]] == [(TARGET, 1)] and info["restarts"][0]["l1"] > 0
    # the second round re-reversed the target's trigger on the repaired model and recorded what it found
    assert [(r["round"], r["label"]) for r in info["later_rounds"]] == [(2, TARGET)]
    json.dumps(info)
    # plain fine-tuning with the same recipe, for contrast: the stamped images are what removes the backdoor
    plain = neural_cleanse_unlearn(model, budget.x, budget.y, cfg.train_config(), result=nc_badnets, labels=[],
                                   progress=False)
    baseline = evaluate(plain, digits.test_x, digits.test_y, attack.backdoor, 10)
    assert before["attack_success_rate"] > 0.9
    assert after["attack_success_rate"] < 0.2 < baseline["attack_success_rate"]
    assert after["clean_accuracy"] > before["clean_accuracy"] - 0.05
    assert repaired is not model  # a copy


def test_unlearning_per_batch_stamping(nc_badnets, models, budget, digits, monkeypatch):
    """Per-batch stamping draws afresh every time an image is drawn: about ``fraction`` of every batch is
    stamped, each image is seen both ways, and the backdoor still goes."""
    attack, model = models["attack"], models["badnets"]
    cfg = TrainConfig(epochs=0, steps=200, lr=0.01, batch_size=32, seed=0)
    stamped = []
    original_apply = type(nc_badnets.trigger_for(TARGET)).apply

    def spy(self, images, scale=None):
        stamped.append(len(images))
        return original_apply(self, images, scale)

    monkeypatch.setattr(type(nc_badnets.trigger_for(TARGET)), "apply", spy)
    repaired = neural_cleanse_unlearn(model, budget.x, budget.y, cfg, result=nc_badnets, labels=[TARGET],
                                      stamp="per-batch", progress=False)
    monkeypatch.undo()
    assert 0.15 < sum(stamped) / (200 * 32) < 0.25  # fraction 0.2 of the 200 batches of 32
    after = evaluate(repaired, digits.test_x, digits.test_y, attack.backdoor, 10)
    assert after["attack_success_rate"] < 0.2
    with pytest.raises(BackdoorlabError, match="per-batch"):
        UnlearningConfig(stamp="sometimes")


def test_unlearning_mask_boost(nc_badnets, models, budget, monkeypatch):
    """A boosted stamp is the same reversed trigger with its mask scaled by a factor in [1, mask_boost] and
    clipped to 1: scale 1 is the plain stamp, a large scale pastes the pattern wherever the mask is non-zero."""
    trigger = nc_badnets.trigger_for(TARGET)
    x = to_float(budget.x[:4])
    assert torch.equal(trigger.apply(x, torch.ones(4)), trigger.apply(x))
    big = trigger.apply(x, torch.full((4,), 1e9))
    on = (trigger.mask > 0).expand_as(x[0])
    assert torch.allclose(big[:, on], trigger.pattern.expand_as(x[0])[on].expand(4, -1), atol=1e-5)
    mid = trigger.apply(x, torch.full((4,), 2.0))
    m2 = (2 * trigger.mask).clamp(0, 1)
    assert torch.allclose(mid, (1 - m2) * x + m2 * trigger.pattern, atol=1e-6)
    # the unlearning draws one factor per stamped image, within [1, mask_boost]
    scales = []
    original_apply = type(trigger).apply

    def spy(self, images, scale=None):
        scales.append(scale)
        return original_apply(self, images, scale)

    monkeypatch.setattr(type(trigger), "apply", spy)
    cfg = TrainConfig(epochs=0, steps=20, lr=0.01, batch_size=32, seed=0)
    neural_cleanse_unlearn(models["badnets"], budget.x, budget.y, cfg, result=nc_badnets, labels=[TARGET],
                           stamp="per-batch", mask_boost=3.0, progress=False)
    drawn = torch.cat([s for s in scales if s is not None])
    assert len(drawn) > 20 and drawn.min() >= 1 and drawn.max() <= 3 and drawn.std() > 0.3
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(BackdoorlabError, match="mask boost"):
            UnlearningConfig(mask_boost=bad)
    with pytest.raises(BackdoorlabError, match="mask boost"):
        neural_cleanse_unlearn(models["badnets"], budget.x, budget.y, cfg, result=nc_badnets, mask_boost=0.9,
                               progress=False)


def test_trigger_completion_grows_a_partial_trigger(models, budget, digits, nc_badnets):
    """Started from one pixel of the real 2x2 trigger at half strength, completion grows the mask over the real
    trigger (the target margin rewards it) without covering the image, and leaves the model unchanged."""
    from backdoorlab.defenses.neural_cleanse import ReversedTrigger, complete_trigger
    model = models["badnets"]
    mask, _ = models["attack"].backdoor.trigger.mask_and_pattern(digits.test_x.shape[1:])
    real = mask[0, 0] > 0
    rows, cols = torch.nonzero(real, as_tuple=True)
    part = torch.zeros(1, 8, 8)
    part[0, rows[0], cols[0]] = 0.5
    start = ReversedTrigger(TARGET, part, torch.full((1, 8, 8), 0.5), 0.5, 0.0, True, 1,
                            nc_badnets.trigger_for(TARGET).final_cost)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = NeuralCleanseConfig(**NC_FAST)
    assert complete_trigger(model, budget.x, start, cfg, steps=0) is start
    grown = complete_trigger(model, budget.x, start, cfg, steps=200)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    m = grown.mask[0]
    assert float(m[real].sum()) > 2.5  # most of the four real pixels, from 0.5 of one
    assert float(m.sum()) < 12  # of 64 pixels: the L1 term keeps it a patch (here it adds a few strokes of a 3)
    test = to_float(digits.test_x)
    assert (model(grown.apply(test)).argmax(1) == TARGET).float().mean() > 0.9
    assert grown.attack_success > 0.9 and grown.l1 == pytest.approx(float(m.sum()))
    for bad in (dict(steps=-1), dict(margin=0.0), dict(cost_factor=-1.0)):
        with pytest.raises(BackdoorlabError, match="completion"):
            complete_trigger(model, budget.x, start, cfg, **bad)
    with pytest.raises(BackdoorlabError, match="completion"):
        UnlearningConfig(complete_steps=-1)
    _records_each_unlearned_label(model, budget, "completed", complete_steps=20)


def test_trigger_growth_adds_the_missing_pixels_of_a_partial_trigger(models, budget, digits, nc_badnets):
    """Started from two of the real 2x2 trigger's four pixels, growth stamps the other two (each raises the target
    margin) and nothing else; the model is left unchanged."""
    from backdoorlab.defenses.neural_cleanse import ReversedTrigger, grow_trigger
    model = models["badnets"]
    mask, pattern = models["attack"].backdoor.trigger.mask_and_pattern(digits.test_x.shape[1:])
    real = mask[0, 0] > 0
    rows, cols = torch.nonzero(real, as_tuple=True)
    part = torch.zeros(1, 8, 8)
    part[0, rows[:2], cols[:2]] = 1.0
    start = ReversedTrigger(TARGET, part, pattern[0].clone(), 2.0, 0.0, True, 1, 1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    others = budget.x[budget.y != TARGET]
    grown, added = grow_trigger(model, others, start, min_gain=0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    assert {(a["row"], a["column"]) for a in added} == set(zip(rows[2:].tolist(), cols[2:].tolist()))
    assert torch.equal(grown.mask[0] > 0.5, real) and grown.l1 == pytest.approx(4.0)
    margins = [a["margin"] for a in added]
    assert margins == sorted(margins)  # each pixel raised the margin
    assert grown.attack_success > 0.9
    # a gain nothing reaches adds nothing and hands the trigger back as it was
    assert grow_trigger(model, others, start, min_gain=1e6) == (start, [])
    # max_pixels stops it early, and it takes the best pixel first
    one, first = grow_trigger(model, others, start, min_gain=0.5, max_pixels=1)
    assert first == added[:1] and one.l1 == pytest.approx(3.0)
    for bad in (dict(min_gain=0.0), dict(min_gain=float("nan")), dict(support=1.0), dict(max_pixels=-1)):
        with pytest.raises(BackdoorlabError, match="growth"):
            grow_trigger(model, others, start, **bad)
    with pytest.raises(BackdoorlabError, match="growth gain"):
        UnlearningConfig(grow_gain=-1.0)
    _records_each_unlearned_label(model, budget, "grown", grow_gain=0.5)


def _records_each_unlearned_label(model, budget, key, **options):
    """A short nc-unlearning run with ``options``: its report's ``key`` has one entry per unlearned label."""
    from backdoorlab.defenses.neural_cleanse import nc_unlearning
    _, info = nc_unlearning(model, budget, UnlearningConfig(steps=5, nc_epochs=6, nc_batches_per_epoch=2,
                                                            nc_batch_size=32, **options), progress=False)
    assert [c["label"] for c in info[key]] == info["unlearned_labels"]


def test_neural_cleanse_errors(budget):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(BackdoorlabError, match="epochs"):
        NeuralCleanseConfig(epochs=0)
    with pytest.raises(BackdoorlabError, match="at least 3 labels"):
        neural_cleanse(model, budget.x, 10, NeuralCleanseConfig(labels=[0, 11]), progress=False)
    with pytest.raises(BackdoorlabError, match="fraction"):
        neural_cleanse_unlearn(model, budget.x, budget.y, TrainConfig(), fraction=0, progress=False)
    with pytest.raises(BackdoorlabError, match="fraction"):
        UnlearningConfig(fraction=1.5)
    with pytest.raises(BackdoorlabError, match="at least 1 round"):
        UnlearningConfig(rounds=0)
    with pytest.raises(BackdoorlabError, match="at least 1 start"):
        UnlearningConfig(restarts=0)


# ----------------------------------------------------------------------------------------------------------- STRIP


def test_strip_threshold_sets_false_rejections(models, digits, budget):
    model, attack = models["badnets"], models["attack"]
    cfg = StripConfig(n_overlays=16, frr=0.05, seed=0)
    det = StripDetector(model, budget.x, cfg, progress=False).fit(budget.x)
    # on the calibration images the rejected fraction is the requested one
    assert np.mean(det.clean_entropy < det.threshold) == pytest.approx(0.05, abs=0.01)
    test_x, test_y = digits.test_x[:300], digits.test_y[:300]
    keep = attack.backdoor.eligible(test_y)
    triggered = attack.backdoor.trigger.apply(to_float(test_x[keep]))
    r = det.evaluate(test_x, triggered)
    assert r["frr"] <= 0.12  # held-out clean images: near the 5% asked for
    assert r["detection_rate"] > 0.8 and r["far"] == pytest.approx(1 - r["detection_rate"])
    assert r["auc"] > 0.95
    assert r["triggered_entropy_mean"] < r["clean_entropy_mean"]
    json.dumps(det.summary())


def test_strip_blend_mode_and_errors(models, budget):
    e = strip_entropy(models["clean"], budget.x[:5], budget.x, StripConfig(n_overlays=4, mode="blend", alpha=0.5))
    assert e.shape == (5,) and (e >= 0).all() and (e <= np.log2(10) + 1e-6).all()
    with pytest.raises(BackdoorlabError, match="valid: 'add', 'blend'"):
        StripConfig(mode="sum")
    with pytest.raises(BackdoorlabError, match="not fitted"):
        StripDetector(models["clean"], budget.x).predict(budget.x[:2])
    with pytest.raises(BackdoorlabError, match="same shape"):
        strip_entropy(models["clean"], budget.x[:2], torch.zeros(3, 1, 4, 4))


# --------------------------------------------------------------------- activation clustering, spectral signatures


def synthetic_features(n_per_class=300, n_poison=60, dim=32, shift=6.0, seed=0):
    """10 Gaussian classes; ``n_poison`` samples of another distribution (a shifted copy of class 5's) labelled 0;
    100 clean reference samples per class."""
    g = np.random.default_rng(seed)
    means = g.normal(0, 3, (10, dim))
    feats, labels = [], []
    for c in range(10):
        feats.append(means[c] + g.normal(0, 1, (n_per_class, dim)))
        labels += [c] * n_per_class
    direction = g.normal(0, 1, dim)
    direction *= shift / np.linalg.norm(direction)
    poison = means[5] + direction + g.normal(0, 1, (n_poison, dim))
    perm = g.permutation(len(labels) + n_poison)
    f = np.concatenate(feats + [poison])[perm]
    y = np.array(labels + [0] * n_poison)[perm]
    poisoned = np.nonzero(perm >= len(labels))[0]
    clean_f = np.concatenate([means[c] + g.normal(0, 1, (100, dim)) for c in range(10)])  # a 1,000-image budget
    clean_y = np.repeat(np.arange(10), 100)
    return f, y, poisoned, clean_f, clean_y


@pytest.mark.parametrize("method,kwargs", [
    (activation_clustering, dict(analysis="clean")),
    (activation_clustering, dict(analysis="size", reduction="pca")),
    (activation_clustering, dict(analysis="size", reduction="ica")),
    (spectral_signatures, dict(rule="clean")),
    (spectral_signatures, dict(rule="paper", poison_fraction=0.2)),
])
def test_training_set_detectors_find_planted_poison(method, kwargs):
    f, y, poisoned, cf, cy = synthetic_features()
    det = method(f, y, cf, cy, **kwargs)
    m = detection_metrics(det, poisoned)
    assert m["recall"] >= 0.9, m
    assert m["auc"] > 0.95, m
    if not (method is spectral_signatures and kwargs["rule"] == "paper"):
        assert m["precision"] >= 0.8, m  # the paper's rule removes 1.5 * 20% of every label by design
    assert det.scores.shape == (len(y),)
    json.dumps(det.summary())


def test_spectral_clean_rule_looks_beyond_the_top_direction():
    """Label 0's clean samples vary widely along one axis (more than the poison's offset): the top singular vector
    is that axis, which the paper's direction follows; the clean rule picks the direction that departs from the
    clean images."""
    f, y, poisoned, cf, cy = synthetic_features(n_poison=30, seed=1)
    g = np.random.default_rng(1)
    for feats, labels in ((f, y), (cf, cy)):
        rows = labels == 0
        feats[rows, 0] += g.normal(0, 8, rows.sum())
    top_only = detection_metrics(spectral_signatures(f, y, cf, cy, n_directions=1), poisoned)
    default = detection_metrics(spectral_signatures(f, y, cf, cy), poisoned)
    assert top_only["recall"] < 0.5
    assert default["recall"] >= 0.9 and default["precision"] >= 0.8, default


def test_training_set_detectors_on_clean_data_flag_little():
    f, y, _, cf, cy = synthetic_features(n_poison=0)
    ac = activation_clustering(f, y, cf, cy)
    assert len(ac.flagged) == 0
    ss = spectral_signatures(f, y, cf, cy, clean_quantile=0.99)
    assert len(ss.flagged) < 0.05 * len(y)


def test_detection_metrics_by_hand():
    from backdoorlab.detectors.poison_detection import PoisonDetection

    det = PoisonDetection("x", np.array([0.9, 0.8, 0.1, 0.7, 0.2]), np.array([0, 1, 3]))
    m = detection_metrics(det, [0, 2])
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(1 / 2)
    assert m["auc"] == pytest.approx(0.5)  # pairs (0 vs 1,3,4): 3 wins; (2 vs 1,3,4): 0 wins -> 3/6


def test_penultimate_features_hook_and_forward_features(models, budget):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))
    x = budget.x[:7]
    f = penultimate_features(plain, x, batch_size=3)
    assert torch.allclose(f, plain[2](plain[1](plain[0](to_float(x)))))
    m = models["clean"]
    f2 = penultimate_features(m, x)
    assert f2.shape == (7, 128)
    assert torch.allclose(m.fc(f2), m(to_float(x)), atol=1e-5)


def test_poisoned_training_set_and_detection_on_digits(models, digits, budget):
    meta = models["meta"]
    data = poisoned_training_set(digits, meta)
    assert len(data.poisoned) == meta["provenance"]["poisoned"] > 0
    assert (data.y[data.poisoned] == TARGET).all()
    assert (data.x[data.poisoned][..., 5:7, 5:7] == 255).all()  # the 2x2 patch at the bottom-right, margin 1
    feats = penultimate_features(models["badnets"], data.x)
    clean = penultimate_features(models["badnets"], budget.x)
    # a hard case (90 poisoned among 182 samples of label 3, 128 features of an 8x8 model, ~30 clean images
    # per label): the scores rank the poison high, and what is flagged is mostly poison
    ac = detection_metrics(activation_clustering(feats, data.y, clean, budget.y), data.poisoned)
    assert ac["auc"] > 0.95 and ac["precision"] >= 0.9 and ac["recall"] > 0.1, ac
    ss = detection_metrics(spectral_signatures(feats, data.y, clean, budget.y), data.poisoned)
    assert ss["auc"] > 0.9 and ss["precision"] >= 0.9 and ss["recall"] >= 0.5, ss
    with pytest.raises(BackdoorlabError, match="no data-poisoning attack"):
        poisoned_training_set(digits, {**meta, "provenance": {"attack": None}})


def test_training_set_detector_errors():
    f, y, _, cf, cy = synthetic_features(n_per_class=20, n_poison=0)
    with pytest.raises(BackdoorlabError, match="valid: 'clean', 'silhouette', 'size'"):
        activation_clustering(f, y, cf, cy, analysis="biggest")
    with pytest.raises(BackdoorlabError, match="needs clean features"):
        activation_clustering(f, y, analysis="clean")
    with pytest.raises(BackdoorlabError, match="valid: 'clean', 'paper'"):
        spectral_signatures(f, y, rule="nope")
    with pytest.raises(BackdoorlabError, match="both clean features and clean labels"):
        spectral_signatures(f, y, cf)
    with pytest.raises(BackdoorlabError, match="n_directions"):
        spectral_signatures(f, y, cf, cy, n_directions=0)
    with pytest.raises(BackdoorlabError, match=r"features must be \(N, D\)"):
        spectral_signatures(f[:, 0], y)


# ------------------------------------------------------------------------------------------------------------ scan


def test_scan_flags_backdoored_model_and_writes_report(models, digits, tmp_path):
    out = tmp_path / "report"
    r = scan_run(digits, str(models["root"] / "badnets"), budget_size=300, report_dir=str(out), progress=False,
                 strip_images=100, strip_overlays=8, **NC_FAST)
    assert r["backdoored"] is True and r["suspected_target"] == TARGET and r["anomaly_index"] > 2
    assert r["suspected_target_name"] == digits.class_names[TARGET]
    assert len(r["l1_norms"]) == len(r["anomaly_indices"]) == 10
    assert r["strip"]["threshold"] > 0 and r["seconds"]["total"] > 0
    assert r["config"]["clean_budget"] == 300 and r["config"]["neural_cleanse"]["epochs"] == 30
    assert json.loads(json.dumps(r)) == r
    for name in ("report.json", "config.json", "norms.png", "index.html", f"triggers/label{TARGET}_trigger.png"):
        assert (out / name).exists(), name
    assert json.loads((out / "report.json").read_text())["suspected_target"] == TARGET
    page = (out / "index.html").read_text()
    assert "Backdoored" in page and f"triggers/label{TARGET}_mask.png" in page and "norms.png" in page
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*"))


def test_scan_does_not_flag_clean_model(models, digits):
    r = scan_run(digits, str(models["root"] / "clean"), budget_size=300, progress=False, strip=False, **NC_FAST)
    assert r["backdoored"] is False and r["suspected_target"] is None and r["anomaly_index"] < 2
    assert r["strip"] is None and r["report"] is None


def test_scan_errors(models, digits):
    d = str(models["root"] / "clean")
    with pytest.raises(BackdoorlabError, match="unknown Neural Cleanse option.*'stepz'.*valid: .*'epochs'"):
        scan_run(digits, d, budget_size=300, progress=False, stepz=3)
    with pytest.raises(BackdoorlabError, match="larger than the held-out pool"):
        scan_run(digits, d, budget_size=10_000, progress=False)
    with pytest.raises(BackdoorlabError, match="smaller than Neural Cleanse's batch"):
        scan_run(digits, d, budget_size=10, progress=False)
    with pytest.raises(BackdoorlabError) as e:
        scan_run(digits, str(models["root"] / "missing"), budget_size=300, progress=False)
    assert "\n" not in str(e.value)


def test_scan_cli_json_options_and_errors(models, capsys):
    from backdoorlab.cli import main

    d = str(models["root"] / "badnets")
    args = ["scan", d, "--dataset", "digits", "--clean-budget", "300", "--no-progress", "--no-strip",
            "-o", "epochs=30", "-o", "batch_size=32", "-o", "batches_per_epoch=5"]
    assert main([*args, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["backdoored"] is True and r["suspected_target"] == TARGET and r["anomaly_index"] > 2
    assert r["strip"] is None and r["config"]["neural_cleanse"]["batch_size"] == 32
    assert main([*args, "-o", "epochz=3"]) != 0
    err = capsys.readouterr().err.strip()
    assert "unknown option 'epochz' for scan" in err and "epochs" in err and "\n" not in err
    assert main([*args, "-o", "epochs=many"]) != 0
    assert "expected a value like 40" in capsys.readouterr().err
