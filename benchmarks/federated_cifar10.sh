#!/usr/bin/env bash
# Model replacement on CIFAR-10, resnet20 (docs/federated.md): the MNIST acceptance attack on a harder task, with
# fewer rounds. 100 clients, 10 per round, starting from a converged clean global model; one attacker (client 0)
# with a BadNets backdoor (3x3 white patch, target 0) replaces the model in round ATTACK_ROUND, no defense.
#
#   bash benchmarks/federated_cifar10.sh OUT
#   e.g. BACKDOORLAB_DATA=/data START=bench-out/suspects/cifar10-clean bash benchmarks/federated_cifar10.sh \
#            bench-out/federated-cifar10
#
# START: the clean global model (default: trained here first, as docs/results.md's CIFAR-10 clean suspect was:
# `backdoorlab train --dataset cifar10 --arch resnet20 --epochs 30 --seed 1`, about 85 minutes on one
# core). Environment: ROUNDS (default 10), ATTACK_ROUND (3), LR (the clients' learning rate, 0.02),
# ATTACKER_EPOCHS (10), ATTACKER_LR (0.005), POISON_RATE (0.1), WORKERS (the CPU count), SEED (0). Prints CA / ASR per round.
set -euo pipefail
out=$1
rounds=${ROUNDS:-10} attack_round=${ATTACK_ROUND:-3} seed=${SEED:-0}
workers=${WORKERS:-$(nproc)}
mkdir -p "$out"
start=${START:-$out/clean}
if [ ! -f "$start/model.json" ]; then
  backdoorlab train --dataset cifar10 --arch resnet20 --epochs 30 --seed 1 --no-progress \
      --out "$start" --json
fi
if [ ! -f "$out/replacement/global/model.json" ]; then
  backdoorlab federated --dataset cifar10 --arch resnet20 --clients 100 --per-round 10 --rounds "$rounds" \
      --seed "$seed" --lr "${LR:-0.02}" --start-from "$start" --attack badnets --target 0 --attacker-clients 0 \
      --attack-rounds "$attack_round" --boost auto --attacker-epochs "${ATTACKER_EPOCHS:-10}" \
      --attacker-lr "${ATTACKER_LR:-0.005}" --poison-rate "${POISON_RATE:-0.1}" --workers "$workers" --no-progress \
      --json --out "$out/replacement" > "$out/replacement.json"
fi
python - "$out/replacement/rounds.json" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))
print("round  CA      ASR     seconds  (CA, ASR: % of the CIFAR-10 test set; * attack round)")
for r in data["rounds"]:
    mark = "*" if r.get("attack_round") else " "
    print(f"{r['round']:>3}{mark}  {100 * r['clean_accuracy']:6.2f}  {100 * r['attack_success_rate']:6.2f}  "
          f"{r.get('round_seconds') or 0:7.1f}")
EOF
