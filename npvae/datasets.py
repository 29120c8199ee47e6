"""MNIST and Fashion-MNIST: finding, downloading, verifying and decoding; synthetic data.

``load_dataset(name, split)`` looks for the IDX files in this order:

1. ``data_dir=`` if given (files directly in it or in ``<data_dir>/<name>/``);
2. ``$NPVAE_DATA_DIR`` (files in ``$NPVAE_DATA_DIR/<name>/`` or directly in it);
3. the checkout's ``data/<name>/`` (when ``data/README.md`` exists beside the package);
4. the user cache ``$XDG_CACHE_HOME/npvae/<name>/`` (default ``~/.cache/npvae/<name>/``);
5. ``/usr/share/datasets/<name>/`` (Debian's ``dataset-fashion-mnist`` installs there).

Missing files are downloaded (if ``download=True``) from the mirrors in ``MIRRORS`` into
``data_dir`` if given, else the first writable of (3) and (4). Every file, found or downloaded,
is checked against the SHA-256 sums in ``CHECKSUMS`` (also in ``data/SHA256SUMS``).
"""

import functools
import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from npvae.validate import check_generator, check_unit_interval

from .idx import IDXError, read_idx

ENV_VAR = "NPVAE_DATA_DIR"
CHECKOUT_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
DOWNLOAD_TIMEOUT = 30.0  # seconds per connection attempt

_ALIASES = {
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "synthetic": "synthetic",
}
SPLITS = ("train", "test")
_SPLIT_CODE = {"train": 1, "test": 2}

# split -> (images file, labels file), as distributed
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
N_EXAMPLES = {"train": 60000, "test": 10000}
IMAGE_SHAPE = (28, 28)


class FileSum(NamedTuple):
    """Accepted SHA-256 sums of one file: of the .gz as distributed, and of its IDX content."""

    gz: tuple
    raw: str


