"""Finding a data set's files, downloading and verifying them.

Lookup order for ``dataset_files(name, split)``:

1. ``data_dir=`` if given (files directly in it or in ``<data_dir>/<name>/``);
2. ``$NPVAE_DATA_DIR`` (files in ``$NPVAE_DATA_DIR/<name>/`` or directly in it);
3. the checkout's ``data/<name>/`` (when ``data/README.md`` exists beside the package);
4. the user cache ``$XDG_CACHE_HOME/npvae/<name>/`` (default ``~/.cache/npvae/<name>/``);
5. ``/usr/share/datasets/<name>/`` (Debian's ``dataset-fashion-mnist`` installs there).

Missing files are downloaded (if ``download=True``) from the mirrors in ``MIRRORS`` into
``data_dir`` if given, else the first writable of (3) and (4). Every file, found or downloaded,
is checked against the SHA-256 sums in ``CHECKSUMS`` (also in ``data/SHA256SUMS``).
"""

import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from npvae.data.catalog import CHECKSUMS, FILES, SPLITS, _check_split, canonical_name  # noqa: F401
from npvae.fileio import chmod_as_created

ENV_VAR = "NPVAE_DATA_DIR"
CHECKOUT_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "data"
SYSTEM_DATA_DIR = Path("/usr/share/datasets")
DOWNLOAD_TIMEOUT = 30.0  # seconds per connection attempt

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
            chmod_as_created(fd)  # readable by others as the umask allows, like any downloaded file
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


def _not_found_message(name, split, missing, dirs, why, others=()):
    lines = [f"{name} ({split} split): cannot find {', '.join(missing)}.",
             "Looked in these directories, in this order:"]
    for path, (dataset, fname) in others:
        lines.insert(1, f"Found {path}, but it is {dataset}'s {fname}, not {name}'s.")
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
    seen, others = set(), []
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
                others.append((exc.path, other))
                continue  # a flat directory holding another dataset's files
            raise
        return tuple(paths)

    if not download:
        why = "Downloading is off (download=False)."
        raise DatasetNotFoundError(_not_found_message(name, split, list(fnames), dirs, why, others))
    if data_dir is not None:
        targets = [Path(data_dir) / name]
    else:
        checkout = _checkout_data_dir()
        targets = ([checkout / name] if checkout is not None else []) + [cache_dir() / name]
    existed = {t: t.exists() for t in targets}
    target = next((t for t in targets if _writable_dir(t)), None)
    if target is None:
        why = f"None of {', '.join(map(str, targets))} is writable, so nothing was downloaded."
        raise DatasetNotFoundError(_not_found_message(name, split, list(fnames), dirs, why, others))
    try:
        found = download_dataset(name, target, (split,), progress=progress)
    except DatasetNotFoundError as exc:
        _remove_if_new_and_empty(target, existed[target])
        why = f"Downloading failed from every mirror:\n{exc}"
        raise DatasetNotFoundError(
            _not_found_message(name, split, list(fnames), dirs, why, others)) from None
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
