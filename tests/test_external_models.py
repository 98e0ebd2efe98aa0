"""Models defined in the user's own code: `--arch file.py:NAME`, `backdoorlab import`, and the rule that a
checkpoint never makes backdoorlab import code the user did not name."""

import contextlib
import io
import json
import sys
import textwrap

import pytest
import safetensors.torch
import torch

from backdoorlab.cli import main
from backdoorlab.errors import BackdoorlabError
from backdoorlab.models import create_model, load_checkpoint
from backdoorlab.models.external import is_external, same_architecture

USER_CODE = textwrap.dedent('''
    import torch
    from torch import nn

    IMPORTED = []  # every import of this file appends to it (a checkpoint must not cause one)

    class Net(nn.Module):
        """No batch norm; a head for any number of classes."""
        def __init__(self, width=8, classes=10, channels=1):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                                          nn.AdaptiveAvgPool2d(2))
            self.head = nn.Linear(4 * width, classes)

        def forward(self, x):
            return self.head(self.features(x).flatten(1))

    def broken(**kwargs):
        raise ValueError("no such width")

    def not_a_module():
        return 3

    IMPORTED.append(1)
''')


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """A file of the user's own (net.py) in the current directory, and a state dict of its Net in w.pt."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.py").write_text(USER_CODE)
    torch.manual_seed(0)
    model = create_model("net.py:Net", num_classes=10, in_channels=1, input_size=(8, 8))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    return tmp_path


def _run(*args):
    """Run the command line as a user does (errors become one line and exit 2); (exit code, stdout + stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in args])
    return code, stdout.getvalue() + stderr.getvalue()


def _one_line_error(code, output):
    lines = [line for line in output.strip().splitlines() if line]
    assert code == 2, output
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def test_names_of_user_code_are_told_apart_from_registered_names():
    assert is_external("models/net.py:Net") and is_external("pkg.mod:build.make")
    assert not is_external("resnet20") and not is_external("file.py:") and not is_external("file.py:1x")
    assert same_architecture("/elsewhere/net.py:Net", "net.py:Net")  # the file may move
    assert not same_architecture("net.py:Other", "net.py:Net")
    assert not same_architecture("other.py:Net", "net.py:Net")
    assert not same_architecture("pkg.net:Net", "net.py:Net")


def test_user_model_keeps_its_own_keys_and_normalises_its_input(user_code):
    plain = create_model("net.py:Net", num_classes=10, in_channels=1, input_size=(8, 8))
    normed = create_model("net.py:Net", num_classes=10, in_channels=1, input_size=(8, 8), mean=[0.5], std=[0.25])
    assert list(normed.state_dict()) == list(plain.state_dict()) == ["features.0.weight", "features.0.bias",
                                                                       "head.weight", "head.bias"]
    normed.load_state_dict(plain.state_dict())
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(normed(x), plain((x - 0.5) / 0.25), atol=1e-6)
    assert normed.arch_args["kwargs"] == {} and plain.arch_args["mean"] is None


