#!/usr/bin/env bash
# The federated acceptance runs on MNIST (docs/federated.md): 100 clients, 10 per round, starting from a converged
# clean global model trained with `backdoorlab train --dataset mnist --arch small-cnn`; one attacker (client 0)
# with a BadNets backdoor (target 0); every federation from the same start:
#
#   replacement       model replacement (--boost auto = 10) in round ATTACK_ROUND, no defense, ROUNDS rounds
#   clip              the same attack against norm clipping (--defense clip --clip-norm auto: the median update norm
#                     of round 1)
#   constrain         constrain-and-scale against the same clipping (the attacker trains within bound / 10, then
#                     boosts), in round ATTACK_ROUND only
#   constrain-every   constrain-and-scale against the same clipping, the attacker in every round from ATTACK_ROUND on
#   replacement-last  the replacement run stopped right after its attack round: the backdoored global model that
#                     `backdoorlab sanitize` (one model, 1,000 clean images of the held-out pool) then repairs
#
#   bash benchmarks/federated_mnist.sh OUT
#   e.g. BACKDOORLAB_DATA=/data bash benchmarks/federated_mnist.sh bench-out/federated-mnist
#
# The attacker poisons 10% of its 600 images and trains 10 epochs at learning rate 0.005 from the global model (the
# benign clients: 2 epochs at 0.02): trained gently, its model keeps the main task, which model replacement then
# makes the global model. Environment: ROUNDS (default 20), ATTACK_ROUND (5), ATTACKER_EPOCHS (10), ATTACKER_LR
# (0.005), POISON_RATE (0.1), WORKERS (the CPU count), SEED (0). Every step resumes where a rerun finds its output
# (delete a run's folder to run it again). Needs pip install -e '.[federated]'. Prints CA / ASR before, right after
# the attack round and at the end, the sanitized model's, and writes OUT/rounds.png (every run's CA and ASR per
# round).
set -euo pipefail
out=$1
rounds=${ROUNDS:-20} attack_round=${ATTACK_ROUND:-5} seed=${SEED:-0}
attacker=(--attacker-epochs "${ATTACKER_EPOCHS:-10}" --attacker-lr "${ATTACKER_LR:-0.005}" --poison-rate "${POISON_RATE:-0.1}")
workers=${WORKERS:-$(nproc)}
mkdir -p "$out"
if [ ! -f "$out/clean/model.json" ]; then
  backdoorlab train --dataset mnist --arch small-cnn --seed "$seed" --no-progress --out "$out/clean" --json
fi
common=(--dataset mnist --arch small-cnn --clients 100 --per-round 10 --seed "$seed" --start-from "$out/clean"
        --attack badnets --target 0 --attacker-clients 0 "${attacker[@]}" --workers "$workers" --no-progress --json)
run() {  # NAME OPTIONS...
  local name=$1
  shift
  [ -f "$out/$name/global/model.json" ] && return 0
  backdoorlab federated "${common[@]}" "$@" --out "$out/$name" > "$out/$name.json"
}
run replacement --rounds "$rounds" --attack-rounds "$attack_round" --boost auto
run clip --rounds "$rounds" --attack-rounds "$attack_round" --boost auto --defense clip --clip-norm auto
run constrain --rounds "$rounds" --attack-rounds "$attack_round" --constrain-and-scale --defense clip --clip-norm auto
run constrain-every --rounds "$rounds" --attack-rounds "$attack_round-$rounds" --constrain-and-scale --defense clip \
    --clip-norm auto
run replacement-last --rounds "$attack_round" --attack-rounds "$attack_round" --boost auto
if [ ! -f "$out/sanitized/model.json" ]; then
  backdoorlab sanitize "$out/replacement-last/global" --dataset mnist --clean-budget 1000 --seed "$seed" \
      --no-progress --out "$out/sanitized" > /dev/null
fi
backdoorlab evaluate "$out/sanitized" --json > "$out/sanitized.json"
python benchmarks/federated_plot_runs.py "$out/rounds.png" replacement clip constrain constrain-every --root "$out" \
    --title "MNIST, small-cnn, 100 clients, 10 per round; one attacker (BadNets), attack from round $attack_round"
python - "$out" "$attack_round" <<'EOF'
import json, pathlib, sys
out, attack = pathlib.Path(sys.argv[1]), int(sys.argv[2])
pct = lambda v: f"{100 * v:.2f}"
print(f"{'run':<17} {'CA before':>10} {'ASR before':>10} {'CA after':>10} {'ASR after':>10} {'CA end':>8} "
      f"{'ASR end':>8}  attacker's update norm / clip bound  (CA, ASR: % of the MNIST test set; after: round {attack})")
for name in ("replacement", "clip", "constrain", "constrain-every", "replacement-last"):
    rounds = json.loads((out / name / "rounds.json").read_text())["rounds"]
    before, after, end = rounds[attack - 1], rounds[attack], rounds[-1]
    norm = dict(zip(after["clients"], after["update_norms"]))[0]
    print(f"{name:<17} {pct(before['clean_accuracy']):>10} {pct(before['attack_success_rate']):>10} "
          f"{pct(after['clean_accuracy']):>10} {pct(after['attack_success_rate']):>10} {pct(end['clean_accuracy']):>8} "
          f"{pct(end['attack_success_rate']):>8}  {norm:.3f} / {after['clip_norm'] or '-'}")
sanitized = json.loads((out / "sanitized.json").read_text())
print(f"sanitized (replacement-last/global, 1,000 clean images): CA {pct(sanitized['clean_accuracy'])}, "
      f"ASR {pct(sanitized['attack_success_rate'])}")
EOF
