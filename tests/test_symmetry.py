"""Weight symmetry: unit groups found by tracing, permutations that keep the function, matching by activations."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backdoorlab.errors import BackdoorlabError
from backdoorlab.models import create_model, list_models
from backdoorlab.symmetry import (find_unit_groups, match_units, model_state, permute_state, permuted_copy,
                                  unit_correlations)


def _trained_bn(model, x):
    """Give batch norm non-trivial running statistics, so that a forgotten buffer shows in the outputs."""
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def _distance(a, b):
    return sum((p - q).pow(2).sum() for p, q in zip(a.parameters(), b.parameters())).sqrt().item()


@pytest.mark.parametrize("arch", list_models())
def test_every_builtin_architecture_keeps_its_outputs_when_its_units_are_pushed_apart(arch):
    shape = (1, 28, 28) if arch == "small-cnn" else (3, 32, 32)
    torch.manual_seed(0)
    model = _trained_bn(create_model(arch, num_classes=10, in_channels=shape[0], input_size=list(shape[1:])),
                        torch.rand(32, *shape))
    x = torch.rand(12, *shape)
    found = find_unit_groups(model, x[:4])
    assert set(found.skipped) == {"fc"}  # only the logits are not hidden units
    assert all(g.size >= 16 for g in found.groups)
    far = permuted_copy(model, found.groups, match_units(model, model, found.groups, x, maximize=False))
    with torch.no_grad():
        assert torch.allclose(far(x), model(x), atol=1e-4, rtol=1e-4)
    norm = sum(p.pow(2).sum() for p in model.parameters()).sqrt().item()
    assert _distance(far, model) > 0.5 * norm  # far away in weight space


def test_residual_blocks_tie_their_channels_into_one_group():
    model = create_model("resnet20")
    groups = find_unit_groups(model, torch.rand(2, 3, 32, 32)).groups
    # each stage's residual stream: its first layer (the stem, or the block's shortcut convolution) and the second
    # convolution of its three blocks share one set of channels; every block's inner channels are a group alone
    residual = sorted((g.size, len(g.probes)) for g in groups if len(g.probes) > 1)
    assert residual == [(16, 4), (32, 4), (64, 4)]
    assert sum(len(g.probes) == 1 for g in groups) == 9


class _UserNet(nn.Module):
    """A user's own architecture: a residual sum, a flatten into a linear layer, layer norm, a tensor method."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.b = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.head = nn.Linear(8 * 4 * 4, 24)
        self.norm = nn.LayerNorm(24)
        self.out = nn.Linear(24, 5)

    def forward(self, x):
        h = F.relu(self.bn(self.a(x)))
        h = h + self.b(h)
        h = F.adaptive_avg_pool2d(h, 4).flatten(1)
        return self.out(self.norm(self.head(h)).relu())


def test_a_user_defined_model_keeps_its_outputs():
    torch.manual_seed(0)
    model = _trained_bn(_UserNet(), torch.rand(16, 3, 16, 16))
    x = torch.rand(10, 3, 16, 16)
    found = find_unit_groups(model, x[:2])
    assert sorted(g.name for g in found.groups) == ["a", "head"]
    assert found.units == 8 + 24
    far = permuted_copy(model, found.groups, match_units(model, model, found.groups, x, maximize=False))
    with torch.no_grad():
        assert torch.allclose(far(x), model(x), atol=1e-5)
    assert not torch.equal(far.head.weight, model.head.weight)


class _Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.g(self.a(x).relu()).relu().mean((2, 3)))


def test_a_group_through_a_grouped_convolution_is_left_alone_and_named():
    with pytest.raises(BackdoorlabError, match=r"no hidden units of _Grouped can be permuted \(.*g \(Conv2d with "
                                               r"groups=2\)"):
        find_unit_groups(_Grouped(), torch.rand(2, 3, 8, 8))


class _Scaled(nn.Module):
    """A per-channel scale held as a bare parameter: permuting the conv without it would change the outputs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.scale = nn.Parameter(torch.linspace(0.5, 2.0, 6).view(1, 6, 1, 1))
        self.b = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.b(self.a(x).relu() * self.scale).relu().mean((2, 3)))


def test_a_group_that_is_not_a_true_symmetry_is_never_used():
    model = _Scaled()
    found = find_unit_groups(model, torch.rand(2, 3, 8, 8))
    assert [g.name for g in found.groups] == ["b"]
    assert "a" in found.skipped


def test_a_model_without_hidden_units_is_refused_in_one_line():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    with pytest.raises(BackdoorlabError, match="no hidden units of Sequential can be permuted") as err:
        find_unit_groups(model, torch.rand(2, 3, 4, 4))
    assert "\n" not in str(err.value)


def test_a_model_that_cannot_run_on_the_images_is_refused_in_one_line():
    model = nn.Sequential(nn.Flatten(), nn.Linear(10, 5))
    with pytest.raises(BackdoorlabError, match="cannot trace Sequential") as err:
        find_unit_groups(model, torch.rand(2, 3, 4, 4))
    assert "\n" not in str(err.value)


@pytest.fixture
def small_cnn():
    """A small-cnn with batch-norm statistics, 64 images and its unit groups."""
    torch.manual_seed(1)
    model = _trained_bn(create_model("small-cnn", num_classes=10, in_channels=1, input_size=[28, 28]),
                        torch.rand(32, 1, 28, 28))
    x = torch.rand(64, 1, 28, 28)
    return model, x, find_unit_groups(model, x[:2]).groups


def test_aligning_a_shuffled_copy_recovers_the_original_weights(small_cnn):
    model, x, groups = small_cnn
    g = torch.Generator().manual_seed(0)
    shuffled = permuted_copy(model, groups, [torch.randperm(gr.size, generator=g) for gr in groups])
    assert _distance(shuffled, model) > 1.0
    aligned = permuted_copy(shuffled, groups, match_units(model, shuffled, groups, x, maximize=True))
    assert _distance(aligned, model) < 1e-5


def test_pushing_apart_lowers_the_units_correlation_with_themselves(small_cnn):
    model, x, groups = small_cnn
    far = permuted_copy(model, groups, match_units(model, model, groups, x, maximize=False))
    for corr in unit_correlations(model, far, groups, x):
        assert corr.diagonal().mean() < 0.5  # itself: 1.0
    for corr in unit_correlations(model, model, groups, x):
        assert torch.allclose(corr.diagonal(), torch.ones(len(corr), dtype=corr.dtype), atol=5e-3)


def test_permute_state_refuses_a_list_that_is_not_a_permutation():
    model = create_model("small-cnn", num_classes=10, in_channels=1, input_size=[28, 28])
    groups = find_unit_groups(model, torch.rand(2, 1, 28, 28)).groups
    bad = [torch.zeros(gr.size, dtype=torch.long) for gr in groups]
    with pytest.raises(BackdoorlabError, match="not a permutation"):
        permute_state(model_state(model), groups, bad)
