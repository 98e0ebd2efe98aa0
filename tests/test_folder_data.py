"""folder:PATH data sets: a user's images, one sub-folder per class, read into memory (tiny folders written here).

What is checked: the layout (train/ and test/, or class folders alone split by a seeded, recorded, stratified
split), label order, grey / colour / mixed modes, one image size (asked for, or the most common), the canonical
name, the traits derived from the content (held-out pool, architecture, augmentation), the clean budget, each
user error as one line, and `backdoorlab train` on a folder end to end."""

import json
import warnings

import numpy as np
import pytest
import torch

from backdoorlab.budget import clean_budget, holdout_split, training_part
from backdoorlab.cli import main
from backdoorlab.data import default_arch, default_holdout, load_dataset, sanitizer_augmentation, training_recipe
from backdoorlab.data.folder import SPLIT_SEED, TEST_FRACTION
from backdoorlab.data.image_files import class_folders, list_split
from backdoorlab.data.image_size import parse_image_size
from backdoorlab.errors import BackdoorlabError

PIL = pytest.importorskip("PIL.Image")


def image(value: int, size=(6, 5), mode="RGB") -> "PIL.Image":
    """A ``mode`` image of ``size`` (H, W) whose pixels encode ``value`` (distinct images, checkable after loading)."""
    h, w = size
    rng = np.random.default_rng(value)
    if mode == "L":
        return PIL.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
    rgb = PIL.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    return rgb if mode == "RGB" else rgb.convert(mode)


def write(root, classes: dict, mode="RGB", size=(6, 5), start=0, ext="png"):
    """``root/CLASS/NNN.ext`` with ``classes[CLASS]`` images each; returns the next unused value."""
    value = start
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image(value, size, mode).save(root / name / f"{i:03d}.{ext}")
            value += 1
    return value


@pytest.fixture
def split_folder(tmp_path):
    """train/ and test/ with classes written out of order: cat (10 images), ant (12), bee (8); test 2 each."""
    root = tmp_path / "imgs"
    nxt = write(root / "train", {"cat": 10, "ant": 12, "bee": 8})
    write(root / "test", {"cat": 2, "ant": 2, "bee": 2}, start=nxt)
    return root


def load(name, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no resize warning where every image has one size
        return load_dataset(name, **kw)


def test_train_and_test_folders_load_in_sorted_class_order_with_their_pixels(split_folder):
    ds = load(f"folder:{split_folder}")
    assert ds.class_names == ["ant", "bee", "cat"]
    assert ds.train_x.shape == (30, 3, 6, 5) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (6, 3, 6, 5)
    assert ds.train_y.tolist() == [0] * 12 + [1] * 8 + [2] * 10  # class by class, in sorted order
    assert ds.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    # ant's first file is the 11th image written (cat came first): pixels as written, files in name order
    want = np.asarray(image(10)).transpose(2, 0, 1)
    assert np.array_equal(ds.train_x[0].numpy(), want)
    assert np.array_equal(ds.train_x[12 + 8].numpy(), np.asarray(image(0)).transpose(2, 0, 1))  # cat's 000.png
    assert ds.name == f"folder:{split_folder.resolve()}"
    assert ds.source == {"kind": "folder", "path": str(split_folder.resolve()), "split": None,
                         "images": {"train": 30, "test": 6}, "resized": 0, "image_size": [6, 5], "channels": 3}
    assert ds.train_x.is_contiguous() and len(ds.mean) == 3


def test_labels_follow_the_sorted_folder_names_and_other_files_are_ignored(tmp_path):
    root = tmp_path / "f"
    write(root, {"b": 10, "a": 10, "C": 10})
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / ".hidden.png").write_bytes(b"not read")
    (root / ".cache").mkdir()  # a hidden folder is not a class
    image(99).save(root / "b" / "UPPER.PNG")  # extensions in any case
    paths, labels = list_split(root, class_folders(root))
    assert class_folders(root) == ["C", "a", "b"]  # code point order: upper case first
    assert [p.name for p in paths if p.parent.name == "b"][-1] == "UPPER.PNG"
    ds = load(f"folder:{root}")
    assert ds.class_names == ["C", "a", "b"] and len(ds.train_y) + len(ds.test_y) == 31


def test_grey_images_stay_one_channel(tmp_path):
    write(tmp_path / "g", {"x": 15, "y": 15}, mode="L")
    ds = load(f"folder:{tmp_path / 'g'}")
    assert ds.in_channels == 1 and ds.train_x.shape[1:] == (1, 6, 5)
    assert default_arch(ds.name) == "small-cnn" and sanitizer_augmentation(ds.name) == "affine"