def test_import_evaluates_and_every_command_needs_the_code_named(user_code):
    code, out = _run("import", "w.pt", "--arch", "net.py:Net", "--dataset", "digits", "--mean", "0.3",
                     "--std", "0.4", "--out", "imported", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert 0 <= report["clean_accuracy"] <= 1 and report["n_test"] == 500
    meta = json.loads((user_code / "imported" / "model.json").read_text())
    assert meta["arch"] == "net.py:Net" and meta["arch_args"]["mean"] == [0.3]
    assert meta["provenance"]["imported"]["format"] == "torch"
    assert set(safetensors.torch.load_file(user_code / "imported" / "model.safetensors")) == {
        "features.0.weight", "features.0.bias", "head.weight", "head.bias"}

    def user_modules():
        return [n for n, m in list(sys.modules.items()) if str(getattr(m, "__file__", "")).endswith("net.py")]

    for name in user_modules():  # forget the import that `import` did
        del sys.modules[name]
    line = _one_line_error(*_run("evaluate", "imported"))
    assert "net.py:Net" in line and "--arch net.py:Net" in line
    assert user_modules() == [], "the sidecar made backdoorlab import the user's code"
    with pytest.raises(BackdoorlabError, match="outside backdoorlab"):
        load_checkpoint(user_code / "imported")
    _one_line_error(*_run("evaluate", "imported", "--arch", "other.py:Net"))

    code, out = _run("evaluate", "imported", "--arch", "net.py:Net", "--json")
    assert code == 0, out
    assert json.loads(out)["clean_accuracy"] == report["clean_accuracy"]
    model, _ = load_checkpoint(user_code / "imported", arch="net.py:Net")
    assert model.arch == "net.py:Net"


@pytest.mark.parametrize("args, expected", [
    (["--arch", "net.py:Nope"], "has no 'Nope'"),
    (["--arch", "missing.py:Net"], "does not exist"),
    (["--arch", "no_such_module_anywhere:Net"], "cannot import module"),
    (["--arch", "net.py:broken"], "raised ValueError: no such width"),
    (["--arch", "net.py:not_a_module"], "not a torch.nn.Module"),
    (["--arch", "net.py:Net", "--arch-args", '{"width": 4}'], "'features.0.weight' is [8, 1, 3, 3] in the file "
                                                            "but [4, 1, 3, 3] in the model"),
    (["--arch", "net.py:Net", "--mean", "0.5,0.5", "--std", "1,1"], "--mean has 2 values"),
    (["--arch", "net.py:Net", "--mean", "0.5"], "both --mean and --std"),
    (["--arch", "net.py:Net", "--arch-args", "{bad"], "--arch-args is not valid JSON"),
    (["--arch", "resnet20", "--mean", "0.5", "--std", "1"], "--mean/--std are for architectures of your own"),
])
def test_import_refuses_bad_input_in_one_line_and_writes_nothing(user_code, args, expected):
    line = _one_line_error(*_run("import", "w.pt", "--dataset", "digits", "--out", "out", *args))
    assert expected in line
    assert not (user_code / "out").exists()


def test_import_refuses_a_pickle_that_needs_code(user_code):
    torch.save(create_model("small-cnn", num_classes=10, in_channels=1, input_size=(8, 8)), user_code / "whole.pt")
    line = _one_line_error(*_run("import", "whole.pt", "--arch", "small-cnn", "--dataset", "digits", "--out", "o"))
    assert "needs full unpickling" in line and "weights_only=False" in line
    assert not (user_code / "o").exists()


def test_import_reads_safetensors_and_unwraps_common_wrappings(user_code):
    state = torch.load(user_code / "w.pt", weights_only=True)
    safetensors.torch.save_file(state, user_code / "w.safetensors")
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, user_code / "wrapped.pth")
    for name in ("w.safetensors", "wrapped.pth"):
        code, out = _run("import", name, "--arch", "net.py:Net", "--dataset", "digits", "--out", name + ".d", "--json")
        assert code == 0, out


def test_import_checks_the_number_of_classes_by_running_the_model(user_code):
    model = create_model("net.py:Net", num_classes=3, in_channels=1, input_size=(8, 8), kwargs={"classes": 3})
    torch.save(model.state_dict(), user_code / "w3.pt")
    line = _one_line_error(*_run("import", "w3.pt", "--arch", "net.py:Net", "--arch-args", '{"classes": 3}',
                                 "--dataset", "digits", "--out", "o"))
    assert "(2, 10)" in line and "10 classes" in line


def test_train_and_sanitize_a_model_of_user_code_without_batch_norm(user_code, digits):
    code, out = _run("train", "--dataset", "digits", "--arch", "net.py:Net", "--arch-args", '{"width": 12}',
                     "--attack", "badnets", "--epochs", "3", "--out", "suspect", "--no-progress", "--json")
    assert code == 0, out
    meta = json.loads((user_code / "suspect" / "model.json").read_text())
    assert meta["arch_args"]["kwargs"] == {"width": 12} and meta["arch_args"]["mean"] is not None
    _one_line_error(*_run("sanitize", "suspect", "--dataset", "digits", "--clean-budget", "200", "--out", "s"))
    assert not (user_code / "s").exists()
    code, out = _run("sanitize", "suspect", "--arch", "net.py:Net", "--dataset", "digits", "--clean-budget", "200",
                     "--out", "s", "--steps", "20", "--refine-steps", "0", "--no-verify", "--no-ensemble",
                     "--no-progress", "--json")
    assert code == 0, out
    sanitized = json.loads((user_code / "s" / "model.json").read_text())
    assert sanitized["arch"] == "net.py:Net"
    # the sanitized weights load straight into the user's own class
    sys.path.insert(0, str(user_code))
    try:
        import importlib
        net = importlib.import_module("net")
        own = net.Net(width=12)
        own.load_state_dict(safetensors.torch.load_file(user_code / "s" / "model.safetensors"))
    finally:
        sys.path.remove(str(user_code))
        sys.modules.pop("net", None)


