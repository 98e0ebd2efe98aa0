"""Does a refactor change a result? Train two BadNets suspects on the bundled digits with the library's recipe,
repair them with the defenses of the MNIST table (the sanitizer with one model, permuted and scratch, and with
two; Neural Cleanse unlearning; I-BAU; FST; a few sanitizer steps), and print a hash of every model's weights with
its CA and ASR as JSON. Run it under the code before and after a change and compare the two outputs:

    PYTHONPATH=/path/to/old/src python benchmarks/bit_identity.py > before.json
    PYTHONPATH=src python benchmarks/bit_identity.py > after.json
    diff before.json after.json && echo identical

Works with the layout before the runs layer (backdoorlab.pipeline) and after it (backdoorlab.runs). A few
minutes on one core."""
import hashlib
import json
import pathlib
import tempfile

from backdoorlab.attacks import make_poisoning_attack
from backdoorlab.data import load_dataset
from backdoorlab.models import load_checkpoint

try:
    from backdoorlab.runs import repair_run, train_config, train_run
except ImportError:  # the code before the runs layer
    from backdoorlab.pipeline import repair_run, train_config, train_run


def digest(d) -> str:
    """A short hash of the weights of the checkpoint in ``d``."""
    model, _ = load_checkpoint(str(d))
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode()); h.update(v.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

ds = load_dataset("digits")
root = pathlib.Path(tempfile.mkdtemp())
out = {}
for seed in (1, 2):
    cfg = train_config("digits", "small-cnn", epochs=15, seed=seed)
    _, meta = train_run(ds, "small-cnn", cfg, make_poisoning_attack("badnets", target=0, poison_rate=0.1),
                        out=str(root / f"s{seed}"), progress=False)
    out[f"suspect{seed}"] = (digest(root / f"s{seed}"), meta["metrics"]["clean_accuracy"], meta["metrics"]["attack_success_rate"])
fast = {"mode-connectivity": dict(steps=60, grid=5, refine_steps=20), "nc-unlearning": dict(),
        "i-bau": dict(), "fst": dict()}
for name, opts in fast.items():
    r = repair_run(ds, name, [str(root / "s1")], 400, str(root / name), options=opts, progress=False)
    out[name] = (digest(root / name), r["after"]["clean_accuracy"], r["after"]["attack_success_rate"])
r = repair_run(ds, "mode-connectivity", [str(root / "s1"), str(root / "s2")], 400, str(root / "two"),
               options=fast["mode-connectivity"], progress=False)
out["mode-connectivity-two"] = (digest(root / "two"), r["after"]["clean_accuracy"], r["after"]["attack_success_rate"])
r = repair_run(ds, "mode-connectivity", [str(root / "s1")], 400, str(root / "scratch"),
               options=dict(fast["mode-connectivity"], second_endpoint="scratch", second_steps=60), progress=False)
out["mode-connectivity-scratch"] = (digest(root / "scratch"), r["after"]["clean_accuracy"], r["after"]["attack_success_rate"])
print(json.dumps(out, indent=1))
