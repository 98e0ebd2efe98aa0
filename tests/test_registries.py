"""The plugin registries (repairers, training-time attacks, detectors): every entry has a description and a
config, unknown names are one-line errors listing the valid ones, and the CLI's choices, help and ``list``
come from them."""

import dataclasses
import inspect
import json
import re

import pytest

from backdoorlab.attacks import MODEL_ATTACKS, TRAINING_ATTACKS, build_attack, make_poisoning_attack
from backdoorlab.cli import main
from backdoorlab.config import Config
from backdoorlab.defenses.repair import REPAIRERS
from backdoorlab.detectors import DETECTORS, LEVELS
from backdoorlab.errors import BackdoorlabError
from backdoorlab.evasion import EVASION_ATTACKS

REGISTRIES = {"defense": REPAIRERS, "attack": TRAINING_ATTACKS, "detector": DETECTORS, "model attack": MODEL_ATTACKS,
              "evasion attack": EVASION_ATTACKS}


@pytest.mark.parametrize("kind", REGISTRIES)
def test_every_entry_has_a_description_and_a_config_with_valid_defaults(kind):
    registry = REGISTRIES[kind]
    assert len(registry) > 0
    for e in registry.entries():
        assert e.description and "\n" not in e.description and e.description.endswith("."), e.name
        assert issubclass(e.config, Config) and dataclasses.is_dataclass(e.config), e.name
        assert callable(e.run) and set(e.traits) == set(registry.traits), e.name
        json.dumps(registry.defaults(e.name))  # the defaults construct, validate and are JSON-ready


@pytest.mark.parametrize("kind", REGISTRIES)
def test_unknown_name_is_one_line_listing_the_valid_names(kind):
    registry = REGISTRIES[kind]
    with pytest.raises(BackdoorlabError, match=f"^unknown {kind} 'nope'; valid: ") as e:
        registry.entry("nope")
    assert "\n" not in str(e.value) and all(repr(n) in str(e.value) for n in registry)


