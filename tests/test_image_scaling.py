"""The image-scaling backdoor: the resize methods (``--resize``), the attack against nearest and bilinear
scaling, the two defenses (area scaling, the selective median filter), ``backdoorlab poison-folder`` and the
commands that read its record, and their one-line errors (small synthetic images and the bundled digits)."""

import json
import math

import numpy as np
import pytest
import torch

from backdoorlab.attacks import Backdoor
from backdoorlab.attacks.image_scaling import psnr, scaled, scaling_attack
from backdoorlab.budget import holdout_split
from backdoorlab.cli import main
from backdoorlab.data import load_dataset
from backdoorlab.data.image_files import list_split
from backdoorlab.data.image_size import resize_array
from backdoorlab.data.median_defense import median_filter_sampled
from backdoorlab.data.resize import resize_float, resize_with, sampled_pixels, scaling_matrices
from backdoorlab.data.user_traits import user_holdout
from backdoorlab.errors import BackdoorlabError
from backdoorlab.runs.dataset import run_dataset
from backdoorlab.runs.poison_folder import poison_folder_run
from backdoorlab.triggers import PatchTrigger

PIL = pytest.importorskip("PIL.Image")
PATCH = PatchTrigger(size=3)  # a white 3x3 square, bottom-right, one pixel from the border


def smooth_sources(n: int, channels: int, big: int, seed: int = 0) -> torch.Tensor:
    """Float (n, C, big, big) images in [0, 1] without sharp edges: small random images enlarged bicubically, like
    the upscaled data sets the attack is measured on."""
    small = torch.rand(n, channels, 8, 8, generator=torch.Generator().manual_seed(seed)) * 0.6
    return torch.nn.functional.interpolate(small, size=(big, big), mode="bicubic", align_corners=False).clamp(0, 1)


def targets_of(sources: torch.Tensor, size: int, method: str) -> torch.Tensor:
    """What the attacker wants the model to see: the source resized as the pipeline does, rounded to 8 bits,
    with the trigger stamped."""
    small = (resize_float(sources.double(), (size, size), method) * 255).round() / 255
    return PATCH.apply(small.float()).double()


def uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.uint8)


# --- the resize methods -------------------------------------------------------------------------------------

def test_the_kernels_are_the_vulnerable_library_ones():
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    near = resize_float(x, (4, 4), "nearest")[0, 0]
    assert torch.equal(near, x[0, 0, ::4, ::4])  # OpenCV INTER_NEAREST: pixel floor(4 i)
    lin = resize_float(x, (4, 4), "bilinear")[0, 0]
    rows = (x[0, 0, 1::4] + x[0, 0, 2::4]) / 2  # half-pixel centres 4 i + 1.5: no antialiasing
    assert torch.allclose(lin, (rows[:, 1::4] + rows[:, 2::4]) / 2)
    area = resize_float(x, (4, 4), "area")[0, 0]
    assert torch.allclose(area, x[0, 0].reshape(4, 4, 4, 4).mean((1, 3)))


@pytest.mark.parametrize("method", ["nearest", "bilinear", "area"])
def test_the_scaling_matrices_are_the_resize(method):
    x = torch.rand(2, 3, 21, 17, dtype=torch.float64)
    left, right = scaling_matrices((21, 17), (5, 4), method)
    assert torch.allclose(left @ x @ right.T, resize_float(x, (5, 4), method))


def test_the_sampled_pixels_are_one_or_four_in_each_block_for_nearest_and_bilinear_and_all_for_area():
    assert sampled_pixels((16, 16), (4, 4), "nearest").sum() == 16
    assert sampled_pixels((16, 16), (4, 4), "bilinear").sum() == 64
    assert sampled_pixels((16, 16), (4, 4), "area").all()


def test_lanczos_stays_the_default_and_the_others_resize_grey_and_colour():
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    old = np.asarray(PIL.fromarray(image).resize((6, 5), PIL.Resampling.LANCZOS))
    assert np.array_equal(resize_array(image, (5, 6)), old)
    for method in ("nearest", "bilinear", "area"):
        assert resize_with(image, (5, 6), method).shape == (5, 6, 3)
        assert resize_with(image[..., 0], (5, 6), method).shape == (5, 6)


