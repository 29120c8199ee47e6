"""Checkpoints: one ``.npz`` (loaded with ``allow_pickle=False``) holding weights, optimizer state, RNG
state, the run's config and its whole history. The checkpoint is the run's single source of truth:
``config.json`` and ``history.json``/``.csv`` beside it are views of its metadata, written after it and
rewritten from it by ``--resume`` (``write_views``), so a kill between two renames leaves at worst a view
one epoch behind until then, never a checkpoint that disagrees with itself. Every file is written
atomically: a temporary file in the same directory, then ``os.replace``.

``load_checkpoint`` trusts nothing in the file: any bytes give either a checkpoint whose schema was
checked (keys, types, shapes, dtypes, finite weights and optimizer state, an RNG from a fixed list) or a
``CheckpointError`` that says what is wrong.
"""

import json
import math
import zipfile
from pathlib import Path

import numpy as np

from npvae.fileio import atomic_write_bytes, atomic_write_text

FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.npz"
CONFIG_NAME = "config.json"
BEST_NAME = "best.npz"          # the epoch of lowest validation metric (--select best-val)
BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")  # the only names restore_rng builds
MAX_MEMBER_BYTES = 1 << 31   # no array of a checkpoint is larger than this (npvae's largest: a few MB)
_FIX = "; delete it (or restore a copy) and train again"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or for another architecture."""


def save_checkpoint(run_dir, *, model, optimizer, rng, epoch, config, history=None, name=CHECKPOINT_NAME,
                    selection=None):
    """Write ``run_dir/<name>`` atomically, then (for checkpoint.npz) its views (config.json; see ``write_views``).

    model: has ``params`` (dict of arrays) and ``kind``; optimizer: has ``state_dict()``; rng: the
    training Generator; epoch: number of completed epochs; config: JSON-able dict (model + training).
    name: another file name (e.g. BEST_NAME: then config.json is left alone); selection: JSON-able, kept
    in the metadata (best.npz: {"metric": "val_error", "value": ...}).
    Refuses (CheckpointError) weights or optimizer state holding NaN/inf, so a good checkpoint is never
    replaced by a bad one.
    """
    run_dir = Path(run_dir)
    arrays = {f"param/{k}": v for k, v in model.params.items()}
    arrays.update({f"optim/{k}": np.asarray(v) for k, v in optimizer.state_dict().items()})
    _check_finite_arrays(arrays, f"the state to save into {run_dir / CHECKPOINT_NAME}")
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
    arrays["meta"] = np.array(json.dumps(meta, allow_nan=False))
    atomic_write_bytes(run_dir / name, lambda f: np.savez(f, **arrays))
    if name != CHECKPOINT_NAME:
        return
    atomic_write_text(run_dir / CONFIG_NAME, _config_view(meta))


def _config_view(meta):
    return json.dumps({k: meta[k] for k in ("kind", "epoch", "config")}, indent=2) + "\n"


def write_views(run_dir, meta, write_history):
    """Rewrite config.json and the history files of ``run_dir`` from a checkpoint's metadata."""
    atomic_write_text(Path(run_dir) / CONFIG_NAME, _config_view(meta))
    write_history(run_dir, meta["history"])


def _check_finite_arrays(arrays, where):
    for k, a in arrays.items():
        if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
            raise CheckpointError(f"{where}: {k} holds NaN or inf")


def _read_members(path):
    """{name: array} of an npz file, after checking each member's size against its npy header (so a
    header claiming a huge array cannot make numpy allocate it)."""
    size = path.stat().st_size
    out = {}
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if not infos:
            raise CheckpointError(f"{path} is an empty archive{_FIX}")
        for info in infos:
            if not info.filename.endswith(".npy") or info.file_size > MAX_MEMBER_BYTES or (
                    info.compress_type == zipfile.ZIP_STORED and info.file_size > size):
                raise CheckpointError(f"{path}: unexpected member {info.filename!r} ({info.file_size} bytes){_FIX}")
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version not in ((1, 0), (2, 0)):
                    raise CheckpointError(f"{path}: member {info.filename!r} has npy format {version}{_FIX}")
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _fortran, dtype = read_header(f)
                if dtype.hasobject:
                    raise CheckpointError(f"{path}: member {info.filename!r} holds Python objects{_FIX}")
                count = math.prod(shape)
                if count * dtype.itemsize != info.file_size - f.tell():
                    raise CheckpointError(f"{path}: member {info.filename!r} claims shape {shape} of {dtype} "
                                          f"but holds {info.file_size - f.tell()} bytes{_FIX}")
            with zf.open(info) as f:
                out[info.filename[:-len(".npy")]] = np.lib.format.read_array(f, allow_pickle=False)
    return out


