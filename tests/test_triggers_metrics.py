import pytest
import torch

from backdoorlab.attacks import Backdoor, BadNets, make_poisoning_attack
from backdoorlab.augment import augment, random_elastic, sanitizer_augmentation
from backdoorlab.budget import clean_budget, holdout_split
from backdoorlab.defenses.mode_connectivity import select_t, select_t_from_rows, select_ts
from backdoorlab.errors import BackdoorlabError
from backdoorlab.metrics import accuracy, attack_success_rate, robust_accuracy
from backdoorlab.triggers import PatchTrigger, parse_position, trigger_from_dict


def test_default_patch_covers_rows_24_to_26_on_mnist():
    x = torch.zeros(2, 1, 28, 28)
    y = PatchTrigger().apply(x)
    assert y[:, :, 24:27, 24:27].eq(1).all()
    assert y.sum() == 2 * 9
    assert x.sum() == 0  # input untouched


def test_patch_positions_values_and_roundtrip():
    x = torch.full((1, 3, 32, 32), 0.5)
    t = PatchTrigger(size=4, position="top-left", value=(1.0, 0.0, 0.25), margin=0)
    y = t.apply(x)
    assert torch.equal(y[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.25]))
    assert y[0, :, 4, 4].eq(0.5).all()
    t2 = trigger_from_dict(t.to_dict())
    assert torch.equal(t2.apply(x), y)
    assert PatchTrigger(2, (5, 6)).box(32, 32) == (5, 6)
    assert parse_position("3,4") == (3, 4)


@pytest.mark.parametrize("kwargs,match", [({"size": 0}, "positive"), ({"value": 2.0}, r"\[0, 1\]"),
                                          ({"position": "middle"}, "unknown trigger position")])
def test_patch_bad_arguments(kwargs, match):
    with pytest.raises(BackdoorlabError, match=match):
        PatchTrigger(**kwargs)


def test_patch_too_big_for_image():
    with pytest.raises(BackdoorlabError, match="does not fit"):
        PatchTrigger(size=8).apply(torch.zeros(1, 1, 8, 8))


def test_badnets_poisons_exact_fraction_of_non_target_images():
    x = torch.zeros(1000, 1, 28, 28, dtype=torch.uint8)
    y = torch.arange(1000) % 10
    atk = make_poisoning_attack("badnets", target=0, poison_rate=0.1)
    p = atk.poison(x, y, 10, seed=1)
    assert len(p.poisoned) == 100
    assert (y[p.poisoned] != 0).all()
    assert (p.y[p.poisoned] == 0).all()
    assert p.x[p.poisoned][:, :, 24:27, 24:27].eq(255).all()
    clean = torch.ones(1000, dtype=torch.bool)
    clean[p.poisoned] = False
    assert torch.equal(p.x[clean], x[clean]) and torch.equal(p.y[clean], y[clean])
    assert torch.equal(atk.poison(x, y, 10, seed=1).poisoned, p.poisoned)  # seeded
    assert x.sum() == 0  # input untouched


def test_all_to_all_labels_and_bad_rates():
    bd = Backdoor(PatchTrigger(), "all-to-all")
    assert torch.equal(bd.target_labels(torch.tensor([0, 5, 9]), 10), torch.tensor([1, 6, 0]))
    with pytest.raises(BackdoorlabError, match="poison rate"):
        BadNets(bd, poison_rate=-0.1)
    with pytest.raises(BackdoorlabError, match="out of range"):
        make_poisoning_attack("badnets", target=10).poison(torch.zeros(4, 1, 8, 8, dtype=torch.uint8),
                                                           torch.arange(4), 10)
    with pytest.raises(BackdoorlabError, match="valid: 'badnets'"):
        make_poisoning_attack("nope")


def test_asr_all_to_one_excludes_target_class():
    bd = Backdoor(PatchTrigger(), "all-to-one", target=0)
    labels = torch.tensor([0, 0, 1, 2, 3, 4])
    pred = torch.tensor([0, 0, 0, 0, 3, 1])
    # eligible: labels 1,2,3,4 -> predictions 0,0,3,1 -> 2 of 4 hit the target
    assert attack_success_rate(pred, labels, bd, 5) == pytest.approx(0.5)
    assert robust_accuracy(pred, labels, bd) == pytest.approx(0.25)