def test_an_npz_set_takes_the_method_and_records_it(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (30, 16, 16), dtype=np.uint8)
    y = np.arange(30) % 3
    np.savez(tmp_path / "s.npz", x_train=x, y_train=y, x_test=x[:6], y_test=y[:6])
    with pytest.warns(UserWarning, match="resized to 4x4"):
        ds = load_dataset(f"npz:{tmp_path / 's.npz'}", image_size=(4, 4), resize="nearest")
    assert ds.source["resize"] == "nearest" and torch.equal(ds.train_x[:, 0], torch.from_numpy(x[:, ::4, ::4]))


# --- the attack ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["nearest", "bilinear"])
def test_the_attack_image_resizes_to_the_target_within_eps_and_stays_close_at_full_size(method):
    sources = smooth_sources(4, 3, 64)
    targets = targets_of(sources, 16, method)
    attack = scaling_attack(sources, targets, method, eps=1 / 255)
    seen = scaled(attack, (16, 16), method)
    assert (seen - targets).abs().max() * 255 <= 1 + 1e-9  # the paper's eps = 1.0 of 255
    assert (uint8(seen).int() - uint8(targets).int()).abs().max() <= 1  # and after the pipeline's rounding
    clean = uint8(sources)
    assert psnr(attack, clean).min() > 20  # the trigger's 3x3 pixels spread over 64x64, changed at few places
    changed = (attack != clean).any(1)
    assert not changed[:, ~sampled_pixels((64, 64), (16, 16), method)].any()  # only what the scaling reads moves
    assert (scaled(clean, (16, 16), method) - targets).abs().max() * 255 > 100  # without the attack: no trigger


def test_with_a_target_the_resize_already_meets_nothing_moves():
    sources = smooth_sources(2, 1, 32)
    targets = resize_float(uint8(sources).double() / 255, (8, 8), "bilinear")
    attack = scaling_attack(uint8(sources).double() / 255, targets, "bilinear", eps=1 / 255)
    assert torch.equal(attack, uint8(sources))


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
def test_area_scaling_and_the_median_filter_take_the_trigger_away(method):
    sources = smooth_sources(4, 1, 64, seed=1)
    targets = targets_of(sources, 16, method)
    attack = scaling_attack(sources, targets, method, eps=1 / 255)
    patch = (slice(None), slice(None), slice(12, 15), slice(12, 15))  # where the 3x3 trigger is at 16x16
    trigger_gap = (targets - resize_float(sources.double(), (16, 16), method))[patch].abs().mean() * 255
    area = scaled(attack, (16, 16), "area")
    # area scaling averages the changed pixels with the untouched ones: a quarter (bilinear, 4 of 16 pixels per
    # output pixel) or a sixteenth (nearest) of the trigger's contrast is left
    left = (area - resize_float(sources.double(), (16, 16), "area"))[patch].abs().mean() * 255
    assert left <= trigger_gap * (0.25 if method == "bilinear" else 1 / 16) + 2
    filtered = torch.stack([torch.from_numpy(median_filter_sampled(a[0].numpy(), (16, 16), method))[None]
                            for a in attack])
    after = scaled(filtered, (16, 16), method)
    rebuilt = (after - resize_float(sources.double(), (16, 16), method))[patch].abs()  # from the neighbourhood
    assert rebuilt.mean() * 255 < 0.1 * trigger_gap and rebuilt.max() * 255 < 0.2 * trigger_gap
    clean = uint8(sources)
    cleaned = torch.stack([torch.from_numpy(median_filter_sampled(c[0].numpy(), (16, 16), method))[None]
                           for c in clean])
    assert (scaled(cleaned, (16, 16), method) - scaled(clean, (16, 16), method)).abs().mean() * 255 < 12  # ~7 here


