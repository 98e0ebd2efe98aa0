"""Does re-estimating batch norm on clean images make a backdoor fire without its trigger, and only a backdoor?

A backdoored model trained on poisoned data carries batch-norm statistics that include the stamped images. On
the CIFAR-10 BadNets endpoint, re-estimating them on clean images sent 5.7% of the clean test images to the
target label instead of 1.4% (``bn_statistics.py --full``). If clean models show no such pull towards one
label, the shift is a trigger-free signal that needs only the clean budget and seconds of compute.

For each checkpoint: draw the clean budget (seeded, from the held-out pool as every defense does), re-estimate
batch norm on its first half (passed through the augmentation recorded in the checkpoint, as the sanitizer
does), and compare the predicted-label shares on the second half (and on the test set) before and after. Prints
the label whose share rises most, by how many points, and that rise against the largest rise among the other
labels. The recorded attack's target, if any, is printed for reading the result, never used.

    BACKDOORLAB_DATA=../shared/data python benchmarks/exploration/bn_shift.py MODEL_DIR... [--budget N]
"""

import argparse
import copy

import torch

from backdoorlab.budget import clean_budget
from backdoorlab.curves import reestimate_bn
from backdoorlab.data import load_dataset
from backdoorlab.defenses.mode_connectivity import ModeConnectivitySanitizer, SanitizerConfig
from backdoorlab.errors import BackdoorlabError
from backdoorlab.metrics import predict
from backdoorlab.models.checkpoint import load_checkpoint
from backdoorlab.models.sidecar import planted_attack
from backdoorlab.models import check_model_fits
from backdoorlab.runs import resolve_bn_augment


def shares(pred: torch.Tensor, k: int) -> torch.Tensor:
    return torch.bincount(pred, minlength=k).double() / len(pred)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--budget", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    datasets = {}
    for path in args.models:
        try:
            model, meta = load_checkpoint(path)
            name = meta["dataset"]
            ds = datasets.get(name) or datasets.setdefault(name, load_dataset(name))
            check_model_fits(meta, ds, f"checkpoint {path}")
            budget = clean_budget(ds, args.budget, seed=args.seed, holdout=meta["holdout"]["size"])
        except BackdoorlabError as e:
            ap.exit(2, f"error: {e}\n")
        fit, score = budget.split(len(budget) // 2)
        # the sanitizer's own batch-norm images: the fit part through the augmentation recorded in the checkpoint
        cfg = resolve_bn_augment(SanitizerConfig(seed=args.seed), meta)
        clean = copy.deepcopy(model)
        reestimate_bn(clean, ModeConnectivitySanitizer(cfg, progress=False).bn_data(fit))
        attack = planted_attack(meta) or {}
        target = attack.get("target", "-") if attack.get("mode", "all-to-one") == "all-to-one" else "all-to-all"
        k = ds.num_classes
        for tag, x in (("budget", score.x), ("test", ds.test_x)):
            rise = 100 * (shares(predict(clean, x), k) - shares(predict(model, x), k))
            top = int(rise.argmax())
            others = torch.cat([rise[:top], rise[top + 1:]])
            print(f"{path:<52} draw {args.seed} {tag:<6} n={len(x):<5} top label {top} +{rise[top]:.2f} pts "
                  f"(next largest rise {others.max():+.2f}, mean |change| {rise.abs().mean():.2f}) "
                  f"attack: {attack.get('name', 'none')} target {target}", flush=True)


if __name__ == "__main__":
    main()