def _three_class_npz(path, size=(12, 10), n_train=1200, n_test=60, seed=0):
    """A learnable 3-class RGB set of ``size`` images (each class a colour, plus noise) as an npz file."""
    import numpy as np
    rng = np.random.default_rng(seed)
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])

    def draw(n):
        y = rng.integers(0, 3, n)
        x = np.clip(colours[y][:, None, None, :] + rng.normal(0, 40, (n, *size, 3)), 0, 255).astype(np.uint8)
        return x, y

    (x_train, y_train), (x_test, y_test) = draw(n_train), draw(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def test_every_model_command_takes_an_imported_model_of_other_size_and_classes(user_code):
    """A user's 3-class set of 12x10 RGB images and their own Net without batch norm: every command that takes a
    model directory runs on the imported checkpoint (a few steps each)."""
    _three_class_npz(user_code / "three.npz")
    data, arch = "npz:three.npz", ["--arch", "net.py:Net"]
    own = create_model("net.py:Net", num_classes=3, in_channels=3, input_size=(12, 10),
                       kwargs={"classes": 3, "channels": 3})
    torch.save(own.state_dict(), user_code / "w3.pt")
    net_args = ["--arch-args", '{"classes": 3, "channels": 3}']
    code, out = _run("import", "w3.pt", *arch, *net_args, "--dataset", data, "--mean", "0.5,0.5,0.5",
                     "--std", "0.3,0.3,0.3", "--out", "m", "--json")
    assert code == 0, out
    for seed in ("1", "2"):
        code, out = _run("train", "--dataset", data, *arch, *net_args, "--attack", "badnets", "--epochs", "2",
                         "--seed", seed, "--out", "t" + seed, "--no-progress", "--json")
        assert code == 0, out
    line = _one_line_error(*_run("path-robustness", "m", "t1", *arch, "--out", "p"))
    assert "different 'mean'" in line  # imported with its own normalisation, trained with the data's
    quiet = ["--no-progress", "--json"]
    budget = ["--dataset", data, "--clean-budget", "100"]
    commands = [
        ["evaluate", "m", *arch, "--attack", "badnets", "--json"],
        ["scan", "m", *arch, *budget, "-o", "batch_size=16", "-o", "epochs=1", "--no-strip", *quiet],
        ["sanitize", "m", *arch, *budget, "--out", "s", "--steps", "4", "--batch-size", "16", "--refine-steps", "0",
         "--no-verify", *quiet],
        ["repair", "finetune", "m", *arch, *budget, "--out", "r", "-o", "steps=3", *quiet],
        ["attack", "weight-perturbation", "m", *arch, "--out", "a", "--steps", "3", "--attacker-images", "30",
         *quiet],
        ["robustness", "m", *arch, "--attack", "fgsm", "--eps", "0.1", "--n-images", "20", *quiet],
        ["path-robustness", "t1", "t2", *arch, "--out", "p", "--curve-steps", "3", "--grid", "3", "--n-images", "10",
         "--hessian-images", "2", "--hessian-iters", "1", *quiet],
    ]
    for command in commands:
        code, out = _run(*command)
        assert code == 0, (command[0], out)
    for command in commands:  # and each refuses the checkpoint when the code is not named
        unnamed = [a for a in command if a not in arch]
        code, out = _run(*unnamed)
        assert code == 2 and "--arch net.py:Net" in out, (command[0], out)
