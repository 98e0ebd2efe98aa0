"""Federated learning, the parts without a federation: partitions of the training part (sizes, disjoint, the
held-out pool excluded, Dirichlet skew, seeded), the seeded round sample, the attacker's update arithmetic (model
replacement, constrain-and-scale), the settings' checks, and every defense's Flower strategy aggregating synthetic
updates. The end-to-end command is in test_federated_cli.py."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from backdoorlab.budget import clean_budget, default_holdout, holdout_split
from backdoorlab.errors import BackdoorlabError
from backdoorlab.federated import (FederationSettings, auto_boost, boost, clip_to, difference, dirichlet_partition,
                                   exchanged, iid_partition, norm, parse_ids, partition, round_sample)
from backdoorlab.federated.attacks import ProjectToBall


# --- partitions --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_partition_covers_the_training_part_disjointly_and_never_the_pool(digits, scheme):
    parts = partition(digits, 7, scheme, alpha=0.5, seed=3)
    train_idx, pool = holdout_split(len(digits.train_y), default_holdout("digits"))
    joined = torch.cat(parts)
    assert len(parts) == 7 and all(len(p) > 0 for p in parts)
    assert len(joined) == len(set(joined.tolist())) == len(train_idx)  # disjoint, and all of the training part
    assert set(joined.tolist()) == set(train_idx.tolist())
    assert not set(joined.tolist()) & set(pool.tolist())
    # what `sanitize --clean-budget` draws is in the pool: no client holds any of it
    assert not set(joined.tolist()) & set(clean_budget(digits, 300, seed=0).indices.tolist())
    assert all(torch.equal(p, p.sort().values) for p in parts)


def test_iid_sizes_differ_by_at_most_one_and_labels_are_mixed(digits):
    parts = partition(digits, 6, "iid", seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(len(torch.unique(digits.train_y[p])) == 10 for p in parts)


def _label_skew(digits, parts) -> float:
    """Mean over clients of the largest class's share of the client's images."""
    return float(np.mean([torch.bincount(digits.train_y[p], minlength=10).max().item() / len(p) for p in parts]))


def test_dirichlet_skews_labels_more_for_small_alpha(digits):
    skewed = _label_skew(digits, partition(digits, 5, "dirichlet", alpha=0.1, seed=0))
    mild = _label_skew(digits, partition(digits, 5, "dirichlet", alpha=100.0, seed=0))
    iid = _label_skew(digits, partition(digits, 5, "iid", seed=0))
    assert skewed > 0.4 > mild
    assert abs(mild - iid) < 0.05  # large alpha approaches IID (each class about a tenth)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_partition_is_seeded(digits, scheme):
    a, b = partition(digits, 5, scheme, alpha=0.3, seed=1), partition(digits, 5, scheme, alpha=0.3, seed=1)
    c = partition(digits, 5, scheme, alpha=0.3, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_impossible_partitions_are_one_line_errors():
    idx, labels = torch.arange(10), torch.zeros(10, dtype=torch.long)
    with pytest.raises(BackdoorlabError, match="cannot be split among 11 clients"):
        iid_partition(idx, 11)
    with pytest.raises(BackdoorlabError, match="alpha must be > 0"):
        dirichlet_partition(idx, labels, 2, alpha=0.0)
    with pytest.raises(BackdoorlabError, match="raise --dirichlet-alpha"):
        dirichlet_partition(idx, labels, 10, alpha=0.001, min_size=1)


# --- sampling ----------------------------------------------------------------------------------------------------

def test_round_sample_is_seeded_and_forces_the_attackers_in():
    assert round_sample(20, 5, 3, seed=1) == round_sample(20, 5, 3, seed=1)
    samples = {tuple(round_sample(20, 5, r, seed=1)) for r in range(1, 30)}
    assert len(samples) > 20  # a different draw per round
    assert all(len(set(s)) == 5 and all(0 <= c < 20 for c in s) for s in samples)
    for r in range(1, 30):
        s = round_sample(20, 5, r, seed=1, forced=(4, 17))
        assert {4, 17} <= set(s) and len(set(s)) == 5
    # without forcing, a client is in about K/N of the rounds
    hits = sum(7 in round_sample(20, 5, r, seed=0) for r in range(1, 401))
    assert 60 < hits < 140


# --- the attacker's update ---------------------------------------------------------------------------------------

def _state(seed: int, scale: float = 1.0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"w": scale * torch.randn(6, 5, generator=g), "b": scale * torch.randn(5, generator=g)}


def test_model_replacement_makes_fedavg_return_the_attackers_model_up_to_the_others_deviations():
    k = 10
    global_, attacker = _state(0), _state(1)
    deviations = [_state(10 + i, scale=0.01) for i in range(k - 1)]
    benign = [{n: global_[n] + d[n] for n in global_} for d in deviations]
    sent = boost(global_, attacker, auto_boost(k))
    averaged = {n: torch.stack([sent[n]] + [b[n] for b in benign]).mean(0) for n in global_}
    expected = {n: attacker[n] + sum(d[n] for d in deviations) / k for n in global_}
    for n in global_:
        torch.testing.assert_close(averaged[n], expected[n], rtol=0, atol=1e-5)
    # without the boost the attacker's model is diluted K times
    naive = {n: torch.stack([attacker[n]] + [b[n] for b in benign]).mean(0) for n in global_}
    assert norm(difference(naive, attacker)) > 0.5 * norm(difference(global_, attacker))
    assert auto_boost(k, server_lr=2.0) == 5.0


def test_exchanged_leaves_out_integer_buffers():
    state = {"w": torch.zeros(2), "bn.num_batches_tracked": torch.tensor(3)}
    assert list(exchanged(state)) == ["w"]


def test_clip_to_bounds_the_norm_and_keeps_small_updates():
    g, x = _state(0), _state(1)
    assert norm(difference(clip_to(g, x, 0.5), g)) == pytest.approx(0.5, rel=1e-5)
    far = norm(difference(x, g))
    torch.testing.assert_close(clip_to(g, x, 2 * far)["w"], x["w"])


def test_projected_training_keeps_the_boosted_update_within_the_bound():
    # constrain-and-scale: train within ||X - G|| <= S / gamma, then boost by gamma: the update is at most S
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    global_ = {k: v.clone() for k, v in model.state_dict().items()}
    bound, gamma = 0.3, 5.0
    hook = ProjectToBall(model, global_, bound / gamma)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    for _ in range(20):
        hook(x, y, None)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert norm(difference(exchanged(model.state_dict()), global_)) > bound / gamma  # training left the ball ...
    hook.finish()
    trained = exchanged(model.state_dict())
    assert hook.projections > 0
    assert norm(difference(trained, global_)) <= bound / gamma * (1 + 1e-5)  # ... and was pulled back
    sent = boost(global_, trained, gamma)
    assert norm(difference(sent, global_)) <= bound * (1 + 1e-5)
    assert norm(difference(sent, global_)) > 0.9 * bound  # the whole budget is used, not a sliver of it


def _digits_settings(**kw) -> FederationSettings:
    from backdoorlab.attacks import build_attack
    base = dict(dataset="digits", arch="small-cnn", clients=4, per_round=3, rounds=2, holdout=400, local_epochs=1,
                attack=build_attack("badnets", target=0, poison_rate=0.3, image_shape=(1, 8, 8), num_classes=10),
                attack_name="badnets", attackers=(1,), attack_rounds=(2,))
    return FederationSettings(**{**base, **kw}).check()


def test_constrain_and_scale_client_stays_within_the_servers_bound(digits):
    from backdoorlab.federated.client import client_update
    from backdoorlab.models import new_model
    global_ = exchanged(new_model("small-cnn", digits, 0).state_dict())
    s = _digits_settings(boost=3.0, constrain=True)
    sent, info = client_update(s, 1, 2, global_, server_bound=0.5)
    assert info["malicious"] and info["norm_bound_source"] == "server" and info["projections"] > 0
    assert norm(difference(sent, global_)) <= 0.5 * (1 + 1e-4)
    # no bound announced: its own honest update's norm
    sent, info = client_update(s, 1, 2, global_, server_bound=0.0)
    assert info["norm_bound_source"] == "own benign update"
    assert norm(difference(sent, global_)) <= info["norm_bound"] * (1 + 1e-4)
    # plain boosting is not bounded; outside an attack round the attacker is honest
    sent, info = client_update(_digits_settings(boost=3.0), 1, 2, global_)
    assert info["sent_norm"] == pytest.approx(3.0 * info["trained_norm"], rel=1e-4) and info["sent_norm"] > 0.5
    _, info = client_update(_digits_settings(boost=3.0), 1, 1, global_)
    assert not info["malicious"]


# --- settings ----------------------------------------------------------------------------------------------------

def test_parse_ids():
    assert parse_ids("3,0,5-7", "--x") == (0, 3, 5, 6, 7)
    assert parse_ids("all", "--x", allow_all=True, last=3) == (1, 2, 3)
    for bad in ("a", "3-1", "1,,2"):
        with pytest.raises(BackdoorlabError, match="--x must be integers or ranges"):
            parse_ids(bad, "--x")


@pytest.mark.parametrize("changes, message", [
    (dict(per_round=5), "--per-round must be between 1 and --clients"),
    (dict(attackers=(0, 1, 2, 3, 4)), "5 attackers but only 4 clients"),
    (dict(attackers=(4,)), "client id 4 is out of range"),
    (dict(attackers=(0, 1, 2, 3)), "cannot all train in a round of --per-round 3"),
    (dict(attack_rounds=(3,)), "round 3 is not one of the 2 rounds"),
    (dict(attack_rounds=(0,)), "round 0 is not one of the 2 rounds"),
    (dict(attackers=()), "--attack needs --attacker-clients"),
    (dict(defense="fedprox"), "unknown --defense 'fedprox'"),
    (dict(defense="clip"), "needs --clip-norm"),
    (dict(defense="krum", clip_norm=1.0), "--clip-norm is for --defense clip or clip-noise"),
    (dict(defense="clip-noise", clip_auto=True), "needs --noise"),
    (dict(noise=0.1), "--noise is for --defense clip-noise"),
    (dict(defense="trimmed-mean", trim_beta=0.2), "trims no update from a round of 3"),
    (dict(partition="pathological"), "unknown --partition"),
    (dict(boost=0.0), "--boost must be auto or a number > 0"),
])
def test_bad_settings_are_one_line_errors(changes, message):
    with pytest.raises(BackdoorlabError, match=message) as e:
        _digits_settings(**changes)
    assert "\n" not in str(e.value)


def test_attack_options_need_an_attack():
    with pytest.raises(BackdoorlabError, match="--boost needs --attack"):
        FederationSettings(dataset="digits", arch="small-cnn", clients=3, per_round=2, rounds=1, boost=2.0).check()


# --- strategies on synthetic updates ------------------------------------------------------------------------------

@pytest.fixture
def task_identity():
    """Flower's messages need the process's task identity, which a simulation sets; restored afterwards. Skips
    without Flower (the tests above do not need it)."""
    pytest.importorskip("flwr")
    from flwr.supercore.task_identity import TaskIdentity
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


DIM = 4000


def _aggregate(defense: str, updates: list[np.ndarray], errors=(), **settings):
    """Run one round of ``defense``'s strategy on replies carrying ``G + update`` (G = 1), one per client, the way
    Flower's round loop calls it; returns (the aggregated update, the strategy)."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
    from backdoorlab.federated.strategies import build_strategy
    k = len(updates)
    s = FederationSettings(dataset="digits", arch="small-cnn", clients=k + 2, per_round=k, rounds=3, seed=0,
                           defense=defense, **settings).check()
    node_of = {c: 1000 + c for c in range(k + 2)}
    strategy = build_strategy(s, node_of, lambda r: list(range(k)))
    g = np.ones(DIM, dtype=np.float32)
    messages = list(strategy.configure_train(1, ArrayRecord({"w": Array(g)}), ConfigRecord(), None))
    assert sorted(m.metadata.dst_node_id for m in messages) == [1000 + c for c in range(k)]
    replies = []
    for m, u in zip(reversed(messages), reversed(updates)):  # out of order: the strategy sorts them
        c = m.metadata.dst_node_id - 1000
        if c in errors:
            replies.append(Message(Error(code=1, reason="Traceback ...\nValueError: client broke"), reply_to=m))
        else:
            replies.append(Message(RecordDict({"arrays": ArrayRecord({"w": Array((g + updates[c]).astype(np.float32))}),
                                               "metrics": MetricRecord({"weight": 1.0})}), reply_to=m))
    arrays, _ = strategy.aggregate_train(1, replies)
    return arrays["w"].numpy() - g, strategy