def test_asr_all_to_all_counts_every_image():
    bd = Backdoor(PatchTrigger(), "all-to-all")
    labels = torch.tensor([0, 1, 2, 3])
    pred = torch.tensor([1, 2, 2, 0])
    assert attack_success_rate(pred, labels, bd, 4) == pytest.approx(0.75)
    assert robust_accuracy(pred, labels, bd) == pytest.approx(0.25)


def test_all_to_all_measure_breaks_asr_down_by_source_label():
    """A model that maps only the images of label 0 (the ones with a bright top-left pixel) to label 1: the
    per-source ASR says which mapping holds, and the overall ASR is their weighted mean."""
    bd = Backdoor(PatchTrigger(size=1, position="bottom-right", margin=0), "all-to-all")

    class Model(torch.nn.Module):
        def forward(self, x):
            out = torch.zeros(len(x), 3)
            out[:, 2] = 1  # everything -> 2, except triggered images of "label 0" -> 1
            out[:, 1] = 2 * (x[:, 0, 0, 0] > 0.5) * (x[:, 0, -1, -1] > 0.5)
            return out

    x = torch.zeros(6, 1, 4, 4)
    x[:2, 0, 0, 0] = 1  # the two images of label 0
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    r = bd.measure(Model(), x, y, 3)
    assert r["attack_success_rate_per_source"] == {"0": 1.0, "1": 1.0, "2": 0.0}
    assert r["attack_success_rate"] == pytest.approx(4 / 6)
    assert "attack_success_rate_per_source" not in Backdoor(PatchTrigger(), "all-to-one", 0).measure(
        Model(), torch.zeros(2, 1, 28, 28), torch.tensor([1, 2]), 3)


def test_select_t_rule():
    ts = [0, 0.25, 0.5, 0.75, 1]
    assert select_t(ts, [0.99, 0.98, 0.975, 0.98, 0.99], tolerance=0.02) == 0.5
    assert select_t(ts, [0.99, 0.98, 0.90, 0.985, 0.99], tolerance=0.02) == 0.75
    assert select_t(ts, [0.99, 0.98, 0.90, 0.95, 0.96], suspect_ends=(0,), tolerance=0.02) == 0.25
    assert select_t(ts, [0.99, 0.97, 0.97, 0.97, 0.975], suspect_ends=(0,), tolerance=0.02) == 1.0
    # a validation accuracy exactly `tolerance` below the best is within tolerance (95 of 100 vs 99 of 100)
    acc = [accuracy(torch.arange(100) < k, torch.ones(100, dtype=torch.bool)) for k in (99, 96, 95, 96, 99)]
    assert acc[2] == 0.95
    assert select_t(ts, acc, tolerance=0.04) == 0.5
    # equal distance and equal accuracy: the lower validation loss decides, and without losses the smaller t
    tie = [0.99, 0.97, 0.90, 0.97, 0.99]
    assert select_t(ts, tie, tolerance=0.02) == 0.25
    assert select_t(ts, tie, tolerance=0.02, val_loss=[0.1, 0.40, 0.9, 0.35, 0.1]) == 0.75
    assert select_t(ts, tie, tolerance=0.02, val_loss=[0.1, 0.30, 0.9, 0.35, 0.1]) == 0.25
    # accuracy still comes before loss
    assert select_t(ts, [0.99, 0.98, 0.90, 0.97, 0.99], tolerance=0.02, val_loss=[0.1, 0.5, 0.9, 0.2, 0.1]) == 0.25
    rows = [{"t": t, "val_accuracy": a, "val_loss": l} for t, a, l in zip(ts, tie, [0.1, 0.40, 0.9, 0.35, 0.1])]
    assert select_t_from_rows(rows, tolerance=0.02) == 0.75
    for r in rows:  # rows from an older path.json, without losses
        r.pop("val_loss")
    assert select_t_from_rows(rows, tolerance=0.02) == 0.25


