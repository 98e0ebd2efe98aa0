"""Time a few steps of each piece of `path-backdoor` on the CIFAR-10 resnet20 BadNets suspect (the white-trigger
suspect of results.md; its path is the first argument), to estimate what the CIFAR-10 row would cost.

    BACKDOORLAB_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/exploration/path_backdoor_cifar_timing.py \\
        bench-out/cifar10-white/endpoint-1

Prints the seconds (wall) of: the permutation, one curve step, batch norm re-estimated on 5,000 images, ASR on
1,000 images, one hardening step."""
import json
import sys
import time

import torch
from backdoorlab.data import load_dataset
from backdoorlab.models import load_checkpoint
from backdoorlab.attacks import backdoor_of
from backdoorlab.budget import training_part, CleanBudget
from backdoorlab.attacks.path_backdoor import PathBackdoorConfig, PoisonHook, CurvePointWeights
from backdoorlab.defenses.mode_connectivity import ModeConnectivitySanitizer
from backdoorlab.defenses.finetune import finetune
from backdoorlab.train import TrainConfig
torch.set_num_threads(1)
ds = load_dataset("cifar10")
model, meta = load_checkpoint(sys.argv[1])
bd = backdoor_of(meta)
x, y = training_part(ds)
g = torch.Generator().manual_seed(0)
pick = torch.randperm(len(y), generator=g)[:5000]
x, y = x[pick], y[pick]
att = CleanBudget(x, y, torch.arange(len(y)))
out = {}
steps = 20
cfg = PathBackdoorConfig(curve_steps=steps, augment="crop-flip-jpeg")
b = ModeConnectivitySanitizer(cfg.sanitizer_config(steps, 0), progress=False)
t = time.time(); partner, _ = b.make_permuted_endpoint(model.eval(), att); out["permute_s"] = time.time() - t
t = time.time(); curve = b.fit_curve(model, partner, att, batch_hook=PoisonHook(bd, 10, 0.25, 7)); out["curve_step_s"] = (time.time() - t) / steps
t = time.time(); m = curve.model_at(0.5, bn_data=x); out["model_at_bn_5000_s"] = time.time() - t
t = time.time(); bd.measure(m, x[:1000], y[:1000], 10); out["measure_1000_s"] = time.time() - t
w = CurvePointWeights(dict(zip(curve.names, curve.control)), curve.theta2, 0.2, 1)
tc = TrainConfig(epochs=0, steps=steps, lr=0.01, augment="crop-flip-jpeg", seed=2)
t = time.time(); finetune(m, x, y, tc, progress=False, batch_hook=PoisonHook(bd, 10, 0.25, 3), weights_at=w); out["harden_step_s"] = (time.time() - t) / steps
print(json.dumps(out))