def load_checkpoint(path):
    """Read a checkpoint file (or a run directory holding one) with ``allow_pickle=False``, checking its
    schema. Returns dict with keys params, optim (dicts of arrays), meta (format_version, kind, epoch,
    config {"model": dict, "train": dict}, rng_state, history: one dict per epoch). Raises CheckpointError.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; train first (npvae train ... --out DIR)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes){_FIX}")
    try:
        members = _read_members(path)
    except CheckpointError:
        raise
    except OSError as e:  # unreadable: say so rather than call it corrupt
        if isinstance(e, (PermissionError, IsADirectoryError)):
            raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}; check its permissions") from e
        raise CheckpointError(f"cannot read checkpoint {path}: {e}; it is truncated or corrupt{_FIX}") from e
    except Exception as e:  # zipfile, zlib, numpy and struct errors of a damaged file, MemoryError
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}; it is truncated "
                              f"or corrupt{_FIX}") from e
    meta = _check_meta(members.pop("meta", None), path)
    params = {k[len("param/"):]: v for k, v in members.items() if k.startswith("param/")}
    optim = {k[len("optim/"):]: v for k, v in members.items() if k.startswith("optim/")}
    other = sorted(k for k in members if not k.startswith(("param/", "optim/")))
    if other or not params or not optim:
        raise CheckpointError(f"{path}: expected parameters, optimizer state and metadata, found "
                              f"{len(params)} parameters, {len(optim)} optimizer entries and {other[:3]}{_FIX}")
    for k, v in params.items():
        if v.dtype not in (np.float32, np.float64):
            raise CheckpointError(f"{path}: parameter {k} has dtype {v.dtype}; parameters are float32 or "
                                  f"float64{_FIX}")
    for k, v in optim.items():
        if v.dtype.kind not in "fiuU" or (v.dtype.kind == "U" and k != "kind"):
            raise CheckpointError(f"{path}: optimizer entry {k} has dtype {v.dtype}{_FIX}")
    _check_finite_arrays({**{f"parameter {k}": v for k, v in params.items()},
                          **{f"optimizer state {k}": v for k, v in optim.items()}}, str(path))
    return {"params": params, "optim": optim, "meta": meta}


def _check_meta(raw, path):
    """The metadata dict, after checking every key's type; CheckpointError naming the first problem."""
    def bad(what):
        return CheckpointError(f"{path}: bad metadata: {what}{_FIX}")

    if raw is None or raw.shape != () or raw.dtype.kind != "U":
        raise bad("no metadata string")
    try:
        meta = json.loads(str(raw[()]))
    except ValueError as e:
        raise bad(f"not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise bad(f"a {type(meta).__name__} instead of a dict")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {meta.get('format_version')!r}, "
                              f"this npvae reads version {FORMAT_VERSION}")
    want = {"kind": str, "epoch": int, "config": dict, "rng_state": dict, "history": list}
    for key, typ in want.items():
        if not isinstance(meta.get(key), typ) or isinstance(meta.get(key), bool):
            raise bad(f"{key!r} must be a {typ.__name__}, found {type(meta.get(key)).__name__}")
    cfg = meta["config"]
    if set(cfg) != {"model", "train"} or not all(isinstance(v, dict) for v in cfg.values()):
        raise bad("'config' must hold a 'model' and a 'train' dict")
    if meta["epoch"] < 0 or len(meta["history"]) != meta["epoch"]:
        raise bad(f"epoch {meta['epoch']} with {len(meta['history'])} history rows")
    for i, row in enumerate(meta["history"]):
        if not isinstance(row, dict) or row.get("epoch") != i + 1 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row.values()):
            raise bad(f"history row {i + 1} is not a row of finite numbers for epoch {i + 1}")
    if meta["rng_state"].get("bit_generator") not in BIT_GENERATORS:
        raise bad(f"unknown random generator {str(meta['rng_state'].get('bit_generator'))[:40]!r}; "
                  f"known: {', '.join(BIT_GENERATORS)}")
    try:
        restore_rng(meta["rng_state"])
    except Exception as e:  # numpy's checks of the state dict
        raise bad(f"random generator state: {type(e).__name__}: {e}") from None
    return meta


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
        if params[k].dtype != p.dtype or not np.all(np.isfinite(params[k])):
            raise CheckpointError(f"{source}: parameter {k} has dtype {params[k].dtype} or holds NaN/inf; the "
                                  f"model expects finite {p.dtype}")
    for k, p in model.params.items():
        p[...] = params[k]


def restore_rng(state):
    """A Generator positioned exactly where the saved one was; only the bit generators in BIT_GENERATORS."""
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if name not in BIT_GENERATORS:
        raise CheckpointError(f"unknown random generator {str(name)[:40]!r}; known: {', '.join(BIT_GENERATORS)}")
    bitgen = getattr(np.random, name)()
    bitgen.state = state
    return np.random.Generator(bitgen)
