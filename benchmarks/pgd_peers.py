"""Benchmark: our PGD against torchattacks and the Adversarial Robustness Toolbox (ART), same model, images, batch
size, radius, step size, step count and random start; throughput (images per second) and robust accuracy.

The peers are benchmark-only dependencies. Install them without their declared dependencies (torchattacks
declares torchvision, which would replace the CPU torch):

    pip install --no-deps torchattacks adversarial-robustness-toolbox six

    BACKDOORLAB_DATA=/work/shared/data OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/pgd_peers.py \\
        --models bench-out/evasion/mnist/standard bench-out/evasion/mnist/adversarial --out bench-out/evasion/peers
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np
import torch

from backdoorlab.data import load_dataset
from backdoorlab.models import load_checkpoint
from common import machine, open_results


def ours(model, x, y, eps, alpha, steps, batch):
    from backdoorlab.evasion import PGD
    return PGD(model, eps, steps=steps, step_size=alpha, random_start=True, batch_size=batch, seed=0)(x, y)


def torchattacks_pgd(model, x, y, eps, alpha, steps, batch):
    import torchattacks
    atk = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    return torch.cat([atk(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)])


def art_pgd(model, x, y, eps, alpha, steps, batch):
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier
    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=int(y.max()) + 1, clip_values=(0.0, 1.0), device_type="cpu")
    atk = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps,
                                          num_random_init=1, batch_size=batch, verbose=False)
    return torch.from_numpy(atk.generate(x.numpy(), y=y.numpy()))


PEERS = {"backdoorlab": (ours, None), "torchattacks": (torchattacks_pgd, "torchattacks"),
         "art": (art_pgd, "art")}


def available(module: str | None) -> str | None:
    """None if importable, else the reason."""
    if module is None:
        return None
    try:
        __import__(module)
        if module == "art":
            from art.attacks.evasion import ProjectedGradientDescentPyTorch  # noqa: F401
        return None
    except Exception as e:  # noqa: BLE001 - any import failure means the peer cannot run
        return f"{type(e).__name__}: {e}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", required=True, help="checkpoint directories")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--out", default="bench-out/evasion/peers")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    ap.add_argument("--rounds", type=int, default=3,
                    help="timing rounds per model, the order of the peers rotated each round; the median counts")
    args = ap.parse_args()
    out, results, save = open_results(args.out)
    results.update(machine=machine(), settings=vars(args))
    ds = load_dataset(args.dataset)
    x, y = ds.test_x[:args.images].float() / 255, ds.test_y[:args.images]
    missing = {}
    for name in args.peers:
        why = available(PEERS[name][1])
        if why is not None:
            missing[name] = why
            print(f"{name} is not installed or does not import ({why}); install it with "
                  f"`pip install --no-deps torchattacks adversarial-robustness-toolbox six`; skipping it", flush=True)
    results["missing"] = missing
    for path in args.models:
        model = load_checkpoint(path, dataset=args.dataset)[0].eval()
        with torch.no_grad():
            clean = (model(x).argmax(1) == y)
        key = pathlib.Path(path).name
        res = results.setdefault("models", {}).setdefault(key, {"path": path})
        res["clean_accuracy"] = clean.float().mean().item()
        ours(model, x[:args.batch], y[:args.batch], args.eps, args.alpha, 2, args.batch)  # warm-up
        names = [n for n in args.peers if n not in missing]
        times = {n: [] for n in names}
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                torch.manual_seed(rnd)
                tick = time.perf_counter()
                adv = PEERS[name][0](model, x, y, args.eps, args.alpha, args.steps, args.batch)
                times[name].append(time.perf_counter() - tick)
                with torch.no_grad():
                    pred = model(adv).argmax(1)
                ra = (clean & (pred == y)).float().mean().item()
                entry = res.setdefault(name, {"robust_accuracy_per_round": [], "max_linf": 0.0})
                if rnd == 0:
                    entry["robust_accuracy_per_round"] = []
                entry["robust_accuracy_per_round"].append(ra)
                entry["max_linf"] = max(entry["max_linf"] if rnd else 0.0, (adv - x).abs().amax().item())
                print(f"{key} round {rnd} {name}: {times[name][-1]:.1f} s, robust accuracy {ra:.4f}", flush=True)
        for name in names:
            med = float(np.median(times[name]))
            res[name].update(seconds_per_round=[round(t, 2) for t in times[name]], median_seconds=round(med, 2),
                             images_per_second=round(len(y) / med, 1),
                             robust_accuracy=float(np.mean(res[name]["robust_accuracy_per_round"])))
            print(f"{key} {name}: {res[name]}", flush=True)
        save()
        base = res.get("backdoorlab")
        for name in args.peers:
            if name != "backdoorlab" and name in res and base:
                res[name]["speed_ratio_ours_over_theirs"] = round(base["images_per_second"] /
                                                                  res[name]["images_per_second"], 3)
                res[name]["robust_accuracy_gap_points"] = round(100 * (base["robust_accuracy"] -
                                                                       res[name]["robust_accuracy"]), 2)
        save()
    print(f"machine: {results['machine']}")


if __name__ == "__main__":
    main()
