"""``backdoorlab sweep``: the config is checked before any work (line and key named), the grid runs on Ray with
the same figures as the per-cell runs, models are trained once and cached by recipe, a failing cell leaves the
rest of the grid to finish, a killed worker loses and duplicates no cell, and an interrupted sweep resumed with
the same command gives the same results."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray")

from backdoorlab.errors import BackdoorlabError  # noqa: E402
from backdoorlab.sweeps import load_sweep_config, parse_sweep_config, plan, run_sweep  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = ROOT / "benchmarks" / "sweeps" / "smoke.toml"
METRICS = ("clean_accuracy", "attack_success_rate", "robust_accuracy", "suspect_clean_accuracy",
           "suspect_attack_success_rate", "ca_drop", "der", "status", "error")


def _config(tmp_path, text: str, name: str = "sweep.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _measured(rows) -> list:
    """What a cell measured (not how long it took, nor where)."""
    return [(r["cell"], r["attack"], r["defense"], *(r[k] for k in METRICS)) for r in rows]


def _cli(*args, **popen):
    return subprocess.Popen([sys.executable, "-m", "backdoorlab.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke sweep, run once through the Python API with two workers."""
    out = tmp_path_factory.mktemp("smoke")
    result = run_sweep(load_sweep_config(str(SMOKE)), out, workers=2, progress=False)
    return out, result


# --- the config, refused before any work ------------------------------------------------------------------

GOOD = """[sweep]
datasets = ["digits"]
seeds = [1]
budgets = [200]

[attacks.badnets]
trigger_size = 2

[defenses.finetune]
"""


@pytest.mark.parametrize("old, new, message", [
    ("[attacks.badnets]", "[attacks.badnetz]", "sweep.toml:6: [attacks.badnetz]: unknown attack 'badnetz'"),
    ("[defenses.finetune]", "[defenses.finetune]\nfoo = 1", "sweep.toml:10: [defenses.finetune]: unknown option"),
    ("[defenses.finetune]", "[defenses.x]\ndefense = \"nope\"", "sweep.toml:10: [defenses.x]: unknown defense 'nope'"),
    ("seeds = [1]", "seeds = [1]\nseed = 3", "sweep.toml:4: [sweep]: unknown key 'seed'"),
    ("budgets = [200]", "budgets = [200, 500]", "sweep.toml:4: [sweep]: clean budget of 500 images is larger than "
                                                "the held-out pool of 400 images for digits"),
    ("trigger_size = 2", "trigger_size = 2\ncolour = 3", "sweep.toml:8: [attacks.badnets]: unknown key 'colour'"),
    ("trigger_size = 2", "trigger_size = \"big\"", "sweep.toml:7: [attacks.badnets]:"),
    ("[defenses.finetune]", "[defense.finetune]", "sweep.toml:9: [defense]: unknown section 'defense'"),
    ('datasets = ["digits"]', 'datasets = ["digitz"]', "sweep.toml:2: [sweep]:"),
    ("trigger_size = 2", "trigger_size = 2\ntarget = 12", "sweep.toml:8: [attacks.badnets]: target"),
    ("trigger_size = 2", "trigger_size = 9", "sweep.toml:7: [attacks.badnets]: trigger_size"),
    ("[defenses.finetune]", "[detectors.strop]", "sweep.toml:9: [detectors.strop]: unknown detector 'strop'"),
    ("[defenses.finetune]", "[detectors.scan]\nepochz = 2", "sweep.toml:10: [detectors.scan]: unknown"),
    ("[defenses.finetune]", "[attacks.wp]\nattack = \"weight-perturbation\"\nepsilon = -1",
     "sweep.toml:11: [attacks.wp]: epsilon"),
    ("[defenses.finetune]", "[attacks.wp]\nattack = \"weight-perturbation\"\nalpha = 0.3",
     "sweep.toml:11: [attacks.wp]: unknown key 'alpha'"),
    ("[defenses.finetune]", "[defenses.two]\ndefense = \"mode-connectivity\"\nsuspects = 3",
     "sweep.toml:11: [defenses.two]: suspects must be 1 or 2"),
    ("[defenses.finetune]", "[attacks.lat]\nattack = \"latent\"",
     "sweep.toml:10: [attacks.lat]: the latent attack's backdoor fires only in a transfer-learned student"),
    ("[defenses.finetune]", "[attacks.latent]",
     "sweep.toml:9: [attacks.latent]: the latent attack's backdoor fires only in a transfer-learned student"),
])
def test_bad_config_named_by_line_and_key(tmp_path, old, new, message):
    assert old in GOOD
    path = _config(tmp_path, GOOD.replace(old, new))
    with pytest.raises(BackdoorlabError) as e:
        load_sweep_config(str(path))
    assert str(e.value).startswith(str(tmp_path / message)), str(e.value)
    assert "\n" not in str(e.value)


