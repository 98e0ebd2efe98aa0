"""Run the sanitizer's Neural Cleanse check (``verify``) after the fact on a sanitize run's exported model.

A run made before the check existed can be compared with what the current code would do: the check reverses the
suspect's flagged labels on the exported model and places the mask norms among the suspect's (anomaly index);
when nothing is flagged on the export, the current code keeps the same choice. Uses the run's own budget, split
and configuration (``config.json``); prints one JSON object.

    python benchmarks/exploration/check_exported.py bench-out/defenses-cifar10-sym/repaired/badnets-white-mode-connectivity
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a sanitize output directory (model.json, config.json)")
    args = ap.parse_args()

    from common import load_saved_curve

    from backdoorlab.defenses.backdoor_check import BackdoorCheck
    from backdoorlab.pipeline import load_for

    saved = load_saved_curve(args.run)
    suspects = [m for m, _ in saved.loaded]
    exported, _ = load_for(str(pathlib.Path(args.run)), saved.dataset)
    check = BackdoorCheck.from_suspects(suspects, saved.fit_part.x, saved.dataset.num_classes, progress=False)
    check.check(exported, saved.fit_part.x, saved.sanitizer.config.verify_threshold, what="exported model")
    print(json.dumps({"run": args.run, **check.to_dict()}, indent=1))


if __name__ == "__main__":
    main()
