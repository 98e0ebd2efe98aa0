"""Architectures, the registry and the Normalize layer."""

import pytest
import torch
from torch import nn

from backdoorlab.errors import BackdoorlabError
from backdoorlab.models import Normalize, create_model, list_models

ARCHS = ["preact-resnet18", "resnet20", "small-cnn", "vgg16-bn"]
SHAPES = [(3, (32, 32)), (1, (28, 28))]


def test_list_models_sorted():
    assert list_models() == ARCHS


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("in_channels,size", SHAPES)
def test_output_shape(arch, in_channels, size):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=7, in_channels=in_channels, input_size=size)
    assert isinstance(next(iter(model.children())), Normalize)
    x = torch.rand(2, in_channels, *size)
    assert model(x).shape == (2, 7)  # train mode
    model.eval()
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (2, 7) and torch.isfinite(logits).all()
        assert torch.allclose(model.fc(model.forward_features(x)), logits)


def test_small_cnn_8x8():
    model = create_model("small-cnn", num_classes=3, in_channels=1, input_size=(8, 8))
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 3)


def test_small_cnn_too_small():
    with pytest.raises(BackdoorlabError, match="4x4"):
        create_model("small-cnn", input_size=(3, 3))


def test_resnet20_param_count():
    n = sum(p.numel() for p in create_model("resnet20").parameters())
    assert 0.26e6 < n < 0.28e6


def test_init_is_kaiming_and_bn_standard():
    model = create_model("resnet20")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert convs and bns
    conv = convs[-1]  # fan_out = 64 * 3 * 3 -> std sqrt(2 / 576)
    assert abs(conv.weight.std().item() - (2 / 576) ** 0.5) < 0.01
    assert all(torch.equal(b.weight, torch.ones_like(b.weight)) and not b.bias.any() for b in bns)


def test_normalize():
    norm = Normalize((0.5, 0.25), (0.5, 0.25))
    x = torch.rand(4, 2, 5, 5)
    expected = torch.stack([(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 0.25], 1)
    assert torch.allclose(norm(x), expected)
    assert set(norm.state_dict()) == {"mean", "std"}
    assert norm.state_dict()["mean"].tolist() == [0.5, 0.25]


def test_model_mean_std_in_state_dict():
    model = create_model("small-cnn", in_channels=1, input_size=(28, 28), mean=(0.1307,), std=(0.3081,))
    state = model.state_dict()
    assert torch.allclose(state["normalize.mean"], torch.tensor([0.1307]))
    assert torch.allclose(state["normalize.std"], torch.tensor([0.3081]))
    default = create_model("small-cnn")
    assert default.normalize.mean.tolist() == [0.5] * 3 and default.normalize.std.tolist() == [0.5] * 3


def test_arch_args_recorded():
    model = create_model("resnet20", num_classes=5, in_channels=1, input_size=[28, 28])
    assert model.arch == "resnet20"
    assert model.arch_args == {
        "num_classes": 5, "in_channels": 1, "input_size": [28, 28], "mean": [0.5], "std": [0.5],
    }  # fmt: skip


def test_unknown_name_lists_valid():
    with pytest.raises(BackdoorlabError) as info:
        create_model("resnet99")
    message = str(info.value)
    assert "'resnet99'" in message and "\n" not in message
    assert all(repr(name) in message for name in ARCHS)


@pytest.mark.parametrize("kwargs", [{"mean": (0.5, 0.5)}, {"std": (0.5,) * 4}, {"in_channels": 1, "mean": (0.1,) * 3}])
def test_mean_std_length_mismatch(kwargs):
    with pytest.raises(BackdoorlabError, match="in_channels"):
        create_model("small-cnn", **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"std": (0.5, 0.0, 0.5)}, {"num_classes": 0}, {"in_channels": 2.5}, {"input_size": (32,)}, {"depth": 3}],
)
def test_bad_arguments(kwargs):
    with pytest.raises(BackdoorlabError):
        create_model("resnet20", **kwargs)


def test_ensemble_averages_softmax_and_round_trips_through_a_checkpoint(tmp_path):
    from backdoorlab.models import Ensemble, load_checkpoint, save_checkpoint
    torch.manual_seed(0)
    members = [create_model("small-cnn", num_classes=4, in_channels=1, input_size=(12, 12), dropout=0.2).eval()
               for _ in range(2)]
    with torch.no_grad():
        for m in members:  # distinct batch-norm statistics per member
            m.train()(torch.rand(8, 1, 12, 12) * (1 + len(m.arch)))
            m.eval()
    ens = Ensemble(members).eval()
    x = torch.rand(5, 1, 12, 12)
    with torch.no_grad():
        want = torch.stack([m(x).softmax(1) for m in members]).mean(0)
        out = ens(x)
    torch.testing.assert_close(out.exp(), want)
    torch.testing.assert_close(out.softmax(1), want)  # log-probabilities: valid logits
    assert ens.arch == "ensemble" and ens.arch_args["member"] == "small-cnn" and ens.arch_args["size"] == 2
    assert ens.arch_args["member_args"] == {"dropout": 0.2, "dropout_at_inference": False}
    save_checkpoint(ens, tmp_path / "ens", {"dataset": "digits"})
    loaded, meta = load_checkpoint(tmp_path / "ens")
    assert meta["arch"] == "ensemble" and isinstance(loaded, Ensemble) and len(loaded.members) == 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), out)
    assert "ensemble" not in list_models()  # made by the sanitizer, not offered for training
    with pytest.raises(BackdoorlabError, match="needs member="):
        create_model("ensemble", num_classes=4)
    with pytest.raises(BackdoorlabError, match="size >= 2"):
        create_model("ensemble", member="small-cnn", size=1)
    with pytest.raises(BackdoorlabError, match="at least two members"):
        Ensemble(members[:1])
    with pytest.raises(BackdoorlabError, match="unknown architecture 'nope'"):
        create_model("ensemble", member="nope")
    with pytest.raises(BackdoorlabError, match="may not set num_classes"):
        create_model("ensemble", member="small-cnn", member_args={"num_classes": 3})