def test_select_ts_gives_the_candidates_equally_far_from_the_suspects():
    ts = [0, 0.25, 0.5, 0.75, 1]
    tie = [0.99, 0.97, 0.90, 0.97, 0.99]
    assert select_ts(ts, tie, tolerance=0.02, val_loss=[0.1, 0.40, 0.9, 0.35, 0.1]) == [0.75, 0.25]  # choice first
    assert select_ts(ts, tie, tolerance=0.02) == [0.25, 0.75]
    assert select_ts(ts, [0.99, 0.98, 0.90, 0.97, 0.99], tolerance=0.02) == [0.25, 0.75]  # accuracy tie not needed
    assert select_ts(ts, [0.99, 0.98, 0.90, 0.96, 0.99], tolerance=0.02) == [0.25]  # 0.75 out of tolerance
    assert select_ts(ts, [0.99, 0.98, 0.975, 0.98, 0.99], tolerance=0.02) == [0.5]
    assert select_ts(ts, [0.99, 0.97, 0.90, 0.97, 0.99], suspect_ends=(0,), tolerance=0.02) == [1.0]


def test_random_crop_is_a_shift_and_flip_mirrors():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    y = augment(x, "crop", g, padding=2)
    assert y.shape == x.shape
    for i in range(16):  # every output is the input shifted by at most 2 pixels, zero-filled
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = torch.zeros_like(x[i])
                src = x[i][:, max(0, dy):8 + min(0, dy), max(0, dx):8 + min(0, dx)]
                shifted[:, max(0, -dy):8 + min(0, -dy), max(0, -dx):8 + min(0, -dx)] = src
                found |= torch.equal(shifted, y[i])
        assert found
    z = augment(x, "crop-flip", torch.Generator().manual_seed(1), padding=0)
    assert all(torch.equal(z[i], x[i]) or torch.equal(z[i], x[i].flip(2)) for i in range(16))


class _Fake:
    name = "fake"

    def __init__(self, n):
        self.train_x = torch.arange(n).view(n, 1, 1, 1).to(torch.uint8)
        self.train_y = torch.arange(n) % 10


def test_clean_budget_from_holdout_pool_only():
    ds = _Fake(200)
    train_idx, pool = holdout_split(200, 50)
    assert len(set(train_idx.tolist()) & set(pool.tolist())) == 0 and len(pool) == 50
    b = clean_budget(ds, 30, seed=0, holdout=50)
    assert set(b.indices.tolist()) <= set(pool.tolist()) and len(b) == 30
    assert torch.equal(clean_budget(ds, 30, seed=0, holdout=50).indices, b.indices)
    with pytest.raises(BackdoorlabError, match="larger than the held-out pool of 50"):
        clean_budget(ds, 51, holdout=50)
    fit_part, val = b.split(10)
    assert len(fit_part) == 20 and len(val) == 10