def _help_section(text: str, title: str) -> list[str]:
    """The entry names listed under ``title`` in a command's help."""
    section = text.split(title + ":\n", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^  (\S+)", section, flags=re.M)


def test_repair_cli_offers_exactly_the_registered_repairers(capsys):
    assert main(["repair", "--help"]) == 0
    assert _help_section(capsys.readouterr().out, "Defenses (NAME)") == list(REPAIRERS)
    assert main(["list", "--defaults"]) == 0
    out = capsys.readouterr().out
    assert "defenses:      " + ", ".join(REPAIRERS) + " (" in out
    for name in REPAIRERS:
        assert f"  {name}: " + ", ".join(f"{k}={v}" for k, v in REPAIRERS.defaults(name).items()) in out
    for prefix, registry in (("train --attack", TRAINING_ATTACKS), ("attack", MODEL_ATTACKS)):
        for name in registry:
            assert f"  {prefix} {name}: " + ", ".join(f"{k}={v}" for k, v in registry.defaults(name).items()) in out


def test_repairer_traits_answer_what_was_special_cased_by_name():
    from backdoorlab.runs import default_repair_options

    assert REPAIRERS.names(two_models=True) == ["mode-connectivity"]
    assert REPAIRERS.names(learns_features=True) == ["fst", "mode-connectivity"]
    assert default_repair_options("fst", "mnist") == {"augment": "affine"}  # the sanitizer's augmentation
    assert default_repair_options("finetune", "cifar10") == {"augment": "crop-flip-jpeg"}  # the training one
    assert default_repair_options("i-bau", "mnist") == {}  # no augment option


def test_repairer_options_are_typed_after_the_config_fields():
    assert REPAIRERS.parse_options("noise", {"sigmas": "0.1,0.5", "draws": "2", "reestimate_bn": "yes"}) == {
        "sigmas": (0.1, 0.5), "draws": 2, "reestimate_bn": True}
    assert REPAIRERS.parse_options("nc-unlearning", {"labels": "3", "nc_batches_per_epoch": "none"}) == {
        "labels": [3], "nc_batches_per_epoch": None}
    assert REPAIRERS.parse_options("anp", {"threshold": "0.3"}) == {"threshold": 0.3}
    with pytest.raises(BackdoorlabError, match=r"^unknown option 'bogus' for anp; valid: .*'eps'"):
        REPAIRERS.parse_options("anp", {"bogus": "1"})
    with pytest.raises(BackdoorlabError, match=r"^option iterations='many' for anp: expected a value like 2000$"):
        REPAIRERS.parse_options("anp", {"iterations": "many"})


def test_train_cli_offers_exactly_the_registered_attacks(capsys):
    assert main(["train", "--help"]) == 0
    assert _help_section(capsys.readouterr().out, "Attacks (--attack)") == list(TRAINING_ATTACKS)
    assert main(["list"]) == 0
    assert "attacks:       " + ", ".join(TRAINING_ATTACKS) + " (" in capsys.readouterr().out


def test_every_attack_flag_of_the_cli_sets_a_config_field():
    from backdoorlab.cli import TRIGGER_KEYS, train

    train_flags = {o for p in train.params for o in p.opts}
    config_flags = {flag for e in TRAINING_ATTACKS.entries() for flag in e.config.flags()}
    assert {"--" + k.replace("_", "-") for k in TRIGGER_KEYS} <= config_flags <= train_flags


def test_build_attack_parses_options_and_checks_them_against_the_data():
    atk = build_attack("badnets", target=3, size="2", position="2,2", image_shape=(1, 8, 8), num_classes=10)
    assert atk.to_dict()["trigger"] == {"kind": "patch", "size": 2, "position": [2, 2], "value": 1.0, "margin": 1}
    assert atk.to_dict() == make_poisoning_attack("badnets", target=3, size=2, position=(2, 2)).to_dict()
    dyn = build_attack("dynamic", target=1, locations="1,1;2,2", image_shape=(1, 8, 8), num_classes=10)
    assert dyn.backdoor.trigger.locations == [(1, 1), (2, 2)]
    assert build_attack("triggerless", target=2, dropout="0.5").to_dict()["dropout"] == 0.5
    for kwargs, match in [
        (dict(name="badnets", alpha=0.3),
         r"^unknown option 'alpha' for badnets; valid: 'image', 'margin', 'position', "),
        (dict(name="badnets", size="big"), r"^option size='big' for badnets: expected an integer or none$"),
        (dict(name="badnets", target=12, num_classes=10), "target label 12 is out of range"),
        (dict(name="badnets", size=9, image_shape=(1, 8, 8)), "does not fit a 8x8 image"),
        (dict(name="blended", target=[0, 1]), "several target labels need the dynamic attack"),
        (dict(name="dynamic", target=1, locations="1,1|2,2"), "1 target needs 1 location set, got 2"),
        (dict(name="triggerless", poison_rate=0.2), "the triggerless attack poisons no data"),
        (dict(name="triggerless", target=[0, 1]), "one target label and no all-to-all mode"),
        (dict(name="nope"), r"^unknown attack 'nope'; valid: 'badnets', 'blended', 'dynamic', 'latent', 'triggerless'$"),
    ]:
        with pytest.raises(BackdoorlabError, match=match) as e:
            build_attack(**kwargs)
        assert "\n" not in str(e.value)
    with pytest.raises(BackdoorlabError, match="triggerless is not a data-poisoning attack; valid: 'badnets'"):
        make_poisoning_attack("triggerless")


def test_scan_cli_and_list_show_the_registered_detectors(capsys):
    assert main(["scan", "--help"]) == 0
    scanned = DETECTORS.names(level="model") + DETECTORS.names(level="input")
    assert _help_section(capsys.readouterr().out, "Detectors") == scanned == ["neural-cleanse", "strip"]
    assert main(["list"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("detectors:"))
    assert re.findall(r"[a-z]+(?:-[a-z]+)+|strip", line.split("(backdoorlab detect-poison")[0]) == list(DETECTORS)
    assert main(["detect-poison", "--help"]) == 0
    assert _help_section(capsys.readouterr().out, "Detectors (--detector)") == DETECTORS.names(level="training-set")


def test_detector_levels_and_configs_match_their_entry_points():
    assert all(e.traits["level"] in LEVELS for e in DETECTORS.entries())
    for e in DETECTORS.entries(level="training-set"):  # called with **cfg.to_dict(): the same names and defaults
        params = inspect.signature(e.run).parameters
        keywords = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k != "progress"}
        assert keywords == e.config().to_dict(), e.name
    with pytest.raises(BackdoorlabError, match=r"^unknown reduction 'svd'; valid: 'ica', 'pca'$"):
        DETECTORS.config("activation-clustering", reduction="svd")
    with pytest.raises(BackdoorlabError, match=r"^poison_fraction must be in \(0, 1\), got 2.0$"):
        DETECTORS.config("spectral-signatures", **DETECTORS.parse_options("spectral-signatures",
                                                                           {"poison_fraction": "2"}))


def test_attack_and_robustness_cli_offer_exactly_the_registered_attacks(capsys):
    assert main(["attack", "--help"]) == 0
    assert _help_section(capsys.readouterr().out, "Model attacks (NAME)") == list(MODEL_ATTACKS)
    assert main(["list"]) == 0
    assert "model attacks: " + ", ".join(MODEL_ATTACKS) + " (" in capsys.readouterr().out
    assert main(["robustness", "--help"]) == 0
    assert _help_section(capsys.readouterr().out, "Attacks (--attack)") == list(EVASION_ATTACKS)
    assert sorted(MODEL_ATTACKS) == ["fault-injection", "path-backdoor", "single-bias", "weight-perturbation"]
    assert sorted(EVASION_ATTACKS) == ["fgsm", "one-pixel", "patch", "pgd", "pgd-l2"]


def test_every_flag_an_attack_config_names_is_an_option_of_its_command():
    from backdoorlab.cli import attack
    from backdoorlab.cli import cli as group

    attack_flags = {o for p in attack.params for o in p.opts}
    robustness_flags = {o for p in group.commands["robustness"].params for o in p.opts}
    for e in MODEL_ATTACKS.entries():
        assert set(e.config.flags()) <= attack_flags, e.name
        assert e.traits["settings"] in ("awp", "fault", "settings"), e.name
    for e in EVASION_ATTACKS.entries():
        assert set(e.config.flags()) <= robustness_flags, e.name


def test_evasion_attack_configs_match_the_constructors_defaults():
    """A config's defaults are its attack's: built from the defaults alone, the attack records the same settings."""
    import torch

    from backdoorlab.evasion import make_attack

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    for e in EVASION_ATTACKS.entries():
        cfg = EVASION_ATTACKS.defaults(e.name) | ({"target": 1} if e.traits["targeted_only"] else {})
        atk = make_attack(e.name, model, 0.1 if e.traits["eps"] else None, **cfg)
        built = atk.config()
        for key, value in cfg.items():
            if key in built and value is not None:  # None: derived (the step size from eps)
                assert built[key] == (list(value) if isinstance(value, tuple) else value), (e.name, key)
    assert make_attack("pgd-l2", model, 0.5).norm == "l2" and make_attack("fgsm", model, 0.1, steps=9).steps == 1
    with pytest.raises(BackdoorlabError, match="^the patch attack has no epsilon; --eps applies to pgd, pgd-l2 and fgsm"):
        make_attack("patch", model, 0.1, target=0)


@pytest.mark.parametrize("command", ["train", "adv-train", "distill"])
def test_training_commands_list_every_data_set_and_architecture(command):
    from click.testing import CliRunner

    from backdoorlab.cli import cli as group
    from backdoorlab.data import DATASETS
    from backdoorlab.models import list_models

    text = CliRunner().invoke(group, [command, "--help"]).output
    data_sets = text[text.index("Data sets (--dataset):"):text.index("Architectures (--arch):")]
    archs = text[text.index("Architectures (--arch):"):]
    assert all(f"  {name} " in data_sets for name in DATASETS) and all(f"  {name} " in archs for name in list_models())
