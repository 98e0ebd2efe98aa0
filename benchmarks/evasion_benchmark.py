"""Benchmark: evasion attacks and defenses on MNIST small-cnn, and robustness along a curve.

Stages (each resumable: finished models and results in OUT/results.json are reused):
  models    a standard model, a PGD adversarially trained model, a defensively distilled model (OUT/<name>/)
  standard  FGSM and PGD (eps 0.3, 40 steps) against the standard model         target: robust accuracy < 2%
  adv       PGD (eps 0.3, 40 steps; and restarts) against the adversarially trained model
                                                                          target: robust >= 88%, clean >= 98%
  jpeg      the standard model behind JPEG: PGD through the exact transform vs PGD with BPDA
  distill   the distilled model: PGD on cross-entropy vs PGD on the logit margin
  path      curve between the standard and the adversarially trained model: clean/robust loss and accuracy and
            the input-Hessian top eigenvalue at each t, their Pearson correlation, the figure

    BACKDOORLAB_DATA=/work/shared/data OMP_NUM_THREADS=1 taskset -c 1 \\
        python benchmarks/evasion_benchmark.py --stage all --out bench-out/evasion/mnist
"""

from __future__ import annotations

import argparse
import time

import torch

from backdoorlab.data import load_dataset
from backdoorlab.models import load_checkpoint
from backdoorlab.train import TrainConfig
from common import machine, open_results

