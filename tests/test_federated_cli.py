"""``backdoorlab federated`` end to end on the digits (a real Flower simulation on Ray: 4 clients, 3 per round, 3
rounds, client 1 replacing the model in round 3), what it writes, that `backdoorlab evaluate` measures the planted
backdoor on the global model, that the same command gives the same federation, and its one-line errors before any
work."""

import json

import pytest

from backdoorlab.cli import main

pytest.importorskip("flwr")
pytest.importorskip("ray")

COMMAND = ["federated", "--dataset", "digits", "--arch", "small-cnn", "--clients", "4", "--per-round", "3",
           "--rounds", "3", "--attack", "badnets", "--target", "0", "--attacker-clients", "1", "--attack-rounds", "3",
           "--boost", "auto", "--seed", "0", "--workers", "1", "--no-progress"]


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """The command run once for the module: its output directory."""
    out = tmp_path_factory.mktemp("fed") / "run"
    assert main([*COMMAND, "--out", str(out)]) == 0
    return out


def test_rounds_json_has_ca_and_asr_per_round_with_the_attack_round_marked(federation):
    report = json.loads((federation / "rounds.json").read_text())
    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    assert [r["attack_round"] for r in rounds] == [False, False, False, True]
    assert all(len(r["clients"]) == 3 for r in rounds[1:])
    assert rounds[3]["malicious"] == [1] and 1 in rounds[3]["clients"]
    assert all(r["malicious"] == [] for r in rounds[1:3])  # the attacker trains honestly outside its round
    # the boosted update is K = 3 times the attacker's own: far above the benign ones
    norms = dict(zip(rounds[3]["clients"], rounds[3]["update_norms"]))
    assert norms[1] > 2 * max(v for c, v in norms.items() if c != 1)
    # the model learns before the attack, and the backdoor appears in the attack round, not before
    assert rounds[2]["clean_accuracy"] > 0.8
    assert max(r["attack_success_rate"] for r in rounds[:3]) < 0.2
    assert rounds[3]["attack_success_rate"] > 0.9
    assert report["final"]["attack_success_rate"] == rounds[3]["attack_success_rate"]
    assert (federation / "rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_json_records_every_setting_and_seed(federation):
    config = json.loads((federation / "config.json").read_text())
    s = config["settings"]
    assert config["command"] == "federated" and config["versions"]["flwr"].startswith("1.")
    assert (s["clients"], s["per_round"], s["rounds"], s["seed"], s["holdout"]) == (4, 3, 3, 0, 400)
    assert s["attackers"] == [1] and s["attack_rounds"] == [3] and s["boost"] == 3.0 and s["boost_auto"]
    assert s["attack"]["name"] == "badnets" and s["attack"]["target"] == 0 and s["attack"]["poison_rate"] == 0.3
    assert s["partition"] == "iid" and s["defense"] == "none" and s["local_epochs"] >= 1


def test_global_checkpoint_is_evaluated_with_its_planted_backdoor(federation, capsys, digits):
    from backdoorlab import checkpoint_clean_budget
    from backdoorlab.federated import partition
    meta = json.loads((federation / "global" / "model.json").read_text())
    assert meta["arch"] == "small-cnn" and meta["dataset"] == "digits" and meta["holdout"]["size"] == 400
    assert meta["provenance"]["federated"]["attackers"] == [1]
    code, out, err = run(capsys, "evaluate", str(federation / "global"), "--json")
    assert code == 0, err
    measured = json.loads(out)
    rounds = json.loads((federation / "rounds.json").read_text())["rounds"]
    assert measured["backdoor"]["target"] == 0
    assert measured["attack_success_rate"] == rounds[-1]["attack_success_rate"] > 0.9
    assert measured["clean_accuracy"] == rounds[-1]["clean_accuracy"]
    # the clean budget a defender of this model draws is from the pool: no client held any of it
    budget = checkpoint_clean_budget(digits, meta, 300)
    held = set().union(*(set(p.tolist()) for p in partition(digits, 4, "iid", seed=0, holdout=400)))
    assert not held & set(budget.indices.tolist())


def test_the_same_command_gives_the_same_federation(federation, tmp_path, capsys):
    code, out, err = run(capsys, *COMMAND, "--out", str(tmp_path / "again"), "--json")
    assert code == 0, err
    printed = json.loads(out)
    first = json.loads((federation / "rounds.json").read_text())
    assert printed["rounds"] == [{k: r[k] for k in ("round", "clean_accuracy", "attack_success_rate")}
                                 for r in first["rounds"]]
    assert printed["final"] == {k: first["final"][k] for k in ("clean_accuracy", "attack_success_rate")}
    again = json.loads((tmp_path / "again" / "rounds.json").read_text())["rounds"]
    assert [r.get("clients") for r in again] == [r.get("clients") for r in first["rounds"]]
    sha = [json.loads((d / "global" / "model.json").read_text())["weights_sha256"]
           for d in (federation, tmp_path / "again")]
    assert sha[0] == sha[1]


def test_evaluating_every_other_round_skips_only_the_measurements(federation, tmp_path, capsys):
    code, out, err = run(capsys, *COMMAND, "--evaluate-every", "2", "--out", str(tmp_path / "sparse"))
    assert code == 0, err
    full = json.loads((federation / "rounds.json").read_text())["rounds"]
    sparse = json.loads((tmp_path / "sparse" / "rounds.json").read_text())["rounds"]
    # round 1 is skipped; 0 (the start), 2 (every 2nd) and 3 (the attack round, the last) are measured
    assert [("clean_accuracy" in r) for r in sparse] == [True, False, True, True]
    for a, b in zip(full, sparse):
        assert a.get("clients") == b.get("clients") and a.get("update_norms") == b.get("update_norms")
        if "clean_accuracy" in b:
            assert (a["clean_accuracy"], a["attack_success_rate"]) == (b["clean_accuracy"], b["attack_success_rate"])
    assert "round   1" not in out and "round   2" in out  # the console lists the measured rounds
    sha = [json.loads((d / "global" / "model.json").read_text())["weights_sha256"]
           for d in (federation, tmp_path / "sparse")]
    assert sha[0] == sha[1]  # the federation itself is the same
    assert (tmp_path / "sparse" / "rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- bad input: one line, exit 2, before any work (no output directory, no Ray) ----------------------------------

def _with(**changes) -> list[str]:
    """COMMAND with options replaced (value None: removed) or added."""
    args, out = list(COMMAND), []
    flags = {a: i for i, a in enumerate(args) if a.startswith("--")}
    for key, value in changes.items():
        flag = "--" + key.replace("_", "-")
        if flag in flags:
            i = flags[flag]
            args[i + 1] = value
        else:
            out += [flag] if value == "" else [flag, value]
    return [a for a in args if a is not None] + out


@pytest.mark.parametrize("changes, message", [
    (dict(per_round="5"), "--per-round must be between 1 and --clients (4), got 5"),
    (dict(attacker_clients="0-4"), "5 attackers but only 4 clients"),
    (dict(attacker_clients="7"), "client id 7 is out of range; the 4 clients are numbered 0 to 3"),
    (dict(attacker_clients="0-3"), "4 attackers cannot all train in a round of --per-round 3"),
    (dict(attack_rounds="4"), "--attack-rounds: round 4 is not one of the 3 rounds"),
    (dict(attack_rounds="two"), "--attack-rounds must be integers or ranges"),
    (dict(boost="lots"), "--boost must be auto or a number"),
    (dict(defense="clip"), "--defense clip needs --clip-norm"),
    (dict(defense="bulyan"), "unknown --defense 'bulyan'"),
    (dict(defense="trimmed-mean"), "trims no update from a round of 3"),
    (dict(clip_norm="2"), "--clip-norm is for --defense clip or clip-noise, not none"),
    (dict(rounds="0", attack_rounds="all"), "--rounds must be >= 1"),
    (dict(evaluate_every="0"), "--evaluate-every must be >= 1"),
    (dict(partition="dirichlet", dirichlet_alpha="0"), "--dirichlet-alpha must be > 0"),
    (dict(target="12"), "target"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, changes, message):
    out = tmp_path / "never"
    code, _, err = run(capsys, *_with(**changes), "--out", str(out))
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_attack_options_without_an_attack_are_refused(tmp_path, capsys):
    args = [a for a in COMMAND]
    i = args.index("--attack")
    del args[i:i + 2]
    code, _, err = run(capsys, *args, "--out", str(tmp_path / "x"))
    assert code == 2 and err.startswith("error: --attacker-clients needs --attack")


def test_start_from_of_another_architecture_or_into_itself_is_refused(federation, tmp_path, capsys):
    model = str(federation / "global")
    code, _, err = run(capsys, *_with(arch="resnet20"), "--start-from", model, "--out", str(tmp_path / "y"))
    assert code == 2 and "is a small-cnn model, not --arch resnet20" in err
    code, _, err = run(capsys, *COMMAND, "--start-from", model, "--out", str(federation))
    assert code == 2 and "being read" in err


def test_out_holding_another_commands_model_is_refused(tmp_path, capsys):
    from backdoorlab.models import new_model, save_checkpoint
    from backdoorlab.data import load_dataset
    save_checkpoint(new_model("small-cnn", load_dataset("digits")), tmp_path / "trained",
                    {"dataset": "digits", "provenance": {"attack": None}})
    code, _, err = run(capsys, *COMMAND, "--out", str(tmp_path / "trained"))
    assert code == 2 and "already holds a model written by `backdoorlab train`" in err
