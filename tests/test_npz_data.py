"""npz:PATH data sets: a user's arrays in one .npz file (x_train, y_train, x_test, y_test), read without
unpickling: layouts (NHWC, NCHW, NHW), class names, resizing, the canonical name and source record, and each
malformed file as a one-line error naming the file and the key."""

import numpy as np
import pytest
import torch

from backdoorlab.budget import clean_budget
from backdoorlab.data import default_arch, default_holdout, load_dataset
from backdoorlab.errors import BackdoorlabError


def arrays(n_train=30, n_test=6, shape=(5, 4, 3), classes=3, seed=0):
    """uint8 NHWC images (``shape`` = H, W, C) with labels 0..classes-1 in turn."""
    rng = np.random.default_rng(seed)
    return dict(x_train=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8), y_train=np.arange(n_train) % classes,
                x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8), y_test=np.arange(n_test) % classes)


def save(tmp_path, name="set.npz", **data):
    path = tmp_path / name
    np.savez(path, **data)
    return path


def test_nhwc_and_nchw_give_the_same_data_set(tmp_path):
    a = arrays()
    nhwc = load_dataset(f"npz:{save(tmp_path, 'a.npz', **a)}")
    nchw = {**a, "x_train": a["x_train"].transpose(0, 3, 1, 2), "x_test": a["x_test"].transpose(0, 3, 1, 2)}
    other = load_dataset(f"npz:{save(tmp_path, 'b.npz', **nchw)}")
    assert nhwc.train_x.shape == (30, 3, 5, 4) and nhwc.train_x.dtype == torch.uint8
    assert torch.equal(nhwc.train_x, other.train_x) and torch.equal(nhwc.test_x, other.test_x)
    assert np.array_equal(nhwc.train_x.numpy(), a["x_train"].transpose(0, 3, 1, 2))
    assert nhwc.train_y.dtype == torch.int64 and nhwc.train_y.tolist() == a["y_train"].tolist()
    assert nhwc.class_names == ["0", "1", "2"]
    assert nhwc.name == f"npz:{(tmp_path / 'a.npz').resolve()}"
    assert nhwc.source == {"kind": "npz", "path": str((tmp_path / "a.npz").resolve()), "split": None,
                           "images": {"train": 30, "test": 6}, "resized": 0, "image_size": [5, 4], "channels": 3}
    assert default_arch(nhwc.name) == "resnet20" and default_holdout(nhwc.name) == 3
    assert len(clean_budget(nhwc, 3)) == 3


def test_grey_images_as_nhw_or_one_channel_and_class_names(tmp_path, monkeypatch):
    a = arrays(shape=(6, 6, 1), classes=2)
    names = np.array(["no", "yes"])
    one = load_dataset(f"npz:{save(tmp_path, 'g.npz', **a, class_names=names)}")
    assert one.in_channels == 1 and one.class_names == ["no", "yes"] and default_arch(one.name) == "small-cnn"
    nhw = {**a, "x_train": a["x_train"][..., 0], "x_test": a["x_test"][..., 0]}
    flat = load_dataset(f"npz:{save(tmp_path, 'h.npz', **nhw)}")
    assert torch.equal(flat.train_x, one.train_x)
    monkeypatch.chdir(tmp_path)
    assert load_dataset("npz:g.npz").name == one.name  # relative paths name the same data set


def test_image_size_resizes_train_and_test(tmp_path):
    a = {**arrays(), "x_test": arrays(shape=(7, 7, 3))["x_test"]}
    path = save(tmp_path, **a)
    with pytest.raises(BackdoorlabError, match=r"'x_test' images are 7x7 but 'x_train' images are 5x4 "
                                               r"\(--image-size resizes both\)"):
        load_dataset(f"npz:{path}")
    with pytest.warns(UserWarning, match=r"36 of 36 images resized to 8x8"):
        ds = load_dataset(f"npz:{path}", image_size=(8, 8))
    assert ds.train_x.shape == (30, 3, 8, 8) and ds.test_x.shape == (6, 3, 8, 8) and ds.source["resized"] == 36


def one_line_error(path, match):
    with pytest.raises(BackdoorlabError) as info:
        load_dataset(f"npz:{path}")
    assert "\n" not in str(info.value) and str(path.resolve()) in str(info.value)
    assert info.match(match)


def test_malformed_files_are_one_line_errors_naming_the_key(tmp_path):
    a = arrays()
    one_line_error(tmp_path / "none.npz", r"no such file")
    one_line_error(save(tmp_path, "m.npz", **{k: v for k, v in a.items() if k != "y_test"}),
                   r"no 'y_test' array \(an npz data set holds x_train, y_train, x_test, y_test; it has ")
    one_line_error(save(tmp_path, "f.npz", **{**a, "x_train": a["x_train"].astype(np.float32)}),
                   r"'x_train' must be uint8 \(pixel values 0..255\), got float32")
    one_line_error(save(tmp_path, "c.npz", **{**a, "x_test": np.zeros((6, 5, 4, 2), np.uint8)}),
                   r"'x_test' has shape \(6, 5, 4, 2\); expected \(N, H, W, C\) or \(N, C, H, W\) with C = 1 or 3")
    one_line_error(save(tmp_path, "d.npz", **{**a, "x_train": np.zeros((30, 4), np.uint8)}), r"'x_train' has shape")
    one_line_error(save(tmp_path, "l.npz", **{**a, "y_train": a["y_train"][:-1]}),
                   r"'y_train' has 29 labels but 'x_train' has 30 images")
    one_line_error(save(tmp_path, "n.npz", **{**a, "y_test": -a["y_test"]}), r"'y_test' holds label -2; labels are")
    one_line_error(save(tmp_path, "fl.npz", **{**a, "y_test": a["y_test"] * 1.0}), r"'y_test' must be a 1-D array "
                                                                                      r"of integer labels")
    one_line_error(save(tmp_path, "r.npz", **a, class_names=np.array(["a", "b"])),
                   r"label 2 is out of range: 'class_names' names 2 classes \(labels 0..1\)")
    one_line_error(save(tmp_path, "ch.npz", **{**a, "x_test": a["x_test"][..., :1]}),
                   r"'x_train' has 3 channel\(s\) but 'x_test' has 1")
    np.savez(tmp_path / "obj.npz", **a, class_names=np.array(["a", None, "c"], dtype=object))
    one_line_error(tmp_path / "obj.npz", r"not a readable npz file \(.*allow_pickle")  # never unpickled
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    one_line_error(tmp_path / "junk.npz", r"not a readable npz file")
    one_line_error(save(tmp_path, "small.npz", **arrays(n_train=10)), r"10 training images are too few")
