#!/usr/bin/env bash
# The federated acceptance runs on MNIST (docs/federated.md): 100 clients, 10 per round, starting from a converged
# clean global model trained with `backdoorlab train --dataset mnist --arch small-cnn`; one attacker (client 0)
# replaces the model in one round with a BadNets backdoor; three federations from the same start:
#
#   replacement    model replacement (--boost auto = 10), no defense
#   clip           the same attack against norm clipping (--defense clip --clip-norm auto: the median update norm
#                  of round 1)
#   constrain      constrain-and-scale against the same clipping (the attacker trains within bound / 10, then boosts)
#
#   bash benchmarks/federated_mnist.sh OUT
#   e.g. BACKDOORLAB_DATA=/data bash benchmarks/federated_mnist.sh bench-out/federated-mnist
#
# Environment: ROUNDS (default 10), ATTACK_ROUND (5), ATTACKER_EPOCHS (6), WORKERS (the CPU count), SEED (0).
# Every step resumes where a rerun finds its output (delete a run's folder to run it again). Needs
# pip install -e '.[federated]'. Prints CA / ASR before, right after the attack round, and at the end.
set -euo pipefail
out=$1
rounds=${ROUNDS:-10} attack_round=${ATTACK_ROUND:-5} attacker_epochs=${ATTACKER_EPOCHS:-6} seed=${SEED:-0}
workers=${WORKERS:-$(nproc)}
mkdir -p "$out"
if [ ! -f "$out/clean/model.json" ]; then
  backdoorlab train --dataset mnist --arch small-cnn --seed "$seed" --no-progress --out "$out/clean" --json
fi
common=(--dataset mnist --arch small-cnn --clients 100 --per-round 10 --rounds "$rounds" --seed "$seed"
        --start-from "$out/clean" --attack badnets --target 0 --attacker-clients 0 --attack-rounds "$attack_round"
        --attacker-epochs "$attacker_epochs" --workers "$workers" --no-progress --json)
run() {  # NAME OPTIONS...
  local name=$1
  shift
  [ -f "$out/$name/global/model.json" ] && return 0
  backdoorlab federated "${common[@]}" "$@" --out "$out/$name" > "$out/$name.json"
}
run replacement --boost auto
run clip --boost auto --defense clip --clip-norm auto
run constrain --constrain-and-scale --defense clip --clip-norm auto
python - "$out" "$attack_round" <<'EOF'
import json, pathlib, sys
out, attack = pathlib.Path(sys.argv[1]), int(sys.argv[2])
print(f"{'run':<12} {'CA before':>10} {'ASR before':>10} {'CA after':>10} {'ASR after':>10} {'CA end':>8} "
      f"{'ASR end':>8}  attacker's update norm / clip bound  (CA, ASR: % of the MNIST test set; after: round {attack})")
for name in ("replacement", "clip", "constrain"):
    rounds = json.loads((out / name / "rounds.json").read_text())["rounds"]
    before, after, end = rounds[attack - 1], rounds[attack], rounds[-1]
    norm = dict(zip(after["clients"], after["update_norms"]))[0]
    pct = lambda v: f"{100 * v:.2f}"
    print(f"{name:<12} {pct(before['clean_accuracy']):>10} {pct(before['attack_success_rate']):>10} "
          f"{pct(after['clean_accuracy']):>10} {pct(after['attack_success_rate']):>10} {pct(end['clean_accuracy']):>8} "
          f"{pct(end['attack_success_rate']):>8}  {norm:.3f} / {after['clip_norm'] or '-'}")
EOF
