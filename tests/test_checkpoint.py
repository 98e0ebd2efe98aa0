"""Checkpoint save/load and atomic writes."""

import json
import os

import pytest
import torch

from backdoorlab import io
from backdoorlab.errors import BackdoorlabError
from backdoorlab.models import create_model, load_checkpoint, save_checkpoint, update_checkpoint_meta
from backdoorlab.models.checkpoint import META_FILE, WEIGHTS_FILE


def _trained(arch="small-cnn", **kwargs):
    """A model whose BN running stats differ from their initial values."""
    torch.manual_seed(0)
    model = create_model(arch, **kwargs)
    c, (h, w) = model.arch_args["in_channels"], model.arch_args["input_size"]
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(4, c, h, w))
    return model.eval()


def _meta(model, dataset="cifar10", **extra):
    return {"arch": model.arch, "arch_args": model.arch_args, "dataset": dataset, **extra}


def _files(directory):
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def saved(tmp_path):
    model = _trained("small-cnn", num_classes=4, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    out = tmp_path / "ckpt" / "nested"
    meta = _meta(model, class_names=["a", "b", "c", "d"], seed=3, metrics={"clean_acc": 0.9})
    assert save_checkpoint(model, out, meta) == out
    return model, out


def test_round_trip(saved):
    model, out = saved
    assert _files(out) == [META_FILE, WEIGHTS_FILE]
    loaded, meta = load_checkpoint(out, arch="small-cnn", dataset="cifar10")
    assert not loaded.training
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    for key, value in model.state_dict().items():  # BN running stats, num_batches_tracked, Normalize buffers
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert loaded.normalize.mean.tolist() == pytest.approx([0.4, 0.5, 0.6])
    assert meta["class_names"] == ["a", "b", "c", "d"] and meta["seed"] == 3
    assert meta["metrics"] == {"clean_acc": 0.9}
    assert meta["format"] == "backdoorlab-checkpoint" and meta["format_version"] == 1
    assert meta["created"].endswith("+00:00") and "backdoorlab_version" in meta
    for path in (out / META_FILE, out / WEIGHTS_FILE, str(out)):
        assert load_checkpoint(path)[1] == meta


def test_shared_and_noncontiguous_tensors(tmp_path):
    model = create_model("resnet20")
    model.fc.weight.data = model.fc.weight.data.t().contiguous().t()  # non-contiguous
    meta = _meta(model)
    save_checkpoint(model, tmp_path, meta)
    loaded, _ = load_checkpoint(tmp_path)
    assert torch.equal(loaded.fc.weight, model.fc.weight)


def test_arch_mismatch(saved):
    _, out = saved
    with pytest.raises(BackdoorlabError, match=r"is for architecture 'small-cnn', not 'resnet20'"):
        load_checkpoint(out, arch="resnet20")


def test_dataset_mismatch(saved):
    _, out = saved
    with pytest.raises(BackdoorlabError, match=r"was trained on 'cifar10', not 'mnist'"):
        load_checkpoint(out, dataset="mnist")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_safetensors(saved, damage):
    _, out = saved
    path = out / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(1000), "empty": b""}[damage])
    with pytest.raises(BackdoorlabError, match="corrupt") as info:
        load_checkpoint(out)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_weights_from_another_save_detected(saved, tmp_path):
    _, out = saved
    other = tmp_path / "other"
    save_checkpoint(_trained("small-cnn", num_classes=4), other, {"dataset": "cifar10"})
    (out / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    with pytest.raises(BackdoorlabError, match="sha256"):
        load_checkpoint(out)


def test_missing_files(saved, tmp_path):
    _, out = saved
    with pytest.raises(BackdoorlabError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (out / WEIGHTS_FILE).unlink()
    with pytest.raises(BackdoorlabError, match=f"has no {WEIGHTS_FILE}"):
        load_checkpoint(out)
    (out / META_FILE).unlink()
    with pytest.raises(BackdoorlabError, match=f"has no {META_FILE}"):
        load_checkpoint(out)


@pytest.mark.parametrize(
    "text,match",
    [("{not json", "not readable JSON"), ("[1, 2]", "not a backdoorlab checkpoint"),
     ('{"format": "backdoorlab-checkpoint", "format_version": 1, "arch": "small-cnn"}', "lacks 'arch_args', 'dataset'"),
     ('{"format": "backdoorlab-checkpoint", "format_version": 9}', "format_version 9")],
)  # fmt: skip
def test_bad_json(saved, text, match):
    _, out = saved
    (out / META_FILE).write_text(text)
    with pytest.raises(BackdoorlabError, match=match):
        load_checkpoint(out)


def test_state_dict_of_another_architecture(saved, tmp_path):
    _, out = saved
    # resnet20 weights under a sidecar that claims small-cnn (hash dropped so the key check is what fires)
    other = tmp_path / "r20"
    save_checkpoint(create_model("resnet20", num_classes=4), other, {"dataset": "cifar10"})
    (out / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    meta = json.loads((out / META_FILE).read_text())
    del meta["weights_sha256"]
    (out / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(BackdoorlabError) as info:
        load_checkpoint(out)
    message = str(info.value)
    assert "does not fit architecture 'small-cnn'" in message and "\n" not in message
    assert "missing 'body.0.0.weight'" not in message  # present in both, but shapes differ
    assert "shape mismatch 'body.0.0.weight'" in message and "unexpected" in message and "more)" in message


def test_save_rejects_model_not_matching_meta(tmp_path):
    model = create_model("resnet20")
    with pytest.raises(BackdoorlabError, match="does not fit architecture 'small-cnn'"):
        save_checkpoint(model, tmp_path / "x", {"arch": "small-cnn", "arch_args": model.arch_args, "dataset": "d"})
    with pytest.raises(BackdoorlabError, match="lacks 'dataset'"):
        save_checkpoint(model, tmp_path / "x", {})
    with pytest.raises(BackdoorlabError, match="JSON-serialisable"):
        save_checkpoint(model, tmp_path / "x", _meta(model, extra=object()))
    assert not (tmp_path / "x").exists()


def test_update_meta(saved):
    _, out = saved
    meta = update_checkpoint_meta(out / META_FILE, {"metrics": {"asr": 0.1}, "note": "defended"})
    assert load_checkpoint(out)[1] == meta and meta["note"] == "defended" and meta["seed"] == 3
    with pytest.raises(BackdoorlabError, match="'arch'"):
        update_checkpoint_meta(out, {"arch": "resnet20"})
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("fail_call", [1, 2])
def test_interrupted_save_leaves_old_checkpoint(saved, monkeypatch, fail_call):
    """A failing rename (1: the weights, 2: the JSON) leaves no temp files; on 1 the old checkpoint is intact."""
    old_model, out = saved
    before = {name: (out / name).read_bytes() for name in _files(out)}
    calls = []
    real_replace = os.replace

    def flaky_replace(src, dst):
        calls.append(dst)
        if len(calls) == fail_call:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    new_model = _trained("small-cnn", num_classes=4)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(new_model, out, _meta(new_model))
    monkeypatch.undo()
    assert [str(d).rsplit("/", 1)[-1] for d in calls][:1] == [WEIGHTS_FILE]  # weights are renamed first
    assert _files(out) == [META_FILE, WEIGHTS_FILE]  # no temp files left
    if fail_call == 1:
        assert {name: (out / name).read_bytes() for name in _files(out)} == before
        loaded, _ = load_checkpoint(out)
        x = torch.rand(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(loaded(x), old_model(x))
    else:  # new weights but old JSON: the hash catches the mismatch instead of loading the wrong pair
        with pytest.raises(BackdoorlabError, match="sha256"):
            load_checkpoint(out)


def test_interrupted_weights_write(saved, monkeypatch):
    _, out = saved
    before = {name: (out / name).read_bytes() for name in _files(out)}

    def broken_write(path, data):
        with open(path, "wb") as f:
            f.write(data[:10])
        raise KeyboardInterrupt

    monkeypatch.setattr("backdoorlab.models.checkpoint.write_synced", broken_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(create_model("small-cnn", num_classes=4), out, {"dataset": "cifar10"})
    assert {name: (out / name).read_bytes() for name in _files(out)} == before


def test_atomic_helpers(tmp_path, monkeypatch):
    io.atomic_write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'
    io.atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    io.atomic_write_bytes(tmp_path / "t.txt", b"new")
    assert (tmp_path / "t.txt").read_bytes() == b"new"

    with io.atomic_path(tmp_path / "p.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"x")
    assert (tmp_path / "p.bin").read_bytes() == b"x"

    with pytest.raises(RuntimeError), io.atomic_path(tmp_path / "p.bin") as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError
    assert (tmp_path / "p.bin").read_bytes() == b"x"

    with pytest.raises(TypeError):
        io.atomic_write_json(tmp_path / "a.json", {"x": object()})
    assert json.loads((tmp_path / "a.json").read_text()) == {"b": 1, "a": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "p.bin", "t.txt"]
