#!/usr/bin/env bash
# Does the library run on a GPU, and how fast? Prints the card, then
#   1. MNIST end to end on $DEVICE through the CLI: train a BadNets small-cnn, evaluate it, sanitize it (one
#      suspect, a short curve), find its poisoned training images (detect-poison), with training throughput
#      (images/s) from the model's own record;
#   2. the smoke sweep (benchmarks/sweeps/smoke.toml) as Ray tasks asking half a GPU each;
#   3. one epoch of resnet20 on CIFAR-10 on $DEVICE, and the same number of steps on CPU, with images/s for each
#      and the speed-up (the CPU figure is skipped when DEVICE=cpu).
# Under 8 minutes on one H100 with 16 cores; no network (data in $BACKDOORLAB_DATA, else ./shared/data).
#   bash benchmarks/device_check.sh                    # DEVICE=cuda, full sizes
#   DEVICE=cpu QUICK=1 bash benchmarks/device_check.sh # a smoke test of the script on a CPU machine
# AMP=1 adds --amp (mixed precision) to the training steps.
set -euo pipefail
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
export BACKDOORLAB_DATA=${BACKDOORLAB_DATA:-$PWD/shared/data}
export PYTHONPATH=${PYTHONPATH:-$PWD/src}
PY=${PYTHON:-python}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/device_check.XXXXXX")
trap 'rm -rf "$OUT"' EXIT
amp=(); [ "${AMP:-0}" = 1 ] && amp=(--amp)
bl() { "$PY" -m backdoorlab.cli "$@"; }

if [ "$QUICK" = 1 ]; then epochs=1; steps=40; budget=400; cifar_steps=20; else epochs=3; steps=600; budget=1000; cifar_steps=0; fi

"$PY" - "$DEVICE" <<'PYEOF'
import sys, torch
from backdoorlab.device import describe, resolve_device
d = resolve_device(sys.argv[1])
print(f"torch {torch.__version__}; device {describe(d)}; CPU threads {torch.get_num_threads()}")
PYEOF

echo "== MNIST end to end on $DEVICE"
t0=$(date +%s)
bl train --dataset mnist --arch small-cnn --attack badnets --target 0 --epochs $epochs --seed 1 \
   --device "$DEVICE" "${amp[@]}" --out "$OUT/mnist" --no-progress
"$PY" - "$OUT/mnist/model.json" <<'PYEOF'
import json, sys
t = json.load(open(sys.argv[1]))["training"]
print(f"  training: {t['epochs'] * t['train_images']} images in {t['seconds']} s = "
      f"{t['epochs'] * t['train_images'] / max(t['seconds'], 1e-9):,.0f} images/s")
PYEOF
bl evaluate "$OUT/mnist" --device "$DEVICE" --json
bl sanitize "$OUT/mnist" --dataset mnist --clean-budget $budget --steps $steps --refine-steps 0 --grid 5 \
   --device "$DEVICE" "${amp[@]}" --out "$OUT/mnist-sanitized" --no-progress
t1=$(date +%s)
bl detect-poison "$OUT/mnist" --dataset mnist --clean-budget $budget --device "$DEVICE" --json --no-progress \
   | "$PY" -c "import json, sys; r = json.load(sys.stdin); print('  detect-poison:', {k: r.get(k) for k in ('flagged', 'precision', 'recall', 'seconds')})"
echo "  detect-poison: $(( $(date +%s) - t1 )) s"
echo "  MNIST end to end: $(( $(date +%s) - t0 )) s"

echo "== sweep: the smoke grid as Ray tasks sharing the GPU (two jobs per card)"
if "$PY" -c "import ray" 2>/dev/null; then
  t2=$(date +%s)
  gpus=0.5; [ "$DEVICE" = cpu ] && gpus=0
  bl sweep benchmarks/sweeps/smoke.toml --out "$OUT/sweep" --gpus-per-task $gpus --no-progress
  echo "  sweep: $(( $(date +%s) - t2 )) s"
else
  echo "  skipped: ray is not installed (pip install -e '.[distributed]')"
fi

echo "== CIFAR-10 resnet20, one epoch"
"$PY" - "$DEVICE" "$cifar_steps" "${AMP:-0}" <<'PYEOF'
import sys, time
import torch
from backdoorlab.data import load_dataset
from backdoorlab.device import mixed_precision, resolve_device
from backdoorlab.models import new_model
from backdoorlab.train import TrainConfig, train_model

device, steps, amp = resolve_device(sys.argv[1]), int(sys.argv[2]) or None, sys.argv[3] == "1"
ds = load_dataset("cifar10")
x, y = ds.train_x, ds.train_y

def throughput(dev, n_steps, use_amp=False):
    model = new_model("resnet20", ds, 0).to(dev)
    cfg = TrainConfig(epochs=1, steps=n_steps, batch_size=128, lr=0.1, augment="crop-flip")
    if dev.type == "cuda":
        torch.cuda.synchronize()
    tick = time.time()
    with mixed_precision(use_amp):
        history = train_model(model, x, y, cfg, progress=False)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - tick
    images = history["steps"] * cfg.batch_size
    print(f"  {dev}: {history['steps']} steps, {images} images in {seconds:.1f} s = {images / seconds:,.0f} images/s"
          f"{' (amp)' if use_amp else ''}")
    return images / seconds, history["steps"]

fast, done = throughput(device, steps, amp)
if device.type != "cpu":
    cpu_steps = min(done, 40)  # a slice of the epoch is enough to measure the CPU's rate
    slow, _ = throughput(torch.device("cpu"), cpu_steps)
    print(f"  speed-up {device.type} / cpu: {fast / slow:.1f}x")
PYEOF
echo "device check done"