def test_bad_config_on_the_command_line_is_one_line_and_writes_nothing(tmp_path):
    path = _config(tmp_path, GOOD.replace("[defenses.finetune]", "[defenses.finetune]\nepochz = 3"))
    proc = _cli("sweep", str(path), "--out", str(tmp_path / "out"))
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert text.strip().splitlines() == [text.strip()] and "epochz" in text and "sweep.toml:10" in text
    assert not (tmp_path / "out").exists()


def test_not_toml(tmp_path):
    with pytest.raises(BackdoorlabError, match="not valid TOML"):
        load_sweep_config(str(_config(tmp_path, "[sweep\n")))


def test_models_are_keyed_by_recipe_and_shared():
    cfg = parse_sweep_config({"sweep": {"datasets": ["digits"], "seeds": [1, 2], "budgets": [100]},
                              "attacks": {"badnets": {}, "wp": {"attack": "weight-perturbation"},
                                          "clean": {"attack": "none", "score_with": "badnets"}},
                              "defenses": {"finetune": {}, "two": {"defense": "mode-connectivity", "suspects": 2}}},
                             "inline.toml")
    models, cells = plan(cfg)
    # badnets seeds 1, 2, 3 (3: second suspect of seed 2), clean 1, 2, 3 (bases of the weight attack, and the
    # clean rows' models, shared), weight perturbation 1, 2
    assert len(models) == 8
    assert len({c.key for c in cells}) == len(cells)
    two = [c for c in cells if c.labels["defense"] == "two"]
    assert {c.labels["attack"] for c in two} == {"badnets", "clean"}  # no second suspect of an attack on weights
    again, _ = plan(cfg)
    assert list(again) == list(models)  # the keys are the recipes' hashes, nothing random


# --- running it ---------------------------------------------------------------------------------------------

