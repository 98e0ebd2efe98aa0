"""Where an all-to-all backdoor's ASR goes: per source label, and split by whether the model gets the clean
image right.

    BACKDOORLAB_DATA=../shared/data python benchmarks/exploration/all_to_all_breakdown.py MODEL_DIR [--dataset D]

An all-to-all trigger asks for label i -> i + 1, so the model has to recognise i first; a triggered image whose
clean version the model gets wrong rarely lands on i + 1. This prints CA and ASR per source label, the ASR on
the test images the model classifies correctly and on those it does not, and how often the triggered prediction
is the clean *prediction* plus one (the mapping applied to what the model saw).
"""

from __future__ import annotations

import argparse
import json

from backdoorlab.data import load_dataset
from backdoorlab.errors import BackdoorlabError
from backdoorlab.metrics import predict
from backdoorlab.attacks import backdoor_of
from backdoorlab.models import load_for


def breakdown(model, backdoor, x, y, num_classes: int) -> dict:
    if backdoor is None or backdoor.mode != "all-to-all":
        raise BackdoorlabError("the model's sidecar records no all-to-all backdoor")
    clean = predict(model, x)
    triggered = predict(model, x, transform=backdoor.trigger.apply)
    wanted = (y + 1) % num_classes
    right = clean == y
    hit = triggered == wanted
    rate = lambda mask: int(mask.sum()) / len(mask) if len(mask) else float("nan")
    return {"clean_accuracy": rate(right), "attack_success_rate": rate(hit),
            "asr_on_correctly_classified": rate(hit[right]), "asr_on_misclassified": rate(hit[~right]),
            "share_misclassified": rate(~right),
            "triggered_is_clean_prediction_plus_one": rate(triggered == (clean + 1) % num_classes),
            "per_source": {str(c): {"clean_accuracy": rate(right[y == c]), "attack_success_rate": rate(hit[y == c]),
                                    "asr_on_correctly_classified": rate(hit[(y == c) & right])}
                           for c in range(num_classes)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--dataset", default="cifar10")
    args = ap.parse_args()
    try:
        ds = load_dataset(args.dataset)
        model, meta = load_for(args.model, ds)
        r = breakdown(model, backdoor_of(meta), ds.test_x, ds.test_y, ds.num_classes)
    except BackdoorlabError as e:
        ap.exit(2, f"error: {e}\n")
    names = meta.get("class_names") or [str(c) for c in range(ds.num_classes)]
    print(f"CA {100 * r['clean_accuracy']:.2f}%  ASR {100 * r['attack_success_rate']:.2f}%  "
          f"ASR on correctly classified {100 * r['asr_on_correctly_classified']:.2f}%  "
          f"on misclassified ({100 * r['share_misclassified']:.2f}% of the test set) "
          f"{100 * r['asr_on_misclassified']:.2f}%  triggered = clean prediction + 1: "
          f"{100 * r['triggered_is_clean_prediction_plus_one']:.2f}%")
    print("| source -> target | CA | ASR | ASR on correctly classified |\n| --- | --- | --- | --- |")
    for c, e in r["per_source"].items():
        c = int(c)
        print(f"| {names[c]} -> {names[(c + 1) % ds.num_classes]} | {100 * e['clean_accuracy']:.1f}% | "
              f"{100 * e['attack_success_rate']:.1f}% | {100 * e['asr_on_correctly_classified']:.1f}% |")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
