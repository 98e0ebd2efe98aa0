"""The compute device: resolving --device (CUDA mocked), the CLI's refusal of a missing device, and placement on
the ``meta`` device, which stands in for a GPU on a machine without one: a library function given a model on
``meta`` must move every tensor that meets the model there. Meta tensors have no data, so each call ends at its
first data-dependent step (``.item()``, a copy to the host); what must never happen is a device mismatch."""

import pytest
import torch

from backdoorlab.device import (check_amp, mixed_precision, model_device, resolve_device, to_device,
                                autocast_settings)
from backdoorlab.errors import BackdoorlabError

META = torch.device("meta")
MISMATCH = ("expected device", "same device", "found at least two devices", "device type")


def _no_mismatch(fn):
    """Call ``fn``; any error it raises must not be a device mismatch (meta tensors fail later, on data)."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the point is to look at whatever it raised
        assert not any(p in str(e) for p in MISMATCH), f"device mismatch: {type(e).__name__}: {e}"


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_cudas(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_picks_cuda_when_present(two_cudas):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device(None) == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


def test_auto_is_cpu_without_cuda_or_mps(no_cuda, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(META) is META  # a torch.device passes through


@pytest.mark.parametrize("spec, words", [("cuda", "CUDA is not available"), ("cuda:0", "CUDA is not available"),
                                         ("tpu", "unknown --device"), ("cuda:x", "unknown --device")])
def test_bad_device_is_one_line(no_cuda, spec, words):
    with pytest.raises(BackdoorlabError, match=words) as e:
        resolve_device(spec)
    assert "\n" not in str(e.value)


def test_cuda_index_beyond_the_count(two_cudas):
    with pytest.raises(BackdoorlabError, match="2 CUDA device"):
        resolve_device("cuda:2")


def test_mps_missing(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(BackdoorlabError, match="MPS"):
        resolve_device("mps")


def test_amp_needs_an_accelerator():
    with pytest.raises(BackdoorlabError, match="--amp needs"):
        check_amp(torch.device("cpu"), True)
    check_amp(torch.device("cpu"), False)
    with mixed_precision(True):  # on CPU the loop never autocasts, even inside the block
        assert autocast_settings(torch.device("cpu")) is None


def test_amp_settings_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert autocast_settings(torch.device("cuda")) is None  # not requested
    with mixed_precision(True):
        assert autocast_settings(torch.device("cuda")) == (torch.bfloat16, False)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
        assert autocast_settings(torch.device("cuda")) == (torch.float16, True)


def test_cpu_moves_nothing():
    x = torch.ones(2, 3)
    assert to_device(x, torch.device("cpu")) is x
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")
    assert model_device(torch.nn.Linear(2, 2).to(META)) == META


@pytest.mark.parametrize("command", [
    ["train", "--dataset", "digits", "--arch", "small-cnn", "--epochs", "1"],
    ["sanitize", "MODEL", "--dataset", "digits", "--clean-budget", "200"],
    ["scan", "MODEL", "--dataset", "digits"],
    ["adv-train", "--dataset", "digits", "--arch", "small-cnn"],
])
def test_cli_refuses_missing_cuda(no_cuda, tmp_path, capsys, command):
    from backdoorlab.cli import main

    out = tmp_path / "out"
    args = [str(tmp_path / "model") if a == "MODEL" else a for a in command]
    args += ["--device", "cuda"] + (["--out", str(out)] if command[0] != "scan" else ["--report", str(out)])
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --device cuda: CUDA is not available"), err
    assert not out.exists()


def test_cli_refuses_amp_on_cpu(tmp_path, capsys):
    from backdoorlab.cli import main

    out = tmp_path / "out"
    assert main(["train", "--dataset", "digits", "--arch", "small-cnn", "--device", "cpu", "--amp",
                 "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: --amp needs a CUDA or MPS device")
    assert not out.exists()


# ------------------------------------------------------------------------------------ placement on `meta`


@pytest.fixture
def meta_model(digits):
    from backdoorlab.models import new_model
    return new_model("small-cnn", digits, 0).to(META)


@pytest.fixture
def images(digits):
    return digits.train_x[:64], digits.train_y[:64]


def test_meta_predict_and_train(meta_model, images):
    from backdoorlab.curves import reestimate_bn
    from backdoorlab.metrics import predict_logits
    from backdoorlab.train import TrainConfig, train_model

    x, y = images
    _no_mismatch(lambda: predict_logits(meta_model, x))
    _no_mismatch(lambda: train_model(meta_model, x, y, TrainConfig(epochs=1, batch_size=32, augment="none"),
                                     progress=False))
    _no_mismatch(lambda: reestimate_bn(meta_model, x))


def test_meta_curve(digits, images):
    from backdoorlab.curves import Curve
    from backdoorlab.models import new_model
    from backdoorlab.train import TrainConfig, fit

    x, y = images
    a, b, c = (new_model("small-cnn", digits, s).to(META) for s in (0, 1, 2))
    curve = Curve(a, b, init="random", init_model=c)

    def loss_fn(xb, yb):
        logits = curve(xb, 0.5)
        return torch.nn.functional.cross_entropy(logits, yb), logits

    _no_mismatch(lambda: fit(list(curve.control), loss_fn, x, y, TrainConfig(steps=1, batch_size=32),
                             progress=False))
    _no_mismatch(lambda: curve.model_at(0.3, bn_data=x))


def test_meta_repairers_and_detectors(meta_model, images, digits):
    from backdoorlab.budget import CleanBudget
    from backdoorlab.defenses.anp import ANPConfig, learn_masks
    from backdoorlab.defenses.finetune import finetune
    from backdoorlab.defenses.pam import PathAwareWeights
    from backdoorlab.defenses.qra import QRAConfig, train_reactivation
    from backdoorlab.tensors import to_float
    from backdoorlab.defenses.ibau import IBAUConfig, ibau
    from backdoorlab.defenses.neural_cleanse import NeuralCleanseConfig, reverse_trigger
    from backdoorlab.defenses.noise import add_weight_noise
    from backdoorlab.defenses.pruning import last_feature_layer, mean_channel_activation
    from backdoorlab.detectors.poison_detection import penultimate_features
    from backdoorlab.detectors.strip import strip_entropy
    from backdoorlab.symmetry import find_unit_groups

    x, y = images
    budget = CleanBudget(x, y, torch.arange(len(y)))
    _no_mismatch(lambda: reverse_trigger(meta_model, x, 1, NeuralCleanseConfig(epochs=1, batch_size=32)))
    _no_mismatch(lambda: finetune(meta_model, x, y, TrainConfig(epochs=0, steps=1, batch_size=32), progress=False,
                                  weights_at=PathAwareWeights(meta_model, 0.5)))
    _no_mismatch(lambda: train_reactivation(meta_model, meta_model, meta_model, to_float(x), y,
                                            QRAConfig(epochs=1, batch_size=32, hidden=8)))
    _no_mismatch(lambda: ibau(meta_model, budget, IBAUConfig(rounds=1, batch_size=32), progress=False))
    _no_mismatch(lambda: learn_masks(meta_model, budget, ANPConfig(iterations=1, batch_size=32), progress=False))
    _no_mismatch(lambda: add_weight_noise(meta_model, 0.1, torch.Generator().manual_seed(0)))
    _no_mismatch(lambda: last_feature_layer(meta_model, x))
    _no_mismatch(lambda: mean_channel_activation(meta_model, meta_model.body[0], x))
    _no_mismatch(lambda: strip_entropy(meta_model, x[:4], x))
    _no_mismatch(lambda: penultimate_features(meta_model, x))
    _no_mismatch(lambda: find_unit_groups(meta_model, x[:8]))


def test_meta_evasion_and_weight_attacks(meta_model, images):
    from backdoorlab.attacks import make_poisoning_attack
    from backdoorlab.attacks.weights import WeightPerturbationConfig, adversarial_weight_perturbation
    from backdoorlab.evasion import PGD, robust_accuracy
    from backdoorlab.evasion.hessian import input_hessian_top_eigenvalue
    from backdoorlab.evasion.patch import AdversarialPatch

    x, y = images
    _no_mismatch(lambda: PGD(meta_model, 0.1, steps=2)(x, y))
    _no_mismatch(lambda: PGD(meta_model, 0.5, steps=1, norm="l2")(x, y))
    _no_mismatch(lambda: robust_accuracy(meta_model, PGD(meta_model, 0.1, steps=1), x, y))
    _no_mismatch(lambda: input_hessian_top_eigenvalue(meta_model, x[:4], y[:4], iters=1))
    _no_mismatch(lambda: AdversarialPatch(meta_model, target=0, size=3, steps=1).fit(x, y))
    backdoor = make_poisoning_attack("badnets", target=0, poison_rate=0.1).backdoor
    _no_mismatch(lambda: adversarial_weight_perturbation(meta_model, backdoor, x, y, 10,
                                                         WeightPerturbationConfig(steps=1), progress=False))


def test_the_meta_check_catches_a_missing_move(meta_model, images, monkeypatch):
    """The placement tests can fail: with the training loop's move to the device undone, fit mixes devices."""
    import backdoorlab.train as train
    from backdoorlab.train import TrainConfig, train_model

    monkeypatch.setattr(train, "to_device", lambda tensor, device: tensor)
    x, y = images
    with pytest.raises(AssertionError, match="device mismatch"):
        _no_mismatch(lambda: train_model(meta_model, x, y, TrainConfig(epochs=1, batch_size=32), progress=False))