def test_smoke_sweep_writes_its_results(smoke):
    out, result = smoke
    rows = result["rows"]
    assert [(r["attack"], r["defense"]) for r in rows] == [
        ("badnets", "none"), ("badnets", "finetune"), ("badnets", "fine-pruning"),
        ("blended", "none"), ("blended", "finetune"), ("blended", "fine-pruning")]
    assert all(r["status"] == "ok" for r in rows)
    for name in ("results.csv", "results.json", "results.md", "index.html", "sweep.toml", "plan.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert _measured(saved["rows"]) == _measured(rows) and saved["sweep"]["complete"] is True
    assert len(list((out / "models").iterdir())) == 2  # one suspect per attack, shared by its three cells
    for r in rows:
        assert r["seconds"] is not None and r["machine"]
        if r["kind"] == "defense":
            assert r["suspect_attack_success_rate"] > 0.9 and r["budget"] == 200


def test_suspect_matches_the_training_run(smoke):
    """A sweep's suspect has the figures of `backdoorlab train` with the same options, at one thread (the thread
    count changes float sums, hence the figures)."""
    import torch

    from backdoorlab.attacks import build_attack
    from backdoorlab.data import load_dataset
    from backdoorlab.runs import train_config, train_run
    _, result = smoke
    ds = load_dataset("digits")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        attack = build_attack("badnets", target=0, size=2, image_shape=(1, 8, 8), num_classes=10)
        _, meta = train_run(ds, "small-cnn", train_config("digits", "small-cnn", seed=1), attack, progress=False)
    finally:
        torch.set_num_threads(threads)
    suspect = next(r for r in result["rows"] if r["attack"] == "badnets" and r["defense"] == "none")
    assert suspect["clean_accuracy"] == meta["metrics"]["clean_accuracy"]
    assert suspect["attack_success_rate"] == meta["metrics"]["attack_success_rate"]


def test_cell_matches_the_repair_command(smoke, tmp_path):
    out, result = smoke
    cell = next(r for r in result["rows"] if r["attack"] == "badnets" and r["defense"] == "finetune")
    suspect = out / "models" / cell["recipe"]["models"][0]
    proc = _cli("--threads", "1", "repair", "finetune", str(suspect), "--dataset", "digits", "--clean-budget", "200",
                "--out", str(tmp_path / "r"), "--json", "--no-progress")
    text, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, text
    report = json.loads(text.strip().splitlines()[-1])
    assert report["after"]["clean_accuracy"] == cell["clean_accuracy"]
    assert report["after"]["attack_success_rate"] == cell["attack_success_rate"]


def test_one_more_defense_trains_nothing_new(smoke, tmp_path, monkeypatch):
    """...and the results are written as the cells finish, the cells not run yet marked pending."""
    import backdoorlab.sweeps.engine as engine
    import backdoorlab.sweeps.report as report
    out, result = smoke
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    made = {p.name: p.stat().st_mtime for p in (copy / "models").iterdir()}
    writes = []
    real = report.write_results
    monkeypatch.setattr(engine, "PARTIAL_EVERY", 0.0)
    monkeypatch.setattr(report, "write_results", lambda out_dir, rows, sweep: (
        writes.append((sweep["complete"], sum(r["status"] == "pending" for r in rows))),
        real(out_dir, rows, sweep)))
    text = SMOKE.read_text() + "\n[defenses.noise]\n"
    rerun = run_sweep(parse_sweep_config(__import__("tomllib").loads(text), str(SMOKE), text), copy, workers=2,
                      progress=False)
    assert writes[-1] == (True, 0) and (False, 1) in writes  # one of the two new cells done, one pending
    assert {p.name: p.stat().st_mtime for p in (copy / "models").iterdir()} == made
    old = {r["cell"]: r for r in result["rows"]}
    for r in rerun["rows"]:
        if r["cell"] in old:  # read back, not measured again
            assert r["seconds"] == old[r["cell"]]["seconds"] and _measured([r]) == _measured([old[r["cell"]]])
    assert [r["defense"] for r in rerun["rows"]].count("noise") == 2
    assert all(r["status"] == "ok" for r in rerun["rows"])


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_on_a_running_cluster_a_failing_cell_is_reported_and_the_rest_completes(smoke, tmp_path):
    """`--address` joins a Ray instance started apart (`ray start --head`, as on a cluster's head node). There,
    a Neural Cleanse batch larger than the clean budget passes the config check (it is a valid batch) and fails
    in the cells that meet it, with the scan command's own one-line message; the rest of the grid completes."""
    out, result = smoke
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    path = _config(tmp_path, SMOKE.read_text() + "\n[detectors.scan]\nbatch_size = 300\n")
    port = _free_port()
    ray_cli = pathlib.Path(sys.executable).parent / "ray"
    head = subprocess.Popen([str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2", "--block",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        proc = _cli("sweep", str(path), "--out", str(copy), "--address", f"127.0.0.1:{port}", "--no-progress")
        log, _ = proc.communicate(timeout=600)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
    assert proc.returncode == 0, log
    rows = json.loads((copy / "results.json").read_text())["rows"]
    bad = [r for r in rows if r["defense"] == "scan"]
    assert len(bad) == 2 and all(r["status"] == "failed" for r in bad)
    assert all("smaller than Neural Cleanse's batch of 300" in r["error"] and "\n" not in r["error"] for r in bad)
    good = [r for r in rows if r["defense"] != "scan"]
    assert _measured(good) == _measured(result["rows"])
    assert "2 failed" in log and "failed: digits small-cnn badnets seed 1 / scan" in log


def _parent(pid: int) -> int:
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    try:
        while pid > 1:
            pid = _parent(pid)
            if pid == ancestor:
                return True
    except (OSError, ValueError, IndexError):
        pass
    return False


def _running_jobs(driver: int) -> list[int]:
    """The Ray worker processes of the sweep ``driver`` started (its local Ray instance's) that run a job now;
    Ray titles them ray::run_job while they do. Workers of other sweeps on the machine are left alone."""
    pids = []
    for proc in pathlib.Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(b"ray::run_job") and \
                        _descends_from(int(proc.name), driver):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


@pytest.mark.skipif(not pathlib.Path("/proc").is_dir(), reason="finds Ray's worker processes in /proc")
def test_a_killed_worker_then_an_interrupt_lose_and_duplicate_nothing(smoke, tmp_path):
    """A worker process killed in the middle of a job: Ray runs the job again. Then the sweep is stopped (SIGTERM,
    as a batch scheduler stops a job, in a process that ignores SIGINT, as a shell's background job does) and
    resumed with the same command: it finishes with the results of an undisturbed run, each cell once, and
    nothing half-made left behind."""
    _, result = smoke
    out = tmp_path / "out"
    proc = _cli("sweep", str(SMOKE), "--out", str(out), "--workers", "2", "--no-progress",
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    killed, deadline = None, time.time() + 240
    while killed is None and time.time() < deadline and proc.poll() is None:
        running = _running_jobs(proc.pid)
        if running and (out / "models").is_dir() and any((out / "models").iterdir()):
            killed = running[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    assert killed is not None, "no job was seen running"
    while time.time() < deadline and proc.poll() is None:
        if (out / "cells").is_dir() and any((p / "result.json").exists() for p in (out / "cells").iterdir()):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in log, log  # it stopped before the end
    if (out / "results.json").exists():  # partial results, written while it ran
        assert json.loads((out / "results.json").read_text())["sweep"]["complete"] is False
    done = {p.name for p in (out / "cells").iterdir() if (p / "result.json").exists()}
    assert 0 < len(done) < len(result["rows"])
    again = _cli("sweep", str(SMOKE), "--out", str(out), "--workers", "2", "--no-progress")
    log, _ = again.communicate(timeout=600)
    assert again.returncode == 0, log
    saved = json.loads((out / "results.json").read_text())
    rows = saved["rows"]
    assert 0 < saved["sweep"]["jobs_made_before"] < saved["sweep"]["jobs"]
    assert "jobs were made by an earlier run it resumed" in (out / "results.md").read_text()
    assert len(rows) == len({r["cell"] for r in rows}) == len(result["rows"])
    assert _measured(rows) == _measured(result["rows"])
    leftovers = [p for sub in ("models", "cells") for p in (out / sub).iterdir() if p.name.startswith(".tmp-")]
    assert not leftovers


def test_detector_verdicts_and_post_retune_asr(smoke, tmp_path):
    """[detectors.*] add a verdict per suspect and [retune] a post-retune ASR per repaired model, from the runs of
    `backdoorlab detect-poison` and `backdoorlab retune`; the suspects are reused."""
    out, result = smoke
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    made = sorted(p.name for p in (copy / "models").iterdir())
    text = (SMOKE.read_text().replace("[defenses.fine-pruning]\n", "")
            + "\n[detectors.activation-clustering]\n\n[retune]\nepochs = 1\nclean_images = 95\n")
    rerun = run_sweep(parse_sweep_config(__import__("tomllib").loads(text), str(SMOKE), text), copy, workers=2,
                      progress=False)
    assert sorted(p.name for p in (copy / "models").iterdir()) == made
    rows = {(r["attack"], r["defense"]): r for r in rerun["rows"]}
    assert all(r["status"] == "ok" for r in rows.values()), [r["error"] for r in rows.values()]
    for attack in ("badnets", "blended"):
        verdict = rows[(attack, "activation-clustering")]
        assert verdict["kind"] == "detector" and isinstance(verdict["flagged"], bool)
        assert "training images flagged" in verdict["detail"] and "precision" in verdict["detail"]
        repaired = rows[(attack, "finetune")]
        assert 0 <= repaired["post_retune_asr"] <= 1
        before = next(r for r in result["rows"] if r["attack"] == attack and r["defense"] == "finetune")
        assert repaired["cell"] != before["cell"]  # a retune makes it another cell (another recipe)
        assert repaired["attack_success_rate"] == before["attack_success_rate"]  # the same repair underneath
