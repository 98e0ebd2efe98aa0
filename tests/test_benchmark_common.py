"""The benchmark scripts' shared results file: two processes writing one results.json keep each other's rows."""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
from common import merge_results, open_results  # noqa: E402


def test_two_writers_keep_each_others_entries(tmp_path):
    # Both open the (empty) directory before either saves, as two --endpoint-seeds processes started together do.
    _, a, save_a = open_results(str(tmp_path))
    _, b, save_b = open_results(str(tmp_path))
    a.update(dataset="mnist", endpoints={"1": {"clean_accuracy": 0.99}})
    b.update(dataset="mnist", endpoints={"2": {"clean_accuracy": 0.98}})
    save_a()
    save_b()
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["endpoints"] == {"1": {"clean_accuracy": 0.99}, "2": {"clean_accuracy": 0.98}}
    a["defenses"] = {"two@1000": {"t": 0.5}}
    save_a()
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert set(on_disk["endpoints"]) == {"1", "2"} and on_disk["defenses"] == {"two@1000": {"t": 0.5}}


def test_merge_prefers_our_values():
    merged = merge_results({"machine": "old", "defenses": {"x": 1, "y": 2}}, {"machine": "new", "defenses": {"y": 3}})
    assert merged == {"machine": "new", "defenses": {"x": 1, "y": 3}}


def test_merged_attack_table_names_each_rows_run():
    from report_tables import attack_table, merge_attack_results
    run = lambda name, ca, cmd: {"dataset": "cifar10", "arch": "resnet20", "machine": f"cpu {cmd}",
                                 "command": cmd, "attacks": {name: {"clean_accuracy": ca, "attack_success_rate": 0.9,
                                                                    "attack": {"stamp": "data"}}}}
    merged = merge_attack_results([run("blended", 0.84, "a"), run("blended", 0.83, "b"),
                                   {**run("dynamic", 0.85, "c"), "clean": {"clean_accuracy": 0.86}}])
    assert list(merged["attacks"]) == ["blended", "blended (run 2)", "dynamic"]
    text = attack_table(merged)
    rows = [line for line in text.splitlines() if line.startswith("| blended") or line.startswith("| dynamic")]
    assert len(rows) == 3 and "run 2; stamp data" in rows[1] and "| 1.00 |" in rows[2]  # drop vs the run-3 clean model
    assert "1. cpu a; `a`" in text and "3. cpu c; `c`" in text
    import pytest
    with pytest.raises(SystemExit, match="one data set"):
        merge_attack_results([run("blended", 0.84, "a"), {**run("x", 0.5, "b"), "dataset": "mnist"}])


def test_trigger_visibility_bins_by_what_the_stamp_changes():
    import torch
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "exploration"))
    from trigger_visibility import visibility
    from backdoorlab.attacks.backdoor import Backdoor
    from backdoorlab.triggers import PatchTrigger

    class BrightCorner(torch.nn.Module):  # predicts 0 when the patch area is bright, else 1
        def forward(self, x):
            bright = x[:, 0, 4:7, 4:7].mean((1, 2)) > 0.97
            return torch.stack([bright.float(), (~bright).float()], 1)

    # 8x8 images, patch 3x3 at bottom-right with margin 1 (rows/cols 4-6); labels 1 (eligible) except one 0.
    x = torch.zeros(6, 1, 8, 8, dtype=torch.uint8)
    x[1, :, 4:7, 4:7] = 255            # already white: the stamp changes nothing
    x[2, :, 4:7, 4:7] = 250            # changes 5/255 < 0.02
    x[3, :, 4:7, 4:7] = 245            # changes 10/255: 0.02-0.05
    y = torch.tensor([1, 1, 1, 1, 1, 0])
    rows = visibility(BrightCorner(), Backdoor(PatchTrigger(3), target=0), x, y, 2)
    by_band = {r["band"]: r for r in rows}
    assert by_band[(0.0, 0.02)]["n"] == 2 and by_band[(0.02, 0.05)]["n"] == 1
    assert by_band[(0.1, float("inf"))]["n"] == 2 and by_band[None]["n"] == 5  # label 0 is not eligible
    assert all(r["asr"] == 1.0 for r in rows if r["n"])  # the model fires on every stamped image


def test_a_stale_copy_of_a_row_does_not_overwrite_what_another_writer_saved(tmp_path):
    """Two processes evaluating different models of one grid, both holding every model's row (as each save reads
    the other's rows back): B's unchanged copy of model x must not replace what A wrote for x."""
    (tmp_path / "results.json").write_text(json.dumps({"models": {"x": {"poison": 1}, "y": {"poison": 1}}}))
    _, a, save_a = open_results(str(tmp_path))
    _, b, save_b = open_results(str(tmp_path))
    entry_x = a["models"]["x"]
    entry_x["strip"] = 0.99
    save_a()
    entry_y = b["models"]["y"]
    entry_y["strip"] = 0.98
    save_b()  # b still holds x as it first read it
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["models"] == {"x": {"poison": 1, "strip": 0.99}, "y": {"poison": 1, "strip": 0.98}}
    assert b["models"]["x"] == {"poison": 1, "strip": 0.99}  # b now holds A's row
    entry_y["nc"] = True  # a row a writer holds stays the one it saves
    save_b()
    entry_x["nc"] = False
    save_a()
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["models"] == {"x": {"poison": 1, "strip": 0.99, "nc": False},
                                 "y": {"poison": 1, "strip": 0.98, "nc": True}}
