import copy

import pytest
import torch
from torch import nn

from backdoorlab.curves import Curve, reestimate_bn
from backdoorlab.errors import BackdoorlabError
from backdoorlab.models import create_model


def make(seed):
    torch.manual_seed(seed)
    m = create_model("small-cnn", num_classes=10, in_channels=1, input_size=(28, 28))
    with torch.no_grad():  # give the BN buffers non-trivial values so buffer handling is tested too
        m.train()
        m(torch.rand(64, 1, 28, 28))
    return m.eval()


@pytest.mark.parametrize("kind", ["bezier", "polychain"])
@pytest.mark.parametrize("init", ["random", "midpoint"])
def test_endpoints_reproduced_exactly(kind, init):
    a, b, fresh = make(1), make(2), make(3)
    curve = Curve(a, b, kind=kind, init=init, init_model=fresh)
    x = torch.rand(8, 1, 28, 28)
    for t, ref in ((0.0, a), (1.0, b)):
        params = curve.params_at(t)
        for k, p in ref.named_parameters():
            assert torch.equal(params[k], p), k
        model = curve.model_at(t)
        # the exported model carries the start's buffers; load the reference's BN statistics to compare outputs
        model.load_state_dict({**model.state_dict(), **dict(ref.named_buffers())})
        assert torch.equal(model(x), ref(x))


def test_curve_forward_matches_functional_point():
    a, b, fresh = make(1), make(2), make(3)
    curve = Curve(a, b, kind="bezier", init="random", init_model=fresh).eval()
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(curve(x, 0.0), a(x))
    mid = curve.model_at(0.5)
    assert torch.allclose(curve(x, 0.5), mid(x), atol=1e-6)


def test_bezier_and_polychain_formulas():
    a, b, fresh = make(1), make(2), make(3)
    k = "fc.weight"
    th0, th2, th1 = dict(a.named_parameters())[k], dict(b.named_parameters())[k], dict(fresh.named_parameters())[k]
    bez = Curve(a, b, "bezier", "random", fresh)
    t = 0.3
    want = (1 - t) ** 2 * th0 + 2 * t * (1 - t) * th1 + t ** 2 * th2
    assert torch.allclose(bez.params_at(t)[k], want)
    poly = Curve(a, b, "polychain", "random", fresh)
    assert torch.allclose(poly.params_at(0.5)[k], th1)
    assert torch.allclose(poly.params_at(0.25)[k], (th0 + th1) / 2)
    assert torch.allclose(poly.params_at(0.75)[k], (th1 + th2) / 2)
    mid = Curve(a, b, "bezier", "midpoint")
    assert torch.allclose(mid.params_at(0.5)[k], (th0 + th2) / 2, atol=1e-6)


def test_only_control_point_trains_and_endpoints_untouched():
    a, b, fresh = make(1), make(2), make(3)
    a_before = copy.deepcopy(a.state_dict())
    curve = Curve(a, b, "bezier", "random", fresh)
    assert [p for p in curve.parameters() if p.requires_grad] == list(curve.control)
    curve.base.train()
    loss = curve(torch.rand(8, 1, 28, 28), 0.4).sum()
    loss.backward()
    assert all(p.grad is not None for p in curve.control)
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in a_before.items())


def test_mismatched_architectures_rejected():
    a = make(1)
    other = create_model("small-cnn", num_classes=5, in_channels=1, input_size=(28, 28))
    with pytest.raises(BackdoorlabError, match="same architecture"):
        Curve(a, other)


def test_t_out_of_range():
    a, b = make(1), make(2)
    with pytest.raises(BackdoorlabError, match=r"\[0, 1\]"):
        Curve(a, b, init="midpoint").params_at(1.5)


def test_reestimate_bn_is_cumulative_average_of_batch_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    net[1].running_mean.fill_(5.0)
    x = torch.rand(1000, 1, 8, 8) * 3
    reestimate_bn(net, x, batch_size=250)
    with torch.no_grad():
        feats = [net[0](chunk) for chunk in x.split(250)]
    want_mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    want_var = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    assert torch.allclose(net[1].running_mean, want_mean, atol=1e-5)
    assert torch.allclose(net[1].running_var, want_var, atol=1e-4)
    assert net[1].momentum == 0.1 and not net.training


def test_reestimate_bn_changes_exported_model_statistics():
    a, b, fresh = make(1), make(2), make(3)
    curve = Curve(a, b, "bezier", "random", fresh)
    x = (torch.rand(300, 1, 28, 28) * 255).to(torch.uint8)
    m1 = curve.model_at(0.5, bn_data=x)
    m2 = curve.model_at(0.5)
    bn1 = [m for m in m1.modules() if isinstance(m, nn.BatchNorm2d)][0]
    bn2 = [m for m in m2.modules() if isinstance(m, nn.BatchNorm2d)][0]
    assert not torch.allclose(bn1.running_mean, bn2.running_mean)
    assert bn1.num_batches_tracked.item() >= 1