def test_one_colour_image_makes_every_image_rgb(tmp_path):
    root = tmp_path / "m"
    write(root, {"x": 15, "y": 14}, mode="L")
    image(500, mode="P").save(root / "y" / "palette.png")
    image(501, mode="RGBA").save(root / "x" / "alpha.png")
    ds = load(f"folder:{root}")
    assert ds.in_channels == 3
    assert default_arch(ds.name) == "resnet20" and sanitizer_augmentation(ds.name) == "crop-flip-jpeg"
    everything = torch.cat([ds.train_x, ds.test_x])
    grey = (everything[:, 0] == everything[:, 1]).all(dim=(1, 2)) & (everything[:, 1] == everything[:, 2]).all(
        dim=(1, 2))
    assert int(grey.sum()) == 29  # the grey images, repeated to three equal channels; the other two are colour


def test_the_most_common_size_wins_and_the_others_are_resized_with_a_warning(tmp_path):
    root = tmp_path / "s"
    write(root, {"x": 14, "y": 14}, size=(6, 5))
    write(root, {"x": 2}, size=(9, 9), start=100)  # overwrites x/000-001 with 9x9 images
    with pytest.warns(UserWarning, match=r"2 of 28 images resized to 6x5 \(their most common size"):
        ds = load_dataset(f"folder:{root}")
    assert ds.image_size == (6, 5) and ds.source["resized"] == 2


def test_image_size_resizes_every_image(tmp_path):
    write(tmp_path / "r", {"x": 12, "y": 12}, mode="L", size=(6, 5))
    with pytest.warns(UserWarning, match=r"24 of 24 images resized to 8x4 \(the size asked for\)"):
        ds = load_dataset(f"folder:{tmp_path / 'r'}", image_size=(8, 4))
    assert ds.train_x.shape[1:] == (1, 8, 4) and ds.source["image_size"] == [8, 4]
    # a uniform image stays uniform: the filter is a weighted mean, no ringing on flat areas
    flat = tmp_path / "flat"
    for c in ("x", "y"):
        (flat / c).mkdir(parents=True)
        for i in range(12):
            PIL.fromarray(np.full((6, 5), 77, dtype=np.uint8), "L").save(flat / c / f"{i}.png")
    with pytest.warns(UserWarning):
        assert (load_dataset(f"folder:{flat}", image_size=(3, 3)).train_x == 77).all()
    assert parse_image_size("32") == (32, 32) and parse_image_size("24,32") == (24, 32)
    assert parse_image_size(None) is None
    for bad in ("0", "a,b", "1,2,3", "-4", "3.5"):
        with pytest.raises(BackdoorlabError, match=r"^image size must be H or H,W .*got"):
            parse_image_size(bad)


def test_a_folder_without_train_and_test_is_split_by_a_seeded_stratified_split(tmp_path):
    root = tmp_path / "flat"
    write(root, {"a": 20, "b": 11, "c": 2})
    first, again = load(f"folder:{root}"), load(f"folder:{root}")
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_x, again.test_x)  # deterministic
    assert first.source["split"] == {"seed": SPLIT_SEED, "test_fraction": TEST_FRACTION, "stratified": True}
    assert first.source["images"] == {"train": 26, "test": 7}
    assert first.test_y.tolist() == [0] * 4 + [1] * 2 + [2]  # round(0.2 n) of each class, at least one
    everything = torch.cat([first.train_x, first.test_x]).flatten(1)
    assert len(torch.unique(everything, dim=0)) == 33  # disjoint, and every image is in one of them


def test_the_name_is_canonical_whatever_path_was_typed(split_folder, monkeypatch):
    monkeypatch.chdir(split_folder.parent)
    relative = load("folder:imgs")
    monkeypatch.setenv("HOME", str(split_folder.parent))
    home = load("folder:~/imgs/")
    assert relative.name == home.name == f"folder:{split_folder.resolve()}"


def test_held_out_pool_and_clean_budget_come_from_the_folder(tmp_path):
    write(tmp_path / "h", {"x": 25, "y": 25})  # split: 40 train, so a pool of 4 (a tenth)
    ds = load(f"folder:{tmp_path / 'h'}")
    assert len(ds.train_y) == 40 and default_holdout(ds.name) == 4
    assert training_recipe(ds.name, "resnet20") == dict(epochs=10, lr=0.05, batch_size=128)
    x, _ = training_part(ds)
    assert len(x) == 36
    budget = clean_budget(ds, 4, seed=1)
    assert set(budget.indices.tolist()) == set(holdout_split(40, 4)[1].tolist())
    with pytest.raises(BackdoorlabError, match="larger than the held-out pool of 4 images"):
        clean_budget(ds, 5)


def test_a_big_folder_keeps_the_built_in_pool_of_5000():
    from backdoorlab.data.user_traits import user_holdout
    assert user_holdout(50_000) == user_holdout(60_000) == 5000 and user_holdout(20_000) == 2000
    with pytest.raises(BackdoorlabError, match=r"^19 training images are too few .* at least 20"):
        user_holdout(19)