STAGES = ["models", "standard", "adv", "jpeg", "distill", "path"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--arch", default="small-cnn")
    ap.add_argument("--out", default="bench-out/evasion/mnist")
    ap.add_argument("--stage", nargs="+", default=["all"], choices=["all", *STAGES, "report"],
                    help="report: print Markdown tables from OUT/results.json and exit")
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--eval-steps", type=int, default=40)
    ap.add_argument("--eval-images", type=int, default=10000, help="test images for the standard/adv evaluation")
    ap.add_argument("--epochs", type=int, default=3, help="standard and distilled models")
    ap.add_argument("--adv-epochs", type=int, default=6)
    ap.add_argument("--adv-steps", type=int, default=10)
    ap.add_argument("--adv-step-size", type=float, default=0.04)
    ap.add_argument("--adv-warmup", type=float, default=0.1)
    ap.add_argument("--adv-lr", type=float, default=0.05)
    ap.add_argument("--temperature", type=float, default=100.0)
    ap.add_argument("--jpeg-quality", type=int, default=75)
    ap.add_argument("--jpeg-eps", type=float, default=0.3)
    ap.add_argument("--defense-images", type=int, default=1000, help="test images for the jpeg/distill stages")
    ap.add_argument("--path-images", type=int, default=1000)
    ap.add_argument("--path-eps", type=float, default=0.3)
    ap.add_argument("--path-steps", type=int, default=20)
    ap.add_argument("--curve-steps", type=int, default=2000)
    ap.add_argument("--grid", type=int, default=11)
    ap.add_argument("--path-name", default="path",
                    help="results key and directory of the path stage; another name reuses the curve of 'path'")
    ap.add_argument("--models", nargs="+", default=["standard", "adversarial", "distilled"],
                    help="which models the models stage trains")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    stages = STAGES if "all" in args.stage else args.stage
    out, results, save = open_results(args.out)
    if "report" in stages:
        report(results)
        return
    results.update(dataset=args.dataset, arch=args.arch, machine=machine())
    ds = load_dataset(args.dataset)
    test_x, test_y = ds.test_x, ds.test_y

    from backdoorlab.evasion import FGSM, PGD, AdvTrainConfig, JpegDefense, robust_accuracy
    from backdoorlab.runs import defended_train_run

    paths = {k: out / k for k in ("standard", "adversarial", "distilled")}
    if "models" in stages:
        results.setdefault("models", {})
        specs = {
            "standard": dict(cfg=TrainConfig(epochs=args.epochs, lr=0.05, batch_size=128, seed=0)),
            "adversarial": dict(cfg=TrainConfig(epochs=args.adv_epochs, lr=args.adv_lr, batch_size=128, seed=0),
                                adv=AdvTrainConfig(eps=args.eps, steps=args.adv_steps, step_size=args.adv_step_size,
                                                   warmup=args.adv_warmup)),
            "distilled": dict(cfg=TrainConfig(epochs=args.epochs, lr=0.05, batch_size=128, seed=0),
                              distill_temperature=args.temperature),
        }
        for name, spec in specs.items():
            if name not in args.models or (paths[name] / "model.json").exists():
                continue
            tick = time.time()
            _, meta = defended_train_run(ds, args.arch, spec.pop("cfg"), str(paths[name]), progress=args.progress,
                                     **spec)
            results["models"][name] = {"clean_accuracy": meta["metrics"]["clean_accuracy"],
                                       "train_seconds": meta["training"]["seconds"],
                                       "training": meta["training"], "defense": meta["provenance"]["evasion_defense"],
                                       "wall_seconds": round(time.time() - tick, 1)}
            print(f"model {name}: CA {meta['metrics']['clean_accuracy']:.4f} in {meta['training']['seconds']:.0f} s",
                  flush=True)
            save()

    def load(name):
        return load_checkpoint(paths[name], dataset=args.dataset)[0]

    def record(key, model, attack, x, y, **extra):
        if key in results.get("evaluations", {}):
            print(f"{key}: (cached) {results['evaluations'][key]}", flush=True)
            return results["evaluations"][key]
        tick = time.time()
        r = robust_accuracy(model, attack, x, y, progress=args.progress)
        r.update(seconds=round(time.time() - tick, 1), attack=attack.config(), **extra)
        results.setdefault("evaluations", {})[key] = r
        print(f"{key}: clean {r['clean_accuracy']:.4f} robust {r['robust_accuracy']:.4f} "
              f"({r['seconds']:.0f} s)", flush=True)
        save()
        return r

    n = min(args.eval_images, len(test_y))
    if "standard" in stages:
        m = load("standard")
        record("standard/fgsm", m, FGSM(m, args.eps), test_x[:n], test_y[:n])
        record("standard/pgd", m, PGD(m, args.eps, steps=args.eval_steps), test_x[:n], test_y[:n])

    if "adv" in stages:
        m = load("adversarial")
        record("adversarial/fgsm", m, FGSM(m, args.eps), test_x[:n], test_y[:n])
        record("adversarial/pgd", m, PGD(m, args.eps, steps=args.eval_steps), test_x[:n], test_y[:n])
        record("adversarial/pgd-step0.01", m, PGD(m, args.eps, steps=args.eval_steps, step_size=0.01),
               test_x[:n], test_y[:n])
        k = min(n, 1000)
        record("adversarial/pgd-margin-5restarts", m, PGD(m, args.eps, steps=args.eval_steps, restarts=5,
                                                          loss="margin"), test_x[:k], test_y[:k])

    nd = min(args.defense_images, len(test_y))
    if "jpeg" in stages:
        m = load("standard")
        d = JpegDefense(m, args.jpeg_quality)
        x, y = test_x[:nd], test_y[:nd]
        q = args.jpeg_quality
        record("standard/pgd-defense-subset", m, PGD(m, args.jpeg_eps, steps=args.eval_steps), x, y)
        record(f"jpeg{q}/pgd-through-jpeg", d, PGD(d, args.jpeg_eps, steps=args.eval_steps), x, y)
        record(f"jpeg{q}/pgd-transfer-from-undefended", d,
               _Transfer(PGD(m, args.jpeg_eps, steps=args.eval_steps)), x, y)
        record(f"jpeg{q}/pgd-bpda", d, PGD(d.attackable(True), args.jpeg_eps, steps=args.eval_steps), x, y)
        for eps in (0.1,):
            record(f"jpeg{q}/pgd-through-jpeg-eps{eps}", d, PGD(d, eps, steps=args.eval_steps), x, y)
            record(f"jpeg{q}/pgd-bpda-eps{eps}", d, PGD(d.attackable(True), eps, steps=args.eval_steps), x, y)

    if "distill" in stages:
        m = load("distilled")
        x, y = test_x[:nd], test_y[:nd]
        with torch.no_grad():
            logits = m(x[:500].float() / 255)
            p = torch.softmax(logits, 1)
        results["distilled_saturation"] = {
            "fraction_max_prob_exactly_1": (p.max(1).values == 1.0).float().mean().item(),
            "mean_logit_range": (logits.max(1).values - logits.min(1).values).mean().item()}
        save()
        for eps in (0.1, 0.3):
            record(f"distilled/pgd-ce-eps{eps}", m, PGD(m, eps, steps=args.eval_steps), x, y)
            record(f"distilled/pgd-margin-eps{eps}", m, PGD(m, eps, steps=args.eval_steps, loss="margin"), x, y)
        sm = load("standard")
        for eps in (0.1,):
            record(f"standard/pgd-ce-eps{eps}-defense-subset", sm, PGD(sm, eps, steps=args.eval_steps), x, y)

    if "path" in stages and args.path_name not in results:
        from backdoorlab.runs import path_robustness_run
        tick = time.time()
        first = out / "path" / "curve.safetensors"
        curve_dir = str(first.parent) if args.path_name != "path" and first.exists() else None
        summary = path_robustness_run(ds, str(paths["standard"]), str(paths["adversarial"]), str(out / args.path_name),
                                      eps=args.path_eps, pgd_steps=args.path_steps, curve_steps=args.curve_steps,
                                      grid=args.grid, n_images=args.path_images, curve_dir=curve_dir,
                                      progress=args.progress)
        summary["wall_seconds"] = round(time.time() - tick, 1)
        results[args.path_name] = summary
        print(f"{args.path_name}: pearson(robust loss, eigenvalue) = "
              f"{summary['pearson']['robust_loss_vs_eigenvalue']:.3f} ({summary['wall_seconds']:.0f} s)", flush=True)
        for r in summary["path"]:
            print(f"  t={r['t']:.2f} clean {r['clean_loss']:.4f}/{r['clean_accuracy']:.4f} robust "
                  f"{r['robust_loss']:.4f}/{r['robust_accuracy']:.4f} eig {r['hessian_top_eigenvalue']:.4g}",
                  flush=True)
        save()
    save()


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}%"