@pytest.mark.parametrize("src, dst, method, message", [
    ((30, 30), (16, 16), "bilinear", "factor of at least 2"),
    ((64, 64), (16, 16), "area", "works against --resize nearest or bilinear"),
    ((64, 64), (16, 16), "lanczos", "works against --resize nearest or bilinear"),
])
def test_the_attack_refuses_what_it_cannot_hide_in_one_line(src, dst, method, message):
    with pytest.raises(BackdoorlabError, match=message):
        scaling_attack(torch.rand(1, 1, *src), torch.rand(1, 1, *dst), method)
    with pytest.raises(BackdoorlabError, match="eps must lie in"):
        scaling_attack(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 16, 16), "nearest", eps=2.0)


# --- poison-folder and the pipeline -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_digits(tmp_path_factory):
    """The first 800 training and 200 test images of the bundled digits (8x8) written four times larger
    (bicubic) as train/ and test/ class folders."""
    ds = load_dataset("digits")
    root = tmp_path_factory.mktemp("digits") / "big"
    for split, x, y in (("train", ds.train_x[:800], ds.train_y[:800]), ("test", ds.test_x[:200], ds.test_y[:200])):
        for i, (image, label) in enumerate(zip(x, y.tolist())):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            PIL.fromarray(image[0].numpy()).resize((32, 32), PIL.Resampling.BICUBIC).save(folder / f"{i:05d}.png")
    return root


