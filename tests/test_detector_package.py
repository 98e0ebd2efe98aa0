"""The detectors' package, backdoorlab.detectors: one module per detector, found by discovery, listed by level
then name; a detector registered anywhere is found by name; the package imports on its own."""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import backdoorlab
from backdoorlab.cli import main
from backdoorlab.config import Config
from backdoorlab.detectors import DETECTORS, LEVELS, detector_config
from backdoorlab.errors import BackdoorlabError

# what `backdoorlab list` showed before the detectors had a package of their own, with their levels
LISTED = [("neural-cleanse", "model"), ("strip", "input"), ("activation-clustering", "training-set"),
          ("spectral-signatures", "training-set")]
SRC = Path(backdoorlab.__file__).resolve().parent.parent


def _python(code: str, pythonpath: Path = SRC) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_registry_lists_the_same_detectors_at_the_same_levels():
    assert [(e.name, e.traits["level"]) for e in DETECTORS.entries()] == LISTED
    assert list(DETECTORS) == [name for name, _ in LISTED] and set(LEVELS) == {level for _, level in LISTED}
    assert DETECTORS.names(level="training-set") == ["activation-clustering", "spectral-signatures"]
    assert detector_config("strip", n_overlays=3).n_overlays == 3


def test_moved_names_are_importable_from_their_new_modules():
    from backdoorlab.defenses import neural_cleanse as nc_algorithm
    from backdoorlab.detectors import activation_clustering as ac
    from backdoorlab.detectors import neural_cleanse as nc
    from backdoorlab.detectors import poison_detection as pd
    from backdoorlab.detectors import spectral_signatures as ss
    from backdoorlab.detectors import strip

    for module, names in [
        (strip, ["StripConfig", "StripDetector", "strip_entropy", "STRIP_MODES"]),
        (ac, ["activation_clustering", "ActivationClusteringConfig", "AC_ANALYSES", "AC_REDUCTIONS"]),
        (ss, ["spectral_signatures", "SpectralSignaturesConfig", "SPECTRAL_RULES"]),
        (pd, ["PoisonDetection", "penultimate_features", "detection_metrics", "poisoned_training_set", "roc_auc"]),
        (nc, ["neural_cleanse", "NeuralCleanseConfig", "NeuralCleanseResult"]),
    ]:
        for name in names:
            assert hasattr(module, name), (module.__name__, name)
    assert DETECTORS["strip"].run is strip.StripDetector and DETECTORS["strip"].config is strip.StripConfig
    assert DETECTORS["activation-clustering"].run is ac.activation_clustering
    assert DETECTORS["spectral-signatures"].run is ss.spectral_signatures
    assert DETECTORS["neural-cleanse"].run is nc.neural_cleanse is nc_algorithm.neural_cleanse
    assert DETECTORS["neural-cleanse"].config is nc_algorithm.NeuralCleanseConfig
    for old in ("detectors", "strip", "poison_detection"):  # moved, no copies left behind
        with pytest.raises(ModuleNotFoundError):
            __import__(f"backdoorlab.defenses.{old}")


@dataclass
class TinyConfig(Config):
    threshold: float = 0.5


@pytest.fixture
def tiny_detector():
    """A fake input-level detector, registered for one test and removed afterwards."""
    before = list(DETECTORS)

    class TinyDetector:
        def __init__(self, model, clean_x, cfg=None, progress=False):
            self.cfg = cfg or TinyConfig()

    DETECTORS.register("tiny", TinyConfig, "A tiny fake detector for the tests.", level="input")(TinyDetector)
    try:
        yield TinyDetector
    finally:
        DETECTORS.unregister("tiny")
        assert list(DETECTORS) == before


def test_a_detector_registered_elsewhere_is_found_by_name(tiny_detector, capsys):
    assert DETECTORS["tiny"].run is tiny_detector and DETECTORS["tiny"].traits["level"] == "input"
    assert DETECTORS.names(level="input") == ["strip", "tiny"]  # by level, then name
    assert list(DETECTORS) == ["neural-cleanse", "strip", "tiny", "activation-clustering", "spectral-signatures"]
    assert detector_config("tiny", threshold=0.25) == TinyConfig(0.25)
    assert main(["scan", "--help"]) == 0
    assert "  tiny " in capsys.readouterr().out.split("Detectors:", 1)[1].split("Options:", 1)[0]


def test_unregistered_detector_is_unknown_again(tiny_detector):
    DETECTORS.unregister("tiny")
    try:
        with pytest.raises(BackdoorlabError, match="^unknown detector 'tiny'; valid: "):
            DETECTORS.entry("tiny")
    finally:  # the fixture removes it again
        DETECTORS.register("tiny", TinyConfig, "A tiny fake detector for the tests.", level="input")(tiny_detector)


@pytest.mark.parametrize("package", ["backdoorlab.detectors", "backdoorlab.defenses"])
def test_each_package_imports_alone_in_a_fresh_interpreter(package):
    p = _python(f"import {package}\nfrom backdoorlab.detectors import DETECTORS\n"
                "print(','.join(f\"{e.name}:{e.traits['level']}\" for e in DETECTORS.entries()))")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [",".join(f"{n}:{lv}" for n, lv in LISTED)]


def test_a_new_detector_is_one_new_file(tmp_path):
    """Dropped into the package, a module is imported and its detector listed and offered by `scan`."""
    shutil.copytree(SRC / "backdoorlab", tmp_path / "backdoorlab", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "backdoorlab" / "detectors" / "zz_fake.py").write_text(
        "from dataclasses import dataclass\n\n"
        "from ..config import Config\n"
        "from . import DETECTORS\n\n\n"
        "@dataclass\nclass FakeConfig(Config):\n    seed: int = 0\n\n\n"
        "@DETECTORS.register('fake', FakeConfig, 'A fake model-level detector.', level='model')\n"
        "def fake(model, x, num_classes, cfg=None, *, progress=True):\n    return None\n")
    p = _python("from backdoorlab.cli import main\nmain(['list'])", pythonpath=tmp_path)
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if x.startswith("detectors:"))
    assert line.startswith("detectors:     fake, neural-cleanse, strip (backdoorlab scan MODEL_DIR); "
                           "activation-clustering, spectral-signatures (backdoorlab detect-poison "), line
