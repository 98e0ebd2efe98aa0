"""Checkpoints: a directory holding ``model.safetensors`` (the state dict) and ``model.json`` (metadata).

``model.json`` is the caller's metadata (``arch``, ``arch_args``, ``dataset`` and any JSON-serialisable extras)
plus ``format``, ``format_version``, ``created``, ``backdoorlab_version`` and ``weights_sha256`` (the hash of
``model.safetensors``, so a weights file that does not belong to its sidecar is detected on load). What the
caller's metadata holds (field names, order, types) is :mod:`backdoorlab.models.sidecar`'s schema.

Saves are atomic: both files are written to temporary files in the directory first, then renamed onto the
final names, safetensors first and JSON last.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
from typing import Any, Mapping

import safetensors.torch
import torch
from torch import nn

import backdoorlab
from backdoorlab.errors import BackdoorlabError, first_line
from backdoorlab.io import atomic_path, atomic_write_text, write_synced
from backdoorlab.models.external import is_external, same_architecture
from backdoorlab.models.ensemble import ARCH as ENSEMBLE
from backdoorlab.models.registry import create_model

FORMAT = "backdoorlab-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
REQUIRED_META = ("arch", "arch_args", "dataset")
REQUIRED_ARCH_ARGS = ("num_classes", "in_channels", "input_size", "mean", "std")
_WRITER_FIELDS = ("format", "format_version", "created", "backdoorlab_version", "weights_sha256")
_PROTECTED = (*_WRITER_FIELDS, "arch", "arch_args")  # update_checkpoint_meta may not change these


def _few(keys: list[str], n: int = 3) -> str:
    text = ", ".join(repr(k) for k in keys[:n])
    return text + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _state_mismatch(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> str:
    """Describe how state dict ``got`` differs from ``expected`` (keys, shapes) in one line; '' if it fits."""
    missing = [k for k in expected if k not in got]
    unexpected = sorted(k for k in got if k not in expected)
    shapes = [
        f"{k!r} {list(got[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in got and tuple(got[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected {_few(unexpected)}")
    if shapes:
        more = f" (+{len(shapes) - 3} more)" if len(shapes) > 3 else ""
        parts.append(f"shape mismatch {', '.join(shapes[:3])}{more}")
    return "; ".join(parts)


def _check_meta(meta: Any, where: str) -> None:
    """Raise unless ``meta`` is a dict with a str ``arch``, a dict ``arch_args`` and a str ``dataset``."""
    if not isinstance(meta, dict):
        raise BackdoorlabError(f"{where} must be a JSON object, got {type(meta).__name__}")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise BackdoorlabError(f"{where} lacks {_few(missing)}")
    if not isinstance(meta["arch"], str) or not isinstance(meta["dataset"], str):
        raise BackdoorlabError(f"{where}: 'arch' and 'dataset' must be strings")
    if not isinstance(meta["arch_args"], dict):
        raise BackdoorlabError(f"{where}: 'arch_args' must be an object, got {type(meta['arch_args']).__name__}")


def _dumps(meta: dict) -> str:
    try:
        return json.dumps(meta, indent=2) + "\n"
    except (TypeError, ValueError) as e:
        raise BackdoorlabError(f"checkpoint metadata is not JSON-serialisable: {e}") from None


def save_checkpoint(model: nn.Module, out_dir: str | os.PathLike, meta: dict) -> pathlib.Path:
    """Save ``model``'s state dict (buffers included) and ``meta`` to ``out_dir``; return ``out_dir``.

    ``meta`` needs ``arch`` (str), ``arch_args`` (dict: num_classes, in_channels, input_size, mean, std; what
    ``create_model`` takes) and ``dataset`` (str); if ``arch``/``arch_args`` are absent, the ``model.arch`` /
    ``model.arch_args`` set by ``create_model`` are used. Other JSON-serialisable fields are kept as they are.
    Fails (BackdoorlabError) before writing anything if the state dict does not fit ``arch``/``arch_args``.
    """
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    if not isinstance(meta, Mapping):
        raise BackdoorlabError(f"checkpoint meta must be a dict, got {type(meta).__name__}")
    meta = dict(meta)
    for key in ("arch", "arch_args"):
        if key not in meta and hasattr(model, key):
            meta[key] = getattr(model, key)
    _check_meta(meta, "checkpoint meta")
    missing_args = [k for k in REQUIRED_ARCH_ARGS if k not in meta["arch_args"]]
    if missing_args:
        raise BackdoorlabError(f"checkpoint meta 'arch_args' lacks {_few(missing_args)}")

    state = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise BackdoorlabError(f"cannot save non-tensor state {key!r} ({type(value).__name__})")
        state[key] = value.detach().to("cpu").clone(memory_format=torch.contiguous_format)
    with torch.device("meta"):  # shapes only: cheap even for big models
        reference = create_model(meta["arch"], **meta["arch_args"]).state_dict()
    problems = _state_mismatch(reference, state)
    if problems:
        raise BackdoorlabError(f"model does not fit architecture {meta['arch']!r} with the given arch_args: {problems}")

    weights = safetensors.torch.save(state, metadata={"format": "pt"})
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "backdoorlab_version": backdoorlab.__version__,
    }
    record.update((k, v) for k, v in meta.items() if k not in _WRITER_FIELDS)
    record["weights_sha256"] = hashlib.sha256(weights).hexdigest()
    text = _dumps(record)

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Exiting the inner context renames the weights first, then the outer one renames the JSON; on any error
    # both temporary files are removed.
    with atomic_path(out_dir / META_FILE) as json_tmp, atomic_path(out_dir / WEIGHTS_FILE) as weights_tmp:
        write_synced(weights_tmp, weights)
        write_synced(json_tmp, text.encode("utf-8"))
    return out_dir


def _checkpoint_dir(path: str | os.PathLike) -> pathlib.Path:
    """The checkpoint directory for ``path``: a directory, or its model.json / model.safetensors."""
    p = pathlib.Path(path)
    if p.is_dir():
        return p
    if not p.exists():
        raise BackdoorlabError(f"checkpoint {p} does not exist")
    if p.name not in (META_FILE, WEIGHTS_FILE):
        raise BackdoorlabError(f"checkpoint {p} is neither a directory nor a {META_FILE} / {WEIGHTS_FILE} file")
    return p.parent


def _read_meta(directory: pathlib.Path) -> dict:
    """Read and validate ``directory/model.json``."""
    path = directory / META_FILE
    if not path.is_file():
        raise BackdoorlabError(f"checkpoint {directory} has no {META_FILE}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BackdoorlabError(f"checkpoint {path} is not readable JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BackdoorlabError(f"checkpoint {path} is not a backdoorlab checkpoint (no \"format\": \"{FORMAT}\")")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BackdoorlabError(
            f"checkpoint {path} has format_version {version!r}; this backdoorlab reads up to {FORMAT_VERSION}"
        )
    _check_meta(meta, f"checkpoint {path}")
    return meta


def read_meta(path: str | os.PathLike) -> dict:
    """The validated sidecar (``model.json``) of a checkpoint: its directory or either of its files."""
    return _read_meta(_checkpoint_dir(path))


def checked_meta(path: str | os.PathLike, arch: str | None = None, dataset: str | None = None) -> dict:
    """The sidecar of a checkpoint checked, before anything is built or loaded, against the architecture the
    caller names (:func:`allowed_architecture`) and the data set (a canonical name; None: any)."""
    meta = allowed_architecture(read_meta(path), arch, path)
    if dataset is not None and meta["dataset"] != dataset:
        raise BackdoorlabError(f"checkpoint {path} was trained on {meta['dataset']!r}, not {dataset!r}")
    return meta


def load_checkpoint(
    path: str | os.PathLike, arch: str | None = None, dataset: str | None = None, map_location="cpu"
) -> tuple[nn.Module, dict]:
    """Load a checkpoint saved by :func:`save_checkpoint`; return ``(model.eval(), meta)``.

    ``path`` is the checkpoint directory or either of its files. If ``arch`` / ``dataset`` are given they must
    match the checkpoint's. The model is re-created with ``create_model(meta["arch"], **meta["arch_args"])``,
    the state dict loaded strictly, and the model moved to ``map_location`` (None: leave on CPU).

    A checkpoint of an architecture defined in the user's own code (``file.py:NAME``, ``module:NAME``) loads only
    when ``arch`` names that architecture (:func:`allowed_architecture`): the sidecar alone never makes
    backdoorlab import code.
    """
    directory = _checkpoint_dir(path)
    meta = checked_meta(path, arch, dataset)

    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise BackdoorlabError(f"checkpoint {directory} has no {WEIGHTS_FILE}")
    try:
        data = weights_path.read_bytes()
        state = safetensors.torch.load(data)
    except Exception as e:  # safetensors raises its own error types for bad headers / truncated data
        raise BackdoorlabError(f"checkpoint {weights_path} is corrupt or truncated: {first_line(e)}") from None
    expected_sha = meta.get("weights_sha256")
    if expected_sha is not None and hashlib.sha256(data).hexdigest() != expected_sha:
        raise BackdoorlabError(
            f"checkpoint {weights_path} does not match its {META_FILE} "
            "(sha256 differs: an interrupted save or a replaced file)"
        )

    try:
        model = create_model(meta["arch"], **meta["arch_args"])
    except BackdoorlabError as e:
        raise BackdoorlabError(f"checkpoint {path}: {e}") from None
    problems = _state_mismatch(model.state_dict(), state)
    if problems:
        raise BackdoorlabError(f"checkpoint {weights_path} does not fit architecture {meta['arch']!r}: {problems}")
    model.load_state_dict(state, strict=True)
    if map_location is not None:
        model.to(map_location)
    return model.eval(), meta


def code_named_by(meta: Mapping) -> str | None:
    """The code outside backdoorlab that building a checkpoint's model would import and run (its architecture, or
    an ensemble's member architecture, when that is ``file.py:NAME`` / ``module:NAME``); None if none."""
    if is_external(meta["arch"]):
        return meta["arch"]
    member = meta["arch_args"].get("member") if meta["arch"] == ENSEMBLE else None
    return member if is_external(member) else None