def report(results: dict) -> None:
    """Markdown tables of everything in results.json."""
    print(f"machine: {results.get('machine')}\n")
    print("| model | training | train time | clean accuracy (10,000) |\n| --- | --- | --- | --- |")
    for name, m in results.get("models", {}).items():
        d = m.get("defense") or {}
        t = m["training"]
        what = {"pgd-adversarial-training": f"PGD-AT eps {d.get('eps')}, {d.get('steps')} steps of "
                                            f"{d.get('step_size')}, warmup {d.get('warmup')}",
                "defensive-distillation": f"distillation T = {d.get('temperature')}"}.get(d.get("method"), "standard")
        print(f"| {name} | {what}; {t['epochs']} epochs, lr {t['lr']}, batch {t['batch_size']} | "
              f"{t['seconds']:.0f} s | {_pct(m['clean_accuracy'])} |")
    print("\n| evaluation | attack | images | clean accuracy | robust accuracy | robust loss | time |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for key, r in results.get("evaluations", {}).items():
        a = r["attack"]
        desc = (f"{a['attack']} {a.get('norm', '')} eps {a.get('eps', 0):.3g}" +
                (f", {a['steps']} steps of {a['step_size']:.4g}" if a.get("steps", 1) > 1 else "") +
                (f", {a['restarts']} restarts" if a.get("restarts", 1) > 1 else "") +
                (f", loss {a['loss']}" if a.get("loss", "ce") != "ce" else "") +
                (" (transferred from the undefended model)" if a.get("transfer") else ""))
        print(f"| {key} | {desc} | {r['n']} | {_pct(r['clean_accuracy'])} | {_pct(r['robust_accuracy'])} | "
              f"{r['robust_loss']:.3f} | {r['seconds']:.0f} s |")
    if "distilled_saturation" in results:
        print(f"\ndistilled model saturation: {results['distilled_saturation']}")
    for key in [k for k in results if k.startswith("path")]:
        s = results[key]
        print(f"\n{key}: PGD eps {s['attack']['eps']}, {s['attack']['steps']} steps, {s['n_images']} images; "
              f"Hessian {s['hessian']}; curve {s['curve_source']}; {s['wall_seconds']:.0f} s")
        print(f"pearson {s['pearson']}\nbarrier {s['barrier']}\n")
        print("| t | clean loss | clean acc. | robust loss | robust acc. | top eigenvalue (mean) | (median) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in s["path"]:
            print(f"| {r['t']:.1f} | {r['clean_loss']:.4f} | {_pct(r['clean_accuracy'])} | {r['robust_loss']:.3f} | "
                  f"{_pct(r['robust_accuracy'])} | {r['hessian_top_eigenvalue']:.4g} | "
                  f"{r['hessian_top_eigenvalue_median']:.4g} |")


class _Transfer:
    """Attack the undefended model, then feed the result to the defended one (the defense-unaware attacker)."""

    def __init__(self, attack):
        self.attack = attack

    def __call__(self, images, labels):
        return self.attack(images, labels)

    def config(self):
        return {**self.attack.config(), "transfer": "from the undefended model"}


if __name__ == "__main__":
    main()