def _updates(k: int = 5, outlier: float = 50.0, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    benign = [0.01 * rng.standard_normal(DIM).astype(np.float32) for _ in range(k - 1)]
    return benign + [np.full(DIM, outlier / math.sqrt(DIM), dtype=np.float32)]  # the last: norm `outlier`


def test_fedavg_averages_with_equal_weights_and_records_the_round(task_identity):
    ups = _updates()
    agg, strategy = _aggregate("none", ups)
    np.testing.assert_allclose(agg, np.mean(ups, axis=0), atol=1e-5)
    rec = strategy.rounds[1]
    assert rec["clients"] == [0, 1, 2, 3, 4]
    assert rec["update_norms"][-1] == pytest.approx(50.0, rel=1e-4) and max(rec["update_norms"][:-1]) < 1.0


def test_fedavg_of_a_boosted_update_replaces_the_model(task_identity):
    # the replacement arithmetic through Flower's own FedAvg: attacker's update X - G boosted by K
    rng = np.random.default_rng(1)
    k, target = 5, rng.standard_normal(DIM).astype(np.float32)
    benign = [0.01 * rng.standard_normal(DIM).astype(np.float32) for _ in range(k - 1)]
    agg, _ = _aggregate("none", benign + [auto_boost(k) * target])
    np.testing.assert_allclose(agg, target + np.sum(benign, axis=0) / k, atol=1e-4)


def test_clip_bounds_every_update(task_identity):
    ups = _updates()
    agg, strategy = _aggregate("clip", ups, clip_norm=1.0)
    clipped = [u * min(1.0, 1.0 / np.linalg.norm(u)) for u in ups]
    np.testing.assert_allclose(agg, np.mean(clipped, axis=0), atol=1e-5)
    assert np.linalg.norm(agg) <= 1.0 + 1e-4  # the outlier's 50 became 1
    assert strategy.rounds[1]["clip_norm"] == 1.0


def test_clip_auto_measures_the_median_norm_of_the_first_round(task_identity):
    ups = _updates()
    agg, strategy = _aggregate("clip", ups, clip_auto=True)
    median = float(np.median([np.linalg.norm(u) for u in ups]))
    assert strategy.rounds[1]["clip_norm"] == pytest.approx(median, rel=1e-4)
    assert np.linalg.norm(agg) < 2 * median  # the outlier clipped to the median


def test_clip_noise_adds_noise_of_the_given_standard_deviation(task_identity):
    ups = _updates()
    clipped, _ = _aggregate("clip", ups, clip_norm=1.0)
    noisy, _ = _aggregate("clip-noise", ups, clip_norm=1.0, noise=0.05)
    assert np.std(noisy - clipped) == pytest.approx(0.05, rel=0.1)


def test_krum_keeps_a_benign_update(task_identity):
    ups = _updates()
    agg, _ = _aggregate("krum", ups, krum_malicious=1)
    assert any(np.allclose(agg, u, atol=1e-6) for u in ups[:-1])
    assert np.linalg.norm(agg) < 1.0


@pytest.mark.parametrize("defense", ["trimmed-mean", "median"])
def test_coordinatewise_defenses_drop_the_outlier(task_identity, defense):
    ups = _updates()
    agg, _ = _aggregate(defense, ups, **({"trim_beta": 0.2} if defense == "trimmed-mean" else {}))
    assert np.linalg.norm(agg) < 1.0  # FedAvg would move 10 (= 50 / 5)
    if defense == "trimmed-mean":
        stacked = np.sort(np.stack(ups), axis=0)[1:-1]  # int(0.2 * 5) = 1 cut from each end
        np.testing.assert_allclose(agg, stacked.mean(0), atol=1e-5)


def test_a_failed_client_fails_the_round(task_identity):
    with pytest.raises(BackdoorlabError, match="client 2 failed in round 1: ValueError: client broke"):
        _aggregate("none", _updates(), errors=(2,))


def test_flower_and_ray_are_imported_only_when_a_federation_runs():
    code = ("import sys, backdoorlab.federated, backdoorlab.federated.strategies, backdoorlab.federated.client, "
            "backdoorlab.federated.server, backdoorlab.federated.simulation, backdoorlab.runs.federated, "
            "backdoorlab.cli; print(sorted(m for m in ('flwr', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_flower_is_one_line_naming_the_extra(monkeypatch):
    from backdoorlab.federated.simulation import flower
    monkeypatch.setitem(sys.modules, "flwr.simulation", None)  # import flwr.simulation raises ImportError
    with pytest.raises(BackdoorlabError, match=r"pip install 'backdoorlab\[federated\]'"):
        flower()