def allowed_architecture(meta: dict, arch: str | None, path) -> dict:
    """``meta`` checked against the architecture the caller named (``arch``; None: none named), with a named
    architecture of the user's own code put in place of the recorded one, so that the code that runs is the code
    the user named; raise (one line) if the checkpoint needs code that was not named, or is of another
    architecture."""
    code = code_named_by(meta)
    if code is None:
        if arch is not None and meta["arch"] != arch:
            raise BackdoorlabError(f"checkpoint {path} is for architecture {meta['arch']!r}, not {arch!r}")
        return meta
    if arch is None or not is_external(arch):
        raise BackdoorlabError(f"checkpoint {path} is built by code outside backdoorlab, {code!r}, which loading "
                               f"would import and run; to allow it, name it: --arch {code} (arch= in Python)")
    if not same_architecture(arch, code):
        raise BackdoorlabError(f"checkpoint {path} is for architecture {code!r}, not {arch!r}")
    if meta["arch"] == ENSEMBLE:
        return {**meta, "arch_args": {**meta["arch_args"], "member": arch}}
    return {**meta, "arch": arch}


def update_checkpoint_meta(path: str | os.PathLike, updates: dict) -> dict:
    """Merge ``updates`` into a checkpoint's ``model.json`` (rewritten atomically); return the new metadata.

    The fields that tie the JSON to its weights (arch, arch_args, format*, created, backdoorlab_version,
    weights_sha256) cannot be changed.
    """
    directory = _checkpoint_dir(path)
    meta = _read_meta(directory)
    protected = [k for k in updates if k in _PROTECTED]
    if protected:
        raise BackdoorlabError(f"cannot change checkpoint field(s) {_few(protected)} of {path}")
    meta.update(updates)
    atomic_write_text(directory / META_FILE, _dumps(meta))
    return meta
