"""The generic plugin machinery: the Config base class (validation, typed -o parsing, unknown keys) and the
Registry (decorator, unknown names, traits)."""

from dataclasses import dataclass

import pytest

from backdoorlab.config import Config, option, split_pairs
from backdoorlab.errors import BackdoorlabError
from backdoorlab.registry import Registry


@dataclass
class ToyConfig(Config):
    steps: int = 100
    lr: float = 0.1
    augment: str = "none"
    reinit: bool = True
    sigmas: tuple[float, ...] = (0.1, 0.2)
    labels: list[int] | None = None
    threshold: float | str = "auto"
    mode: str = option("add", choices=("add", "blend"))
    rounds: int = option(1, check=(lambda v: v >= 1, ">= 1"))

    def validate(self):
        if self.steps < self.rounds:
            raise BackdoorlabError("steps must be at least the rounds")


def test_parse_options_types_text_after_the_fields():
    texts = split_pairs(["steps=30", "lr=1e-3", "augment=crop", "reinit=no", "sigmas=0.5,1", "labels=3",
                         "threshold=0.4", "mode=blend", "rounds=2"])
    assert ToyConfig.parse_options(texts, "toy") == {
        "steps": 30, "lr": 0.001, "augment": "crop", "reinit": False, "sigmas": (0.5, 1.0), "labels": [3],
        "threshold": 0.4, "mode": "blend", "rounds": 2}
    assert ToyConfig.parse_options({"labels": "0,1", "threshold": "auto"}, "toy") == {"labels": [0, 1],
                                                                                     "threshold": "auto"}
    assert ToyConfig.parse_options({"labels": "none", "steps": 7}, "toy") == {"labels": None, "steps": 7}
    cfg = ToyConfig.from_options({"steps": "30"}, "toy")
    assert isinstance(cfg, ToyConfig) and cfg.steps == 30 and cfg.to_dict()["lr"] == 0.1


def test_split_pairs_normalises_keys_and_refuses_text_without_equals():
    assert split_pairs(["max-accuracy-drop=0.03", "steps=1", "steps=2"]) == {"max_accuracy_drop": "0.03",
                                                                             "steps": "2"}
    with pytest.raises(BackdoorlabError, match="option 'steps' is not KEY=VALUE"):
        split_pairs(["steps"])


@pytest.mark.parametrize("texts, match", [
    ({"stepz": "3"}, r"^unknown option 'stepz' for toy; valid: 'augment', 'labels', 'lr', .*'steps'"),
    ({"a": "1", "b": "2"}, r"^unknown options 'a', 'b' for toy; valid:"),
    ({"steps": "many"}, r"^option steps='many' for toy: expected a value like 100$"),
    ({"reinit": "maybe"}, r"expected a value like True"),
    ({"labels": "x"}, r"expected comma-separated integers or none$"),
])
def test_parse_options_refuses_unknown_keys_and_bad_values_in_one_line(texts, match):
    with pytest.raises(BackdoorlabError, match=match) as e:
        ToyConfig.parse_options(texts, "toy")
    assert "\n" not in str(e.value)


def test_excluded_keys_are_not_options():
    with pytest.raises(BackdoorlabError, match="unknown option 'rounds' for toy; valid:") as e:
        ToyConfig.parse_options({"rounds": "2"}, "toy", exclude=("rounds",))
    assert "'rounds'" not in str(e.value).split("valid:")[1]


def test_declared_checks_and_the_validate_hook_run_on_construction():
    with pytest.raises(BackdoorlabError, match="unknown mode 'mix'; valid: 'add', 'blend'"):
        ToyConfig(mode="mix")
    with pytest.raises(BackdoorlabError, match="rounds must be >= 1, got 0"):
        ToyConfig(rounds=0)
    with pytest.raises(BackdoorlabError, match="steps must be at least the rounds"):
        ToyConfig.from_dict({"steps": 1, "rounds": 2}, "toy")
    with pytest.raises(BackdoorlabError, match="unknown option 'step' for toy"):
        ToyConfig.from_dict({"step": 1}, "toy")


def test_registry_decorator_entries_traits_and_unknown_names():
    reg = Registry("widget", traits={"two": False})

    @reg.register("b-widget", ToyConfig, "The second widget.", two=True)
    def b(model):
        return model

    @reg.register("a-widget", ToyConfig, "The first widget.")
    class A:
        pass

    assert list(reg) == ["b-widget", "a-widget"] and len(reg) == 2 and "a-widget" in reg  # registration order
    assert reg.entry("b-widget").run is b and reg["a-widget"].run is A
    assert reg.names(two=True) == ["b-widget"] and reg.entry("a-widget").traits == {"two": False}
    assert reg.config("a-widget", steps=5).steps == 5 and reg.defaults("a-widget")["steps"] == 100
    assert reg.parse_options("a-widget", {"steps": "5"}) == {"steps": 5}
    with pytest.raises(BackdoorlabError, match=r"^unknown widget 'c'; valid: 'a-widget', 'b-widget'$"):
        reg.entry("c")
    with pytest.raises(BackdoorlabError, match="unknown option 'x' for a-widget"):
        reg.config("a-widget", x=1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a-widget", ToyConfig, "Again.")(A)
    with pytest.raises(TypeError, match="unknown trait"):
        reg.register("d", ToyConfig, "D.", three=True)
    with pytest.raises(TypeError, match="Config dataclass"):
        reg.register("d", dict, "D.")
    with pytest.raises(ValueError, match="one-line description"):
        reg.register("d", ToyConfig, "")


def test_registry_order_key_and_unregister():
    reg = Registry("widget", traits={"rank": 0}, order=lambda e: (e.traits["rank"], e.name))
    for name, rank in [("z", 0), ("b", 1), ("a", 1), ("y", 0)]:
        reg.register(name, ToyConfig, f"{name.upper()}.", rank=rank)(object)
    assert list(reg) == reg.names() == ["y", "z", "a", "b"] and reg.names(rank=1) == ["a", "b"]
    assert [e.name for e in reg.entries()] == ["y", "z", "a", "b"]
    assert reg.unregister("a").name == "a" and list(reg) == ["y", "z", "b"] and "a" not in reg
    with pytest.raises(BackdoorlabError, match=r"^unknown widget 'a'; valid: 'b', 'y', 'z'$"):
        reg.unregister("a")
    reg.register("a", ToyConfig, "A again.", rank=1)(object)  # the name is free again
    assert list(reg) == ["y", "z", "a", "b"]
