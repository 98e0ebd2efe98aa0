"""Why the hardened path backdoor loses its accuracy on CIFAR-10: fine-tune the paper's released model
(`attack path-backdoor` without hardening; its directory is the first argument) as one hardening round does, but
with the model's own weights only (no curve-point half), on the attacker's 5,000 images (the same pick as
`backdoorlab attack --attacker-images 5000 --seed 0`), poisoned as the hardening poisons them and clean; then score
each on those images with the fine-tuned running statistics, with batch norm re-estimated on the images as they
are (as the attack does before it releases a model) and re-estimated on them augmented as in training
(crop-flip-jpeg, as the sanitizer does for CIFAR-10).

    BACKDOORLAB_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/exploration/path_backdoor_hardening_check.py \\
        bench-out/path-backdoor-cifar10/suspects/paper-1

If plain fine-tuning at the hardening's rate keeps the accuracy, the collapse of the hardened model comes from the
curve-point half of the hardening loss (docs/results.md, "CIFAR-10, resnet20, 2,500 clean images:
one and two models")."""
import sys
import time

import torch
from backdoorlab.attacks import backdoor_of
from backdoorlab.attacks.path_backdoor import PoisonHook, _scores
from backdoorlab.augment import augment
from backdoorlab.budget import training_part
from backdoorlab.curves import reestimate_bn
from backdoorlab.data import load_dataset
from backdoorlab.defenses.finetune import finetune
from backdoorlab.models import load_for
from backdoorlab.models.sidecar import holdout_size
from backdoorlab.tensors import to_float
from backdoorlab.train import TrainConfig

torch.set_num_threads(1)
ds = load_dataset("cifar10")
model, meta = load_for(sys.argv[1], ds, None)
xt, yt = training_part(ds, holdout_size(meta, ds.name))
pick = torch.randperm(len(yt), generator=torch.Generator().manual_seed(0))[:5000]
x, y = xt[pick], yt[pick]
bd = backdoor_of(meta)
print("released", _scores(model, x, y, bd, 10), flush=True)
for name, poison in (("poisoned fine-tuning, lr 0.002, 300 steps", 0.25),
                     ("clean fine-tuning, lr 0.002, 300 steps", None)):
    tick = time.time()
    tc = TrainConfig(epochs=0, steps=300, lr=0.002, batch_size=128, weight_decay=5e-4, augment="crop-flip-jpeg",
                     seed=102)
    tuned = finetune(model, x, y, tc, progress=False, batch_hook=PoisonHook(bd, 10, poison, 103) if poison else None)
    print(name, "running statistics", _scores(tuned, x, y, bd, 10), flush=True)
    reestimate_bn(tuned, x)
    print(name, "re-estimated", _scores(tuned, x, y, bd, 10), flush=True)
    reestimate_bn(tuned, augment(to_float(x), "crop-flip-jpeg", torch.Generator().manual_seed(3)))
    print(name, "re-estimated on augmented images", _scores(tuned, x, y, bd, 10), f"{time.time() - tick:.0f} s",
          flush=True)
