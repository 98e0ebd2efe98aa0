"""``backdoorlab transfer``: the victim's transfer-learning step. A teacher checkpoint is copied, its classifier
replaced by a new one for the student data set's classes, every layer but the last K frozen, and the rest trained
on the student data set's training part (outside its held-out pool). The student is saved as an ordinary
checkpoint whose provenance records the teacher and the teacher's backdoor as it applies to the student's labels
(:func:`backdoorlab.transfer.student_backdoor`), so that ``evaluate``, ``scan`` and ``sanitize`` measure it."""

from __future__ import annotations

import pathlib
import time

from .. import __version__
from ..attacks import backdoor_from_dict
from ..budget import default_holdout, training_part
from ..device import computes_on_device
from ..errors import BackdoorlabError
from ..io import atomic_write_json
from ..metrics import evaluate
from ..models import load_checkpoint, save_checkpoint
from ..models.layers import last_layers
from ..models.sidecar import build_sidecar, dataset_fields, holdout_record, planted_attack, training_record
from ..train import TrainConfig
from ..transfer import student_backdoor, student_model, train_last_layers
from .outputs import check_out_dir


@computes_on_device
def transfer_run(dataset, teacher_dir: str, out: str | None, trainable_layers: int, cfg: TrainConfig,
                 progress: bool = True, arch: str | None = None, device=None) -> tuple:
    """Build the student of the teacher in ``teacher_dir`` for ``dataset`` (see the module docstring): train its
    last ``trainable_layers`` layers with ``cfg``, evaluate it with the backdoor it inherits, and write it and
    ``config.json`` to ``out`` (None: write nothing). Returns ``(student, sidecar)``. A teacher of another input
    shape, an architecture without layers or K out of range is a one-line error before any training."""
    check_out_dir(out, "transfer", [teacher_dir])
    teacher, meta = load_checkpoint(teacher_dir, arch=arch)
    a = meta["arch_args"]
    want = [dataset.in_channels, *dataset.image_size]
    got = [a.get("in_channels"), *(a.get("input_size") or [])]
    if got != want:
        raise BackdoorlabError(f"teacher {teacher_dir} takes {'x'.join(map(str, got))} images ({meta['dataset']}), but "
                               f"{dataset.name} has {'x'.join(map(str, want))} images: a student keeps the teacher's "
                               f"input")
    trained = last_layers(teacher, trainable_layers)  # K out of range: one line naming the layers
    attack, note = student_backdoor(meta, dataset)
    backdoor = backdoor_from_dict(attack) if attack is not None else None
    student = student_model(teacher.to(device), dataset.num_classes, seed=cfg.seed)
    holdout = default_holdout(dataset.name)
    x, y = training_part(dataset, holdout)
    tick = time.time()
    trained, history = train_last_layers(student, trainable_layers, x, y, cfg, progress=progress)
    seconds = time.time() - tick
    metrics = evaluate(student, dataset.test_x, dataset.test_y, backdoor, dataset.num_classes)
    provenance = {"attack": attack, "transfer": {
        "teacher": str(teacher_dir), "teacher_dataset": meta["dataset"], "teacher_class_names": meta.get("class_names"),
        "teacher_attack": planted_attack(meta), "trainable_layers": trainable_layers, "trained_layers": trained,
        "backdoor": note}}
    sidecar = build_sidecar(meta["arch"], student.arch_args, dataset.name, **dataset_fields(dataset), seed=cfg.seed,
                            training=training_record(cfg, len(y), seconds, history), holdout=holdout_record(holdout),
                            provenance=provenance, metrics=metrics)
    if out is not None:
        save_checkpoint(student, out, sidecar)
        atomic_write_json(pathlib.Path(out) / "config.json", {
            "command": "transfer", "teacher": str(teacher_dir), "dataset": dataset.name,
            "trainable_layers": trainable_layers, "trained_layers": trained, "training": cfg.to_dict(),
            "backdoorlab_version": __version__})
    return student, sidecar
