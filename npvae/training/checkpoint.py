"""Checkpoints: one ``.npz`` (loaded with ``allow_pickle=False``) holding weights, optimizer state, RNG
state and progress, plus a human-readable ``config.json`` beside it. Both are written atomically: a
temporary file in the same directory, then ``os.replace``, so a crash never leaves a half-written file
and the previous checkpoint survives until the new one is complete.
"""

import json
from pathlib import Path

import numpy as np

from npvae.fileio import atomic_write_bytes, atomic_write_text

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.npz"
CONFIG_NAME = "config.json"
BEST_NAME = "best.npz"          # the epoch of lowest validation metric (--select best-val)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or for another architecture."""


def save_checkpoint(run_dir, *, model, optimizer, rng, epoch, config, history=None, name=CHECKPOINT_NAME,
                    selection=None):
    """Write ``run_dir/checkpoint.npz`` and ``run_dir/config.json`` atomically.

    model: has ``params`` (dict of arrays) and ``kind``; optimizer: has ``state_dict()``; rng: the
    training Generator; epoch: number of completed epochs; config: JSON-able dict (model + training).
    name: another file name (e.g. BEST_NAME: then config.json is left alone); selection: JSON-able, kept
    in the metadata (best.npz: {"metric": "val_error", "value": ...}).
    """
    run_dir = Path(run_dir)
    arrays = {f"param/{k}": v for k, v in model.params.items()}
    arrays.update({f"optim/{k}": np.asarray(v) for k, v in optimizer.state_dict().items()})
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": model.kind,
        "epoch": int(epoch),
        "config": config,
        "rng_state": rng.bit_generator.state,
        "history": history or [],
    }
    if selection is not None:
        meta["selection"] = selection
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write_bytes(run_dir / name, lambda f: np.savez(f, **arrays))
    if name != CHECKPOINT_NAME:
        return
    atomic_write_text(run_dir / CONFIG_NAME, json.dumps({k: meta[k] for k in ("kind", "epoch", "config")},
                                                        indent=2) + "\n")


def load_checkpoint(path):
    """Read a checkpoint file (or a run directory holding checkpoint.npz) with ``allow_pickle=False``.

    Returns dict with keys params, optim, meta (kind, epoch, config, rng_state, history).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; train first (npvae train ... --out DIR)")
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            params = {k[len("param/"):]: f[k] for k in f.files if k.startswith("param/")}
            optim = {k[len("optim/"):]: f[k] for k in f.files if k.startswith("optim/")}
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {meta.get('format_version')}, "
                              f"this npvae reads version {FORMAT_VERSION}")
    return {"params": params, "optim": optim, "meta": meta}


def load_params_into(model, params, source="checkpoint"):
    """Copy saved arrays into ``model.params`` in place, after checking names, shapes and dtypes."""
    want, got = set(model.params), set(params)
    if want != got:
        missing, extra = sorted(want - got), sorted(got - want)
        raise CheckpointError(
            f"{source} was saved from a different architecture: missing parameters {missing[:5]}, "
            f"unexpected {extra[:5]}; build the model with the checkpoint's config"
        )
    for k, p in model.params.items():
        if params[k].shape != p.shape:
            raise CheckpointError(
                f"{source} was saved from a different architecture: parameter {k} has shape "
                f"{params[k].shape}, the model expects {p.shape}; build the model with the checkpoint's config"
            )
    for k, p in model.params.items():
        p[...] = params[k].astype(p.dtype, copy=False)


def restore_rng(state):
    """A Generator positioned exactly where the saved one was."""
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)