def one_line_error(name, match, **kw):
    with pytest.raises(BackdoorlabError) as info:
        load_dataset(name, **kw)
    assert "\n" not in str(info.value)
    assert info.match(match)


def test_an_image_that_does_not_decode_is_named(split_folder):
    bad = split_folder / "test" / "bee" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    one_line_error(f"folder:{split_folder}", rf"^{bad}: not a readable image \(")
    bad.unlink()
    truncated = split_folder / "train" / "ant" / "000.png"
    truncated.write_bytes(truncated.read_bytes()[:60])
    one_line_error(f"folder:{split_folder}", rf"^{truncated}: not a readable image \(")


def test_an_empty_class_is_named(split_folder):
    (split_folder / "test" / "dog").mkdir()
    (split_folder / "train" / "dog").mkdir()
    (split_folder / "train" / "dog" / "readme.txt").write_text("no images here")
    one_line_error(f"folder:{split_folder}", r"/train/dog: class 'dog' has no images \(expected files ending in")


def test_train_and_test_class_lists_must_be_equal(split_folder):
    (split_folder / "test" / "bee").rename(split_folder / "test" / "bees")
    one_line_error(f"folder:{split_folder}", r": class 'bee' is in train/ but not in test/")
    (split_folder / "train" / "bee").rename(split_folder / "train" / "bees")
    (split_folder / "test" / "zebra").mkdir()
    one_line_error(f"folder:{split_folder}", r": class 'zebra' is in test/ but not in train/")


def test_missing_folders_and_layouts_are_one_line_errors(tmp_path):
    one_line_error(f"folder:{tmp_path / 'nowhere'}", r"/nowhere: no such folder")
    (tmp_path / "file.png").write_bytes(b"")
    one_line_error(f"folder:{tmp_path / 'file.png'}", r"/file.png: not a folder")
    (tmp_path / "empty").mkdir()
    one_line_error(f"folder:{tmp_path / 'empty'}", r"/empty: no class folders")
    write(tmp_path / "half" / "train", {"a": 20})
    one_line_error(f"folder:{tmp_path / 'half'}", r"/half: has train/ but no test/")
    write(tmp_path / "lonely", {"a": 20, "b": 1})
    one_line_error(f"folder:{tmp_path / 'lonely'}", r"class 'b' has one image; a train/test split needs at least two")
    write(tmp_path / "few", {"a": 10, "b": 10})
    one_line_error(f"folder:{tmp_path / 'few'}", r"/few: 16 training images are too few for a held-out clean pool")
    one_line_error("folder:", r"^data set 'folder:' needs a path: folder:PATH")
    one_line_error("folder", r"^data set 'folder' needs a path: folder:PATH")
    one_line_error("mnist", r"^an image size applies to folder:PATH and npz:PATH data sets only", image_size=(4, 4))


def test_train_on_a_folder_records_its_source_and_later_commands_read_it_at_the_model_size(tmp_path, monkeypatch,
                                                                                            capsys):
    write(tmp_path / "pics" / "train", {"ring": 14, "dot": 14}, mode="L", size=(6, 5))
    write(tmp_path / "pics" / "test", {"ring": 3, "dot": 3}, mode="L", size=(6, 5), start=100)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning):  # resized to the size asked for
        assert main(["train", "--dataset", "folder:pics", "--arch", "small-cnn", "--image-size", "8", "--epochs", "1",
                     "--batch-size", "8", "--out", "model", "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 <= out["clean_accuracy"] <= 1
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["dataset"] == f"folder:{(tmp_path / 'pics').resolve()}"
    assert meta["data_source"]["kind"] == "folder" and meta["data_source"]["image_size"] == [8, 8]
    assert meta["data_source"]["images"] == {"train": 28, "test": 6}
    assert meta["input_shape"] == [1, 8, 8] and meta["holdout"]["size"] == 2
    assert meta["training"]["train_images"] == 26
    # evaluate, from another directory and with another spelling of the path, reads the folder at 8x8 unasked
    monkeypatch.chdir(tmp_path / "pics")
    with pytest.warns(UserWarning, match="resized to 8x8"):
        assert main(["evaluate", "../model", "--dataset", "folder:../pics/", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clean_accuracy"] == out["clean_accuracy"]
    with pytest.warns(UserWarning, match="resized to 8x8"):  # the evasion commands too
        assert main(["robustness", "../model", "--attack", "fgsm", "--eps", "0.1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 6
    assert main(["train", "--dataset", "folder:.", "--arch", "small-cnn", "--image-size", "0", "--out", "x"]) == 2
    assert "error: image size must be H or H,W" in capsys.readouterr().err