@pytest.fixture(scope="module")
def poisoned(big_digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("poisoned") / "p"
    backdoor = Backdoor(PatchTrigger(size=2), "all-to-one", 0)
    record = poison_folder_run(str(big_digits), str(out), backdoor, (8, 8), "bilinear", 1 / 255, 0.1, seed=0,
                               progress=False)
    return out, record


def test_poison_folder_relabels_a_tenth_outside_the_pool_and_records_it(big_digits, poisoned):
    out, record = poisoned
    saved = json.loads((out / "poisoning.json").read_text())
    assert saved["backdoor"] == {"trigger": PatchTrigger(size=2).to_dict(), "mode": "all-to-one", "target": 0}
    n = record["training_images"]
    assert record["poisoned_count"] == round(0.1 * (n - user_holdout(n))) == len(saved["poisoned"])
    assert all(p["label"] != 0 and p["file"].startswith("train/0/") for p in saved["poisoned"])
    paths, labels = list_split(out / "train", [str(k) for k in range(10)])
    assert len(paths) == n and labels.count(0) == list_split(big_digits / "train", [str(k) for k in range(10)])[
        1].count(0) + record["poisoned_count"]
    position = {p.relative_to(out).as_posix(): k for k, p in enumerate(paths)}
    _, pool = holdout_split(n, user_holdout(n))
    assert record["poisoned_in_pool"] == 0
    assert not set(position[p["file"]] for p in saved["poisoned"]) & set(pool.tolist())
    assert record["distance"]["scaled_error_levels"]["max"] <= 1.0 + 1e-6
    assert record["distance"]["psnr_db"]["min"] > 15
    assert sorted((out / "test").rglob("*.png")) and len(list((out / "test").rglob("*.png"))) == len(
        list((big_digits / "test").rglob("*.png")))


def test_images_the_trigger_leaves_unchanged_are_counted_apart_and_the_record_is_strict_json(tmp_path):
    root = tmp_path / "half-white"
    for split, n in (("train", 60), ("test", 10)):
        for i in range(n):
            folder = root / split / str(i % 2)
            folder.mkdir(parents=True, exist_ok=True)
            value = 255 if i % 4 < 2 else 0  # white images already show a white trigger: nothing to change
            PIL.fromarray(np.full((32, 32), value, dtype=np.uint8)).save(folder / f"{i:03d}.png")
    record = poison_folder_run(str(root), str(tmp_path / "p"), Backdoor(PatchTrigger(size=2), "all-to-one", 0),
                               (8, 8), "nearest", 1 / 255, 0.5, seed=0, progress=False)
    distance = record["distance"]
    assert 0 < distance["unchanged_images"] < record["poisoned_count"]
    assert distance["psnr_db"]["min"] > 15 and math.isfinite(distance["psnr_db"]["mean"])
    def refuse(constant):
        raise ValueError(constant)
    json.loads((tmp_path / "p" / "poisoning.json").read_text(), parse_constant=refuse)  # no Infinity or NaN


def test_the_pipeline_sees_the_trigger_only_without_a_defense(poisoned):
    out, record = poisoned
    file = out / record["poisoned"][0]["file"]
    seen = {}
    for method, defense in (("bilinear", "none"), ("area", "none"), ("bilinear", "median"), ("lanczos", "none")):
        with pytest.warns(UserWarning, match="resized to 8x8"):
            ds = load_dataset(f"folder:{out}", image_size=(8, 8), resize=method,
                              resize_defense=None if defense == "none" else defense)
        assert ds.source.get("resize", "lanczos") == method and ds.source.get("resize_defense", "none") == defense
        paths, _ = list_split(out / "train", ds.class_names)
        seen[(method, defense)] = ds.train_x[paths.index(file)][0, 5:7, 5:7].float()  # the 2x2 trigger's place
    assert seen[("bilinear", "none")].min() >= 254
    assert seen[("area", "none")].mean() < 160 and seen[("bilinear", "median")].mean() < 100


@pytest.fixture
def cli_env(monkeypatch):
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")


def test_train_evaluate_and_detect_poison_read_the_folder_as_trained_and_the_record(poisoned, tmp_path, capsys):
    out, _ = poisoned
    model = tmp_path / "m"
    with pytest.warns(UserWarning, match="resized to 8x8"):
        assert main(["train", "--dataset", f"folder:{out}", "--arch", "small-cnn", "--image-size", "8", "--resize",
                     "bilinear", "--epochs", "12", "--out", str(model), "--json"]) == 0
    meta = json.loads((model / "model.json").read_text())
    assert meta["data_source"]["resize"] == "bilinear" and "resize_defense" not in meta["data_source"]
    with pytest.warns(UserWarning, match="resized to 8x8"):  # later commands read the folder as it was trained on
        assert run_dataset(f"folder:{out}", model_dir=str(model)).source["resize"] == "bilinear"
    capsys.readouterr()
    with pytest.warns(UserWarning, match="resized to 8x8"):
        assert main(["evaluate", str(model), "--poison-record", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["backdoor"]["target"] == 0 and result["attack_success_rate"] > 0.8
    with pytest.warns(UserWarning, match="resized to 8x8"):
        assert main(["detect-poison", str(model), "--dataset", f"folder:{out}", "--clean-budget", "50",
                     "--poison-record", str(out / "poisoning.json"), "--no-progress", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["poisoned"] == json.loads((out / "poisoning.json").read_text())["poisoned_count"]
    assert found["recall"] is not None


def test_bad_input_is_one_line(big_digits, poisoned, tmp_path, capsys):
    out, _ = poisoned
    src = str(big_digits)
    cases = [
        (["poison-folder", src, "--scale-to", "20", "--out", str(tmp_path / "a")], "factor of at least 2"),
        (["poison-folder", src, "--scale-to", "8", "--resize", "area", "--out", str(tmp_path / "a")],
         "works against --resize nearest or bilinear"),
        (["poison-folder", src, "--scale-to", "8", "--target", "12", "--out", str(tmp_path / "a")],
         "target label 12 is out of range"),
        (["poison-folder", src, "--scale-to", "8", "--attack", "warp", "--out", str(tmp_path / "a")],
         "unknown folder attack 'warp'"),
        (["poison-folder", src, "--scale-to", "8", "--out", str(out)], "already exists"),
        (["poison-folder", str(big_digits / "train"), "--scale-to", "8", "--out", str(tmp_path / "a")],
         "no train/ folder"),
        (["train", "--dataset", f"folder:{out}", "--arch", "small-cnn", "--resize", "cubic", "--out",
          str(tmp_path / "m")], "unknown resize method 'cubic'"),
        (["train", "--dataset", f"folder:{out}", "--arch", "small-cnn", "--resize", "area", "--resize-defense",
          "median", "--out", str(tmp_path / "m")], "reads every pixel and needs no filter"),
        (["train", "--dataset", "digits", "--arch", "small-cnn", "--resize", "bilinear", "--out",
          str(tmp_path / "m")], "a resize method applies to folder:PATH and npz:PATH"),
        (["evaluate", str(tmp_path / "none"), "--poison-record", str(tmp_path)], "no such file"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "a").exists()