CHECKSUMS = {
    # the original LeCun/Cortes/Burges files
    "mnist": {
        "train-images-idx3-ubyte.gz": FileSum(
            ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",),
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        "train-labels-idx1-ubyte.gz": FileSum(
            ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",),
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
        "t10k-images-idx3-ubyte.gz": FileSum(
            ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",),
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        "t10k-labels-idx1-ubyte.gz": FileSum(
            ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",),
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    },
    # first sum: Zalando's files as distributed; second: Debian's dataset-fashion-mnist copy
    # (same deflate stream, gzip header without the file name)
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": FileSum(
            ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
             "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte.gz": FileSum(
            ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
             "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte.gz": FileSum(
            ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
             "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte.gz": FileSum(
            ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
             "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
}

# base URLs tried in order; a file's URL is base + file name
MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}


class ChecksumError(ValueError):
    """A dataset file's SHA-256 differs from the known one; names file, expected and actual."""

    def __init__(self, path, expected, actual, source=None):
        self.path, self.expected, self.actual, self.source = str(path), expected, actual, source
        origin = f" (downloaded from {source}; the partial file was deleted)" if source else ""
        super().__init__(
            f"{self.path}: SHA-256 mismatch{origin}: expected {expected}, got {actual}. "
            "The file is corrupt, incomplete or not the file it is named after; delete it and "
            "fetch it again.")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are in none of the lookup directories and could not be downloaded."""


@dataclass(frozen=True)
class Dataset:
    """Examples and labels of one split.

    Fields:
        x: (N, D) float32 pixels in [0, 1] (D = 784 for MNIST / Fashion-MNIST).
        y: (N,) int64 class labels in [0, n_classes).
        name: canonical dataset name ("mnist", "fashion-mnist", "synthetic").
        split: "train" or "test".
        image_shape: (H, W) with H * W = D, for plotting.
        n_classes: number of classes.
        binarize: None, "fixed", "threshold" (x already binary) or "dynamic" (x continuous;
            the training loop draws ``dynamic_binarize(x, rng)`` every epoch).
    """

    x: np.ndarray
    y: np.ndarray
    name: str
    split: str
    image_shape: tuple = IMAGE_SHAPE
    n_classes: int = 10
    binarize: str | None = None

    def __len__(self):
        return len(self.x)


# --------------------------------------------------------------------------------- lookup


def canonical_name(name):
    """The canonical name of ``name`` ("fmnist" -> "fashion-mnist"); ValueError if unknown."""
    key = str(name).strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown dataset {name!r}; known: mnist, fashion-mnist (also "
                         "fashion_mnist, fmnist), synthetic")
    return _ALIASES[key]


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use 'train' or 'test'")


def cache_dir():
    """The user cache root: ``$XDG_CACHE_HOME/npvae`` or ``~/.cache/npvae``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "npvae"


def _checkout_data_dir():
    """The checkout's data/ directory, or None when not running from a checkout."""
    return CHECKOUT_DATA_DIR if (CHECKOUT_DATA_DIR / "README.md").is_file() else None


def search_dirs(name, data_dir=None):
    """The directories searched for ``name``'s files, in lookup order.

    Args:
        name: dataset name (aliases accepted).
        data_dir: optional explicit directory, searched first.
    Returns:
        list of (label, Path) pairs; a directory given by the user appears twice, first as
        ``<dir>/<name>`` then as ``<dir>`` itself.
    """
    name = canonical_name(name)
    dirs = []
    if data_dir is not None:
        dirs += [("data_dir", Path(data_dir) / name), ("data_dir", Path(data_dir))]
    env = os.environ.get(ENV_VAR)
    if env:
        dirs += [(f"${ENV_VAR}", Path(env) / name), (f"${ENV_VAR}", Path(env))]
    checkout = _checkout_data_dir()
    if checkout is not None:
        dirs.append(("project checkout", checkout / name))
    dirs.append(("user cache", cache_dir() / name))
    dirs.append(("system datasets", SYSTEM_DATA_DIR / name))
    return dirs


def _candidates(directory, fname):
    """Accepted spellings of ``fname`` in ``directory``: as distributed, or uncompressed."""
    stem = fname[: -len(".gz")]
    return [directory / fname, directory / stem, directory / stem.replace("-idx", ".idx")]


def _find_file(directory, fname):
    for path in _candidates(directory, fname):
        if path.is_file():
            return path
    return None


def sha256_file(path, chunk=1 << 20):
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _sha256_gunzipped(path, chunk=1 << 20):
    """Hex SHA-256 of a gzip file's decompressed content, or None if it is not valid gzip."""
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except (OSError, EOFError, zlib.error):
        return None
    return h.hexdigest()


def _identify(sha):
    """(dataset, file) whose known sum is ``sha``, or None."""
    for dataset, table in CHECKSUMS.items():
        for fname, sums in table.items():
            if sha in sums.gz or sha == sums.raw:
                return dataset, fname
    return None


def _matches(path, sums):
    """(ok, sha256 of the file): a file matches as distributed, re-compressed or uncompressed."""
    actual = sha256_file(path)
    if actual in sums.gz or actual == sums.raw:
        return True, actual
    return _sha256_gunzipped(path) == sums.raw, actual


_VERIFIED = {}  # (path, size, mtime_ns) -> sha256, files already checked in this process


def _stat_key(path):
    st = os.stat(path)
    return (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def verify_file(path, name, fname):
    """Check a local file against the known SHA-256 of ``name``'s ``fname``.

    Args:
        path: the file (as distributed, re-compressed or uncompressed).
        name: dataset name; fname: the file's distributed name, e.g. "train-images-idx3-ubyte.gz".
    Raises:
        ChecksumError: naming the file, the expected and the actual sum.
    """
    name = canonical_name(name)
    sums = CHECKSUMS[name][fname]
    key = _stat_key(path)
    if key in _VERIFIED:
        return
    ok, actual = _matches(path, sums)
    if not ok:
        raise ChecksumError(path, sums.gz[0], actual)
    _VERIFIED[key] = actual


# ------------------------------------------------------------------------------- download


def _open_url(url, timeout):
    """Open ``url`` for streaming (replaced in tests; file:// URLs work too)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - fixed mirror list


def _fetch_to(url, fileobj, progress, desc):
    """Stream ``url`` into ``fileobj``; returns the hex SHA-256 of the bytes written."""
    from tqdm.auto import tqdm

    h, n_bytes = hashlib.sha256(), 0
    with _open_url(url, DOWNLOAD_TIMEOUT) as resp:
        length = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
        total = int(length) if length and str(length).isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                  disable=not progress, leave=False) as bar:
            while block := resp.read(1 << 16):
                fileobj.write(block)
                h.update(block)
                n_bytes += len(block)
                bar.update(len(block))
        if total is not None and n_bytes != total:
            raise OSError(f"connection closed after {n_bytes} of {total} bytes")
    return h.hexdigest()


def _download_file(name, fname, dest_dir, mirrors, progress):
    """Fetch one file into ``dest_dir`` from the first mirror that serves it intact.

    The bytes go to a temporary file in ``dest_dir``; it is renamed over the destination only
    after its checksum matched, and deleted otherwise.
    Returns:
        (Path or None, list of "url: problem" strings, last ChecksumError or None).
    """
    sums = CHECKSUMS[name][fname]
    dest = dest_dir / fname
    problems, mismatch = [], None
    for base in mirrors:
        url = base if base.endswith(fname) else base.rstrip("/") + "/" + fname
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=f".{fname}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                actual = _fetch_to(url, out, progress, f"{name}/{fname}")
                out.flush()
                os.fsync(out.fileno())
            ok = actual in sums.gz or actual == sums.raw or _sha256_gunzipped(tmp) == sums.raw
            if not ok:
                mismatch = ChecksumError(dest, sums.gz[0], actual, source=url)
                problems.append(f"{url}: checksum mismatch (got {actual})")
                continue
            os.replace(tmp, dest)
            return dest, problems, None
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            problems.append(f"{url}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return None, problems, mismatch


def _writable_dir(path):
    """Create ``path`` if needed; True if files can be written there."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def download_dataset(name, dest_dir, splits=SPLITS, *, mirrors=None, progress=True):
    """Download ``name``'s IDX files for ``splits`` into ``dest_dir`` (skipping valid ones).

    Args:
        name: "mnist" or "fashion-mnist" (aliases accepted).
        dest_dir: directory receiving the files (created if needed).
        splits: which splits' files to fetch.
        mirrors: base URLs tried in order (default ``MIRRORS[name]``).
        progress: show a tqdm progress bar per file.
    Returns:
        dict file name -> Path of the verified file.
    Raises:
        ChecksumError: a mirror served a file whose SHA-256 is wrong (nothing is left behind).
        DatasetNotFoundError: every mirror failed for some file (message lists the errors).
    """
    name = canonical_name(name)
    if name not in CHECKSUMS:
        raise ValueError(f"{name!r} is generated in code, not downloaded")
    dest_dir = Path(dest_dir)
    if not _writable_dir(dest_dir):
        raise PermissionError(f"cannot write to {dest_dir}; pass another directory")
    mirrors = tuple(MIRRORS[name] if mirrors is None else mirrors)
    found, failures = {}, []
    for split in splits:
        _check_split(split)
        for fname in FILES[split]:
            existing = dest_dir / fname
            if existing.is_file():
                verify_file(existing, name, fname)
                found[fname] = existing
                continue
            if failures:  # offline: do not wait on every mirror again for each file
                failures.append((fname, ["not tried: an earlier file failed on every mirror"]))
                continue
            path, problems, mismatch = _download_file(name, fname, dest_dir, mirrors, progress)
            if path is not None:
                found[fname] = path
                continue
            if mismatch is not None:
                raise mismatch
            failures.append((fname, problems))
    if failures:
        lines = [f"could not download {name} into {dest_dir}:"]
        for fname, problems in failures:
            lines.append(f"  {fname}:")
            lines += [f"    {p}" for p in problems] or ["    no mirrors given"]
        raise DatasetNotFoundError("\n".join(lines))
    return found


# --------------------------------------------------------------------------------- finding


def _not_found_message(name, split, missing, dirs, why):
    lines = [f"{name} ({split} split): cannot find {', '.join(missing)}.",
             "Looked in these directories, in this order:"]
    env_shown = False
    for i, (label, d) in enumerate(dirs, 1):
        lines.append(f"  {i}. {d}  ({label})")
        env_shown |= label == f"${ENV_VAR}"
    if not env_shown:
        lines.append(f"  (${ENV_VAR} is not set)")
    lines.append(why)
    lines.append(
        f"To fix: put the files (as distributed: {', '.join(FILES[split])}; uncompressed copies "
        f"work too) into one of the directories above, or set {ENV_VAR} to a directory holding "
        f"them (directly or in a {name}/ subdirectory).")
    if name == "fashion-mnist":
        lines.append("On Debian or Ubuntu, `apt-get install dataset-fashion-mnist` puts them in "
                     f"{SYSTEM_DATA_DIR / name}.")
    return "\n".join(lines)


def dataset_files(name, split="train", *, data_dir=None, download=True, progress=True):
    """Paths of the verified (images, labels) IDX files of one split, downloading if needed.

    Args:
        name: "mnist" or "fashion-mnist" (aliases accepted).
        split: "train" or "test".
        data_dir: optional directory searched first and used for downloads.
        download: fetch missing files from ``MIRRORS``.
        progress: progress bars while downloading.
    Returns:
        (images path, labels path).
    Raises:
        DatasetNotFoundError: not found and not downloadable; the message lists the directories.
        ChecksumError: a found or downloaded file has the wrong SHA-256.
    """
    name = canonical_name(name)
    if name not in CHECKSUMS:
        raise ValueError(f"{name!r} has no files; it is generated by make_synthetic")
    _check_split(split)
    fnames = FILES[split]
    dirs = search_dirs(name, data_dir)
    seen = set()
    for _label, d in dirs:
        if d in seen:
            continue
        seen.add(d)
        paths = [_find_file(d, f) for f in fnames]
        if any(p is None for p in paths):
            continue
        try:
            for path, fname in zip(paths, fnames):
                verify_file(path, name, fname)
        except ChecksumError as exc:
            other = _identify(exc.actual)
            if other is not None and other[0] != name:
                continue  # a flat directory holding another dataset's files
            raise
        return tuple(paths)

    if not download:
        why = "Downloading is off (download=False)."
        raise DatasetNotFoundError(_not_found_message(name, split, list(fnames), dirs, why))
    if data_dir is not None:
        targets = [Path(data_dir) / name]
    else:
        checkout = _checkout_data_dir()
        targets = ([checkout / name] if checkout is not None else []) + [cache_dir() / name]
    existed = {t: t.exists() for t in targets}
    target = next((t for t in targets if _writable_dir(t)), None)
    if target is None:
        why = f"None of {', '.join(map(str, targets))} is writable, so nothing was downloaded."
        raise DatasetNotFoundError(_not_found_message(name, split, list(fnames), dirs, why))
    try:
        found = download_dataset(name, target, (split,), progress=progress)
    except DatasetNotFoundError as exc:
        _remove_if_new_and_empty(target, existed[target])
        why = f"Downloading failed from every mirror:\n{exc}"
        raise DatasetNotFoundError(
            _not_found_message(name, split, list(fnames), dirs, why)) from None
    except ChecksumError:
        _remove_if_new_and_empty(target, existed[target])
        raise
    return tuple(found[f] for f in fnames)


def _remove_if_new_and_empty(directory, existed):
    if not existed:
        try:
            directory.rmdir()
        except OSError:
            pass  # not empty, or already gone


# -------------------------------------------------------------------------------- decoding


@functools.lru_cache(maxsize=4)
def _decode(images_key, labels_key):
    """Decoded (x (N, 784) float32 = pixels / 255, labels (N,) int64), both read-only.

    Keyed by (path, size, mtime) of each file, so a replaced file is decoded again.
    """
    images_path, labels_path = Path(images_key[0]), Path(labels_key[0])
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE or images.dtype != np.uint8:
        raise IDXError(images_path, f"expected uint8 images of shape (N, 28, 28), got "
                                    f"{images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise IDXError(labels_path, f"expected uint8 labels of shape (N,), got "
                                    f"{labels.dtype} {labels.shape}")
    if len(labels) != len(images):
        raise IDXError(labels_path, f"{len(labels)} labels for {len(images)} images in "
                                    f"{images_path}")
    if labels.size and labels.max() > 9:
        raise IDXError(labels_path, f"labels must be 0..9, found {int(labels.max())}")
    x = np.divide(images.reshape(len(images), -1), np.float32(255), dtype=np.float32)
    labels = labels.astype(np.int64)
    x.flags.writeable = False
    labels.flags.writeable = False
    return x, labels


def clear_cache():
    """Forget decoded arrays and verified checksums held in memory."""
    _decode.cache_clear()
    _VERIFIED.clear()


# ------------------------------------------------------------------------------ binarising


validate_unit_interval = check_unit_interval  # the old name (npvae.validate holds the check)


def dynamic_binarize(x, rng):
    """b ~ Bernoulli(x) elementwise, a fresh draw per call (resample every epoch).

    Args:
        x: (N, D) float array of probabilities in [0, 1].
        rng: numpy.random.Generator supplying the noise.
    Returns:
        (N, D) array of 0/1 with x's dtype.
    """
    check_generator(rng)
    x = np.asarray(x)
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    u = rng.random(x.shape, dtype=dtype)
    return (u < x).astype(dtype)


def fixed_binarize(x, seed, stream=0):
    """b ~ Bernoulli(x) drawn once from a fixed seed, so it is the same in every run.

    Args:
        x: (N, D) float array in [0, 1]; row i's draw depends only on (seed, stream, i).
        seed: integer seed; stream: separates e.g. train and test.
    Returns:
        (N, D) array of 0/1 with x's dtype.
    """
    return dynamic_binarize(x, np.random.default_rng([int(seed), int(stream)]))


def threshold_binarize(x, level=0.5):
    """b = [x > level].  x: (N, D) in [0, 1] -> (N, D) 0/1 of x's dtype."""
    x = np.asarray(x)
    return (x > level).astype(x.dtype if x.dtype in (np.float32, np.float64) else np.float32)


BINARIZE_MODES = (None, "fixed", "dynamic", "threshold")


def _apply_binarize(x, mode, seed, split):
    if mode not in BINARIZE_MODES:
        raise ValueError(f"binarize={mode!r}; use one of {BINARIZE_MODES}")
    if mode == "fixed":
        return fixed_binarize(x, seed, _SPLIT_CODE[split])
    if mode == "threshold":
        return threshold_binarize(x)
    return x  # None and "dynamic": continuous; "dynamic" is resampled by the training loop


# ------------------------------------------------------------------------------- synthetic


def make_synthetic(n=2000, dim=64, n_classes=10, seed=0, *, split="train", noise=0.15):
    """x = (1 - noise)·(t·P[y,0] + (1 - t)·P[y,1]) + noise·u: two prototypes per class, mixed.

    Prototypes P (blocky binary-ish images) depend on ``seed`` only, so train and test share
    them; labels are balanced and shuffled; t, u ~ Uniform(0, 1) differ between splits.

    Args:
        n: number of examples; dim: pixels per example (8x8 = 64 by default);
        n_classes: number of classes; seed: integer; split: "train" or "test";
        noise: weight of uniform pixel noise, in [0, 1].
    Returns:
        Dataset with x (n, dim) float32 in [0, 1] and y (n,) int64 in [0, n_classes).
    """
    _check_split(split)
    if n < 0 or dim < 1 or n_classes < 1:
        raise ValueError(f"make_synthetic: need n >= 0, dim >= 1, n_classes >= 1; got n={n}, "
                         f"dim={dim}, n_classes={n_classes}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"make_synthetic: noise must be in [0, 1], got {noise}")
    side = int(round(dim ** 0.5))
    square = side * side == dim
    proto_rng = np.random.default_rng([int(seed), 0])
    if square and side % 2 == 0:
        coarse = proto_rng.random((n_classes, 2, side // 2, side // 2)) < 0.4
        on = np.kron(coarse, np.ones((2, 2), dtype=bool)).reshape(n_classes, 2, dim)
    else:
        on = proto_rng.random((n_classes, 2, dim)) < 0.4
    protos = np.where(on, 0.95, 0.05)

    rng = np.random.default_rng([int(seed), _SPLIT_CODE[split]])
    y = rng.permutation(np.arange(n) % n_classes)
    t = rng.random((n, 1))
    mix = t * protos[y, 0] + (1.0 - t) * protos[y, 1]
    x = (1.0 - noise) * mix + noise * rng.random((n, dim))
    image_shape = (side, side) if square else (1, dim)
    return Dataset(x.astype(np.float32), y.astype(np.int64), "synthetic", split,
                   image_shape=image_shape, n_classes=n_classes)


# ---------------------------------------------------------------------------------- loading


def load_dataset(name, split="train", *, binarize=None, seed=0, limit=None, data_dir=None,
                 download=True, progress=True):
    """Load one split as a Dataset of float32 pixels in [0, 1] and int64 labels.

    Args:
        name: "mnist", "fashion-mnist" (or "fashion_mnist", "fmnist") or "synthetic".
        split: "train" or "test".
        binarize: None (continuous), "fixed" (one Bernoulli draw from ``seed``, stable across
            runs), "dynamic" (continuous here; the training loop resamples each epoch with
            ``dynamic_binarize``) or "threshold" (x > 0.5).
        seed: seed of the fixed binarisation (and of the synthetic data).
        limit: keep the first ``limit`` examples; for "synthetic", the number generated
            (default 2000 train / 500 test).
        data_dir: directory searched first and used for downloads.
        download: allow downloading missing files.
        progress: show download progress bars.
    Returns:
        Dataset with x (N, D) float32 and y (N,) int64; D = 784 for the image datasets. For
        MNIST / Fashion-MNIST without binarisation, x and y are read-only views of an
        in-memory cache (repeated loads are free): copy them before changing them in place.
    """
    name = canonical_name(name)
    _check_split(split)
    if limit is not None and (int(limit) != limit or limit < 0):
        raise ValueError(f"limit must be a non-negative integer or None, got {limit!r}")
    if name == "synthetic":
        n = limit if limit is not None else (2000 if split == "train" else 500)
        data = make_synthetic(int(n), seed=seed, split=split)
        x, y, extra = data.x, data.y, dict(image_shape=data.image_shape,
                                           n_classes=data.n_classes)
    else:
        images_path, labels_path = dataset_files(name, split, data_dir=data_dir,
                                                 download=download, progress=progress)
        x, y = _decode(_stat_key(images_path), _stat_key(labels_path))
        if limit is not None:
            x, y = x[: int(limit)], y[: int(limit)]
        extra = {}
    x = _apply_binarize(x, binarize, seed, split)
    return Dataset(x, y, name, split, binarize=binarize, **extra)