def test_affine_augmentation_shapes_range_and_seed():
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    a = augment(x, "affine", torch.Generator().manual_seed(0))
    b = augment(x, "affine", torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1 + 1e-6
    assert not torch.equal(a, x)
    assert abs(a.sum() - x.sum()) / x.sum() < 0.35  # content is moved and scaled a little, not destroyed
    with pytest.raises(BackdoorlabError, match="unknown augmentation"):
        augment(x, "warp", torch.Generator())


def test_elastic_augmentation_is_a_smooth_seeded_warp():
    x = torch.zeros(4, 1, 28, 28)
    x[:, :, 6:22, 13:15] = 1.0  # a vertical stroke
    a = random_elastic(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, random_elastic(x, torch.Generator().manual_seed(0)))
    assert a.min() >= 0 and a.max() <= 1 + 1e-6 and not torch.equal(a, x)
    assert abs(a.sum() - x.sum()) / x.sum() < 0.35  # the stroke is bent, not erased
    assert not torch.equal(a[0], a[1])  # an independent field per image
    assert torch.allclose(random_elastic(x, torch.Generator(), alpha=0.0), x, atol=1e-5)  # no displacement: identity
    for shape in ((2, 1, 8, 8), (2, 3, 32, 32)):  # digits-sized and colour images too
        assert augment(torch.rand(shape), "affine-elastic", torch.Generator().manual_seed(1)).shape == shape
    assert sanitizer_augmentation("mnist") == "affine" and sanitizer_augmentation("cifar10") == "crop-flip-jpeg"


def _rows(acc, ts=(0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1)):
    return [{"t": t, "val_accuracy": a, "val_loss": 0.1} for t, a in zip(ts, acc)]


def test_select_guarded_keeps_the_tolerance_rule_where_it_keeps_its_distance():
    from backdoorlab.defenses.mode_connectivity import select_guarded
    # one suspect at t = 0: the farthest point within 4 points of the best is t = 1
    ts, verdict = select_guarded(_rows([0.99, 0.99, 0.98, 0.97, 0.97, 0.96, 0.96, 0.96, 0.96, 0.96, 0.96]),
                                 suspect_ends=(0,), tolerance=0.04, min_distance=0.2)
    assert ts == [1] and verdict["within_tolerance"] is True
    # two suspects, a weak middle: t = 0.2 and 0.8 are the candidates, equally far
    acc = [0.84, 0.86, 0.84, 0.79, 0.76, 0.59, 0.79, 0.79, 0.84, 0.87, 0.84]
    ts, verdict = select_guarded(_rows(acc), tolerance=0.04, min_distance=0.2)
    assert sorted(ts) == [0.2, 0.8] and verdict["within_tolerance"] is True


def test_select_guarded_anchors_the_tolerance_on_the_points_it_may_take():
    from backdoorlab.defenses.mode_connectivity import select_guarded
    # the suspects' own accuracy (0.927) would hang the window so high that it stops 0.3 from them; anchored on
    # the best point 0.2 or more away (0.907 at t = 0.7), the window reaches the middle
    acc = [0.927, 0.923, 0.903, 0.890, 0.873, 0.883, 0.877, 0.907, 0.903, 0.917, 0.927]
    ts, verdict = select_guarded(_rows(acc), tolerance=0.04, min_distance=0.2)
    assert ts == [0.5] and verdict["within_tolerance"] is True
    # a suspect that scores far above every allowed point does not move the choice, only the verdict
    acc_high = [0.999] + acc[1:-1] + [0.999]
    ts_high, verdict_high = select_guarded(_rows(acc_high), tolerance=0.04, min_distance=0.2)
    assert ts_high == [0.5] and verdict_high["within_tolerance"] is False


def test_select_guarded_gives_up_accuracy_not_distance():
    from backdoorlab.defenses.mode_connectivity import select_guarded
    # the tolerance alone would stop one step from the suspects (t = 0.1, 0.9): the floor keeps 0.2 away, the
    # window hangs from the best allowed point (0.89), and the verdict says that costs more than the tolerance
    acc = [0.94, 0.94, 0.89, 0.84, 0.84, 0.84, 0.84, 0.84, 0.84, 0.93, 0.94]
    ts, verdict = select_guarded(_rows(acc), tolerance=0.04, min_distance=0.2)
    assert ts == [0.2] and verdict["within_tolerance"] is False and "0.20 or more" in verdict["note"]
    assert select_guarded(_rows(acc), tolerance=0.04, min_distance=0.1)[0] == [0.1, 0.9]
    # a suspect end is never exported, even when the rest of the path is far below it
    ts, verdict = select_guarded(_rows([0.99, 0.6, 0.6, 0.6, 0.6, 0.7, 0.6, 0.6, 0.6, 0.6, 0.6]), suspect_ends=(0,))
    assert ts == [0.5] and verdict["within_tolerance"] is False


def test_select_guarded_refuses_a_grid_with_nothing_far_enough():
    from backdoorlab.defenses.mode_connectivity import select_guarded
    with pytest.raises(BackdoorlabError, match="no point of the t grid lies 0.6 or more"):
        select_guarded(_rows([0.9, 0.9, 0.9], ts=(0, 0.5, 1)), min_distance=0.6)
