"""Dataset lookup, download, verification, decoding, binarisation and synthetic data.

No test touches the network: downloads come from file:// mirrors or a server on 127.0.0.1.
"""

import functools
import hashlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from npvae import data as D
from npvae.data.idx import IDXError, encode_idx, write_idx

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")


def _real_mnist_dir():
    """A directory holding the four real MNIST files: $NPVAE_DATA_DIR (as set before the
    tests), the shared/ folder beside the checkout, or /work/shared."""
    env = os.environ.get("NPVAE_DATA_DIR")
    candidates = [Path(env) / "mnist", Path(env)] if env else []
    candidates += [REPO_DATA.parent.parent / "shared" / "data" / "mnist",
                   Path("/work/shared/data/mnist")]
    for d in candidates:
        if all((d / f).is_file() for f in D.FILES["train"] + D.FILES["test"]):
            return d
    return candidates[-1]


REAL_MNIST = _real_mnist_dir()


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _fake_split(directory, split, n, seed):
    """Write a split's two IDX .gz files with random content; return (images, labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    directory.mkdir(parents=True, exist_ok=True)
    img_name, lbl_name = D.FILES[split]
    write_idx(directory / img_name, images)
    write_idx(directory / lbl_name, labels)
    return images, labels


def _fake_dataset(directory, seed, n_train=30, n_test=20):
    """Fake four-file dataset in ``directory``; returns {split: (images, labels)}."""
    return {"train": _fake_split(directory, "train", n_train, seed),
            "test": _fake_split(directory, "test", n_test, seed + 1000)}


def _accept(monkeypatch, name, *directories):
    """Make CHECKSUMS[name] accept exactly the files in ``directories``."""
    table = {}
    for fname in D.FILES["train"] + D.FILES["test"]:
        sums = tuple(_sha(d / fname) for d in directories if (d / fname).exists())
        raw = D.files._sha256_gunzipped(directories[0] / fname) if sums else "0" * 64
        table[fname] = D.FileSum(sums or ("f" * 64,), raw)
    monkeypatch.setitem(D.CHECKSUMS, name, table)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Every lookup directory under tmp_path; no env var; mirrors that cannot succeed."""
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(D.files, "CHECKOUT_DATA_DIR", tmp_path / "checkout")
    monkeypatch.setattr(D.files, "SYSTEM_DATA_DIR", tmp_path / "system")
    dead = (tmp_path / "no-mirror").as_uri() + "/"
    monkeypatch.setattr(D.files, "MIRRORS", {"mnist": (dead,), "fashion-mnist": (dead,)})
    D.clear_cache()
    yield tmp_path
    D.clear_cache()


def _all_files(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())


# ------------------------------------------------------------------------------- names


@pytest.mark.parametrize("alias", ["fashion-mnist", "fashion_mnist", "fmnist", "Fashion-MNIST"])
def test_fashion_aliases(alias):
    assert D.canonical_name(alias) == "fashion-mnist"


def test_unknown_names_and_options():
    with pytest.raises(ValueError, match="known: mnist, fashion-mnist"):
        D.canonical_name("cifar10")
    with pytest.raises(ValueError, match="'valid'"):
        D.load_dataset("synthetic", "valid")
    with pytest.raises(ValueError, match="binarize='bernoulli'"):
        D.load_dataset("synthetic", binarize="bernoulli")
    with pytest.raises(ValueError, match="limit"):
        D.load_dataset("synthetic", limit=-3)


def test_checksum_table_matches_sha256sums_file():
    listed = {}
    for line in (REPO_DATA / "SHA256SUMS").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, rel = line.split()
            listed[rel] = digest
    expected = {f"{name}/{fname}": sums.gz[0]
                for name, table in D.CHECKSUMS.items() for fname, sums in table.items()}
    assert listed == expected


# ------------------------------------------------------------------------------ lookup


def test_search_order(isolated, monkeypatch):
    (isolated / "checkout").mkdir()
    (isolated / "checkout" / "README.md").write_text("data")
    monkeypatch.setenv(D.ENV_VAR, str(isolated / "env"))
    dirs = [p for _, p in D.search_dirs("fmnist", data_dir=isolated / "explicit")]
    assert dirs == [
        isolated / "explicit" / "fashion-mnist", isolated / "explicit",
        isolated / "env" / "fashion-mnist", isolated / "env",
        isolated / "checkout" / "fashion-mnist",
        isolated / "cache" / "npvae" / "fashion-mnist",
        isolated / "system" / "fashion-mnist",
    ]


def test_checkout_dir_skipped_without_readme(isolated):
    labels = [label for label, _ in D.search_dirs("mnist")]
    assert "project checkout" not in labels


def test_home_cache_when_xdg_unset(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert D.cache_dir() == tmp_path / ".cache" / "npvae"


def test_env_var_wins_then_checkout_then_cache_then_system(isolated, monkeypatch):
    (isolated / "checkout").mkdir()
    (isolated / "checkout" / "README.md").write_text("data")
    places = {
        "env": isolated / "env" / "mnist",
        "checkout": isolated / "checkout" / "mnist",
        "cache": isolated / "cache" / "npvae" / "mnist",
        "system": isolated / "system" / "mnist",
    }
    content = {key: _fake_dataset(d, seed=i) for i, (key, d) in enumerate(places.items())}
    _accept(monkeypatch, "mnist", *places.values())
    monkeypatch.setenv(D.ENV_VAR, str(isolated / "env"))

    for key in ["env", "checkout", "cache", "system"]:
        D.clear_cache()
        data = D.load_dataset("mnist", "test")
        images, labels = content[key]["test"]
        np.testing.assert_array_equal(data.x, images.reshape(len(images), -1) / np.float32(255))
        np.testing.assert_array_equal(data.y, labels)
        # remove this place so the next one in the order is used
        if key == "env":
            monkeypatch.delenv(D.ENV_VAR)
        else:
            for f in places[key].iterdir():
                f.unlink()


def test_env_dir_with_files_directly_inside(isolated, monkeypatch):
    flat = isolated / "flat"
    images, labels = _fake_dataset(flat, seed=5)["train"]
    _accept(monkeypatch, "mnist", flat)
    monkeypatch.setenv(D.ENV_VAR, str(flat))
    data = D.load_dataset("mnist")
    assert data.x.shape == (len(images), 784)
    np.testing.assert_array_equal(data.y, labels)


def test_flat_env_dir_of_another_dataset_is_skipped(isolated, monkeypatch):
    flat = isolated / "flat"
    _fake_dataset(flat, seed=1)
    cache = isolated / "cache" / "npvae" / "mnist"
    _, labels = _fake_dataset(cache, seed=2, n_test=7)["test"]
    _accept(monkeypatch, "fashion-mnist", flat)
    _accept(monkeypatch, "mnist", cache)
    monkeypatch.setenv(D.ENV_VAR, str(flat))
    data = D.load_dataset("mnist", "test")
    np.testing.assert_array_equal(data.y, labels)


def test_uncompressed_copies_are_found_and_verified(isolated, monkeypatch):
    gz_dir = isolated / "gz"
    images, labels = _fake_dataset(gz_dir, seed=3)["test"]
    _accept(monkeypatch, "mnist", gz_dir)
    plain = isolated / "cache" / "npvae" / "mnist"
    plain.mkdir(parents=True)
    (plain / "t10k-images-idx3-ubyte").write_bytes(encode_idx(images))
    (plain / "t10k-labels.idx1-ubyte").write_bytes(encode_idx(labels))
    data = D.load_dataset("mnist", "test")
    np.testing.assert_array_equal(data.y, labels)


def test_local_checksum_mismatch(isolated, monkeypatch):
    place = isolated / "cache" / "npvae" / "mnist"
    _fake_dataset(place, seed=4)
    good = isolated / "good"
    _fake_dataset(good, seed=9)
    _accept(monkeypatch, "mnist", good)
    with pytest.raises(D.ChecksumError) as info:
        D.load_dataset("mnist", download=False)
    msg = str(info.value)
    fname = "train-images-idx3-ubyte.gz"
    assert str(place / fname) in msg
    assert _sha(good / fname) in msg and _sha(place / fname) in msg


def test_corrupt_labels_content_is_reported(isolated, monkeypatch):
    place = isolated / "cache" / "npvae" / "mnist"
    _fake_dataset(place, seed=6)
    write_idx(place / "t10k-labels-idx1-ubyte.gz", np.full(20, 12, dtype=np.uint8))
    _accept(monkeypatch, "mnist", place)
    with pytest.raises(IDXError, match="labels must be 0..9, found 12"):
        D.load_dataset("mnist", "test")


# ---------------------------------------------------------------------------- download


def test_download_from_second_mirror(isolated, monkeypatch):
    mirror = isolated / "mirror"
    content = _fake_dataset(mirror, seed=7)
    _accept(monkeypatch, "mnist", mirror)
    monkeypatch.setitem(D.files.MIRRORS, "mnist", (D.files.MIRRORS["mnist"][0], mirror.as_uri() + "/"))
    data = D.load_dataset("mnist", "train", progress=False)
    np.testing.assert_array_equal(data.y, content["train"][1])
    cache = isolated / "cache" / "npvae" / "mnist"
    assert _all_files(cache) == sorted(D.FILES["train"])  # only the split asked for
    for fname in D.FILES["train"]:
        assert _sha(cache / fname) == _sha(mirror / fname)


def test_download_goes_to_checkout_data_when_present(isolated, monkeypatch):
    (isolated / "checkout").mkdir()
    (isolated / "checkout" / "README.md").write_text("data")
    mirror = isolated / "mirror"
    _fake_dataset(mirror, seed=8)
    _accept(monkeypatch, "fashion-mnist", mirror)
    monkeypatch.setitem(D.files.MIRRORS, "fashion-mnist", (mirror.as_uri() + "/",))
    D.load_dataset("fmnist", "test", progress=False)
    assert _all_files(isolated / "checkout") == ["README.md"] + [
        f"fashion-mnist/{f}" for f in sorted(D.FILES["test"])]
    assert not (isolated / "cache").exists()


def test_download_checksum_mismatch_leaves_nothing(isolated, monkeypatch):
    mirror = isolated / "mirror"
    _fake_dataset(mirror, seed=10)
    good = isolated / "good"
    _fake_dataset(good, seed=11)
    _accept(monkeypatch, "mnist", good)
    monkeypatch.setitem(D.files.MIRRORS, "mnist", (mirror.as_uri() + "/",))
    dest = isolated / "dest"
    with pytest.raises(D.ChecksumError) as info:
        D.load_dataset("mnist", "train", data_dir=dest, progress=False)
    err = info.value
    assert err.path == str(dest / "mnist" / "train-images-idx3-ubyte.gz")
    assert err.expected == _sha(good / "train-images-idx3-ubyte.gz")
    assert err.actual == _sha(mirror / "train-images-idx3-ubyte.gz")
    assert err.expected in str(err) and err.actual in str(err) and err.path in str(err)
    assert os.listdir(dest) == []  # no partial file, no unverified file, no empty mnist/


def test_bad_mirror_then_good_mirror(isolated, monkeypatch):
    bad, good = isolated / "bad", isolated / "good"
    _fake_dataset(bad, seed=12)
    content = _fake_dataset(good, seed=13)
    _accept(monkeypatch, "mnist", good)
    monkeypatch.setitem(D.files.MIRRORS, "mnist", (bad.as_uri() + "/", good.as_uri() + "/"))
    data = D.load_dataset("mnist", "test", progress=False)
    np.testing.assert_array_equal(data.x * 255, content["test"][0].reshape(-1, 784))
    assert _all_files(isolated / "cache") == [f"npvae/mnist/{f}" for f in sorted(D.FILES["test"])]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_over_local_http(isolated, monkeypatch):
    mirror = isolated / "mirror"
    content = _fake_dataset(mirror, seed=14)
    _accept(monkeypatch, "mnist", mirror)
    handler = functools.partial(_QuietHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        monkeypatch.setitem(D.files.MIRRORS, "mnist", (url,))
        data = D.load_dataset("mnist", "test", progress=True)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    np.testing.assert_array_equal(data.y, content["test"][1])


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + b"\x00" * 100)
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_cut_connection_leaves_nothing(isolated, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TruncatingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    dest = isolated / "dest"
    try:
        monkeypatch.setitem(D.files.MIRRORS, "mnist", (f"http://127.0.0.1:{server.server_address[1]}/",))
        with pytest.raises(D.DatasetNotFoundError, match="t10k-images-idx3-ubyte.gz") as info:
            D.load_dataset("mnist", "test", data_dir=dest, progress=False)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert "127.0.0.1" in str(info.value)
    assert os.listdir(dest) == []


def test_offline_error_lists_files_and_directories(isolated, monkeypatch):
    (isolated / "checkout").mkdir()
    (isolated / "checkout" / "README.md").write_text("data")
    with pytest.raises(D.DatasetNotFoundError) as info:
        D.load_dataset("fashion_mnist", "train", progress=False)
    msg = str(info.value)
    for fname in D.FILES["train"]:
        assert fname in msg
    for _, directory in D.search_dirs("fashion-mnist"):
        assert str(directory) in msg
    assert D.ENV_VAR in msg
    assert "no-mirror" in msg  # the mirror that failed
    assert "apt-get install dataset-fashion-mnist" in msg
    # the second file is not tried once the first failed on every mirror
    assert "not tried" in msg
    # the failed download left nothing behind, not even an empty directory
    assert sorted(os.listdir(isolated / "checkout")) == ["README.md"]


def test_download_disabled_error(isolated, monkeypatch):
    monkeypatch.setenv(D.ENV_VAR, str(isolated / "env"))
    with pytest.raises(D.DatasetNotFoundError, match="download=False") as info:
        D.load_dataset("mnist", "test", download=False)
    msg = str(info.value)
    assert str(isolated / "env" / "mnist") in msg
    assert str(isolated / "cache" / "npvae" / "mnist") in msg
    assert not (isolated / "cache").exists()


# --------------------------------------------------------------------------- real data


needs_mnist = pytest.mark.skipif(
    not all((REAL_MNIST / f).is_file() for f in D.FILES["train"] + D.FILES["test"]),
    reason=f"real MNIST files not present in {REAL_MNIST}")
needs_fashion = pytest.mark.skipif(
    not all((SYSTEM_FASHION / f).is_file() for f in D.FILES["train"] + D.FILES["test"]),
    reason=f"Debian's dataset-fashion-mnist is not installed ({SYSTEM_FASHION} absent)")


def _check_real(data, n):
    assert data.x.shape == (n, 784) and data.x.dtype == np.float32
    assert data.y.shape == (n,) and data.y.dtype == np.int64
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    assert set(np.unique(data.y)) == set(range(10))
    D.validate_unit_interval(data.x)


@needs_mnist
def test_real_mnist_via_env_var(isolated, monkeypatch):
    monkeypatch.setenv(D.ENV_VAR, str(REAL_MNIST))
    train = D.load_dataset("mnist", "train")
    test = D.load_dataset("mnist", "test")
    _check_real(train, 60000)
    _check_real(test, 10000)
    np.testing.assert_array_equal(train.y[:5], [5, 0, 4, 1, 9])
    # repeated loads come from the in-memory cache: same memory, read-only
    again = D.load_dataset("mnist", "train")
    assert np.shares_memory(again.x, train.x)
    assert not again.x.flags.writeable


@needs_mnist
def test_real_mnist_env_var_parent_dir(isolated, monkeypatch):
    monkeypatch.setenv(D.ENV_VAR, str(REAL_MNIST.parent))
    data = D.load_dataset("mnist", "test", limit=100)
    assert data.x.shape == (100, 784)


@needs_mnist
def test_real_mnist_download_verifies_real_checksums(isolated, monkeypatch):
    monkeypatch.setitem(D.files.MIRRORS, "mnist", (REAL_MNIST.as_uri() + "/",))
    data = D.load_dataset("mnist", "test", progress=False)
    _check_real(data, 10000)
    cache = isolated / "cache" / "npvae" / "mnist"
    assert _all_files(cache) == sorted(D.FILES["test"])


@needs_fashion
def test_fashion_mnist_from_system_dir(isolated, monkeypatch):
    monkeypatch.setattr(D.files, "SYSTEM_DATA_DIR", SYSTEM_FASHION.parent)
    train = D.load_dataset("fashion-mnist", "train")
    test = D.load_dataset("fmnist", "test")
    _check_real(train, 60000)
    _check_real(test, 10000)
    assert train.name == "fashion-mnist"
    # Fashion-MNIST is balanced: 6000 / 1000 per class
    np.testing.assert_array_equal(np.bincount(train.y), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(test.y), np.full(10, 1000))


# ------------------------------------------------------------------------- binarising


def test_fixed_binarisation_is_stable_and_seeded():
    a = D.load_dataset("synthetic", binarize="fixed", seed=3)
    b = D.load_dataset("synthetic", binarize="fixed", seed=3)
    c = D.load_dataset("synthetic", binarize="fixed", seed=4)
    cont = D.load_dataset("synthetic", seed=3)
    np.testing.assert_array_equal(a.x, b.x)
    assert set(np.unique(a.x)) == {0.0, 1.0}
    assert a.x.dtype == np.float32 and a.binarize == "fixed"
    # c differs both in data (seed) and in draws
    assert not np.array_equal(a.x, c.x)
    # Bernoulli(x): the mean of the draws is close to the mean intensity (128k pixels)
    assert abs(a.x.mean() - cont.x.mean()) < 0.01
    # a prefix of the dataset gets the same draws
    head = D.load_dataset("synthetic", binarize="fixed", seed=3, limit=100)
    full = D.make_synthetic(100, seed=3)
    np.testing.assert_array_equal(head.x, D.fixed_binarize(full.x, 3, 1))


def test_fixed_binarisation_rows_depend_only_on_their_index():
    x = D.make_synthetic(300, seed=0).x
    np.testing.assert_array_equal(D.fixed_binarize(x[:50], 0), D.fixed_binarize(x, 0)[:50])


def test_dynamic_binarisation_resamples_and_is_seeded():
    x = D.make_synthetic(500, seed=1).x
    rng = np.random.default_rng(0)
    first, second = D.dynamic_binarize(x, rng), D.dynamic_binarize(x, rng)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, D.dynamic_binarize(x, np.random.default_rng(0)))
    assert first.dtype == x.dtype
    edge = np.array([[0.0, 1.0, 0.0, 1.0]], dtype=np.float64)
    np.testing.assert_array_equal(D.dynamic_binarize(edge, rng), edge)
    assert abs(np.mean([D.dynamic_binarize(x, rng).mean() for _ in range(4)]) - x.mean()) < 0.01
    with pytest.raises(TypeError, match="default_rng"):
        D.dynamic_binarize(x, 0)


def test_dynamic_mode_keeps_continuous_pixels():
    data = D.load_dataset("synthetic", binarize="dynamic")
    assert data.binarize == "dynamic"
    np.testing.assert_array_equal(data.x, D.load_dataset("synthetic").x)


def test_threshold_binarisation():
    x = np.array([[0.2, 0.5, 0.51, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(D.threshold_binarize(x), [[0, 0, 1, 1]])
    data = D.load_dataset("synthetic", binarize="threshold")
    np.testing.assert_array_equal(data.x, (D.load_dataset("synthetic").x > 0.5))


@pytest.mark.parametrize(
    "x, pattern",
    [
        (np.array([0.1, np.nan, 0.3]), "1 NaN"),
        (np.array([0.0, 1.5]), "max 1.5"),
        (np.array([-0.25, 0.5]), "min -0.25"),
        (np.array([0, 255], dtype=np.uint8), "divide by 255"),
    ],
)
def test_validate_unit_interval_rejects(x, pattern):
    with pytest.raises(ValueError, match=pattern) as info:
        D.validate_unit_interval(x, "batch pixels")
    assert "batch pixels" in str(info.value)


def test_validate_unit_interval_accepts():
    D.validate_unit_interval(np.array([0.0, 0.5, 1.0], dtype=np.float32))
    D.validate_unit_interval(np.zeros((0, 3)))


# -------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_well_formed():
    a = D.make_synthetic(400, seed=5)
    b = D.make_synthetic(400, seed=5)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.x.shape == (400, 64) and a.x.dtype == np.float32
    assert a.y.shape == (400,) and a.y.dtype == np.int64
    assert a.image_shape == (8, 8) and len(a) == 400
    D.validate_unit_interval(a.x)
    np.testing.assert_array_equal(np.bincount(a.y), np.full(10, 40))
    assert not np.array_equal(a.x, D.make_synthetic(400, seed=6).x)
    test = D.make_synthetic(400, seed=5, split="test")
    assert not np.array_equal(a.x, test.x)


def test_synthetic_classes_are_learnable():
    train = D.make_synthetic(1000, seed=2)
    test = D.make_synthetic(300, seed=2, split="test")
    means = np.stack([train.x[train.y == k].mean(0) for k in range(10)])
    dist = ((test.x[:, None, :] - means[None]) ** 2).sum(-1)
    accuracy = (dist.argmin(1) == test.y).mean()
    assert accuracy > 0.9


def test_synthetic_other_shapes():
    data = D.make_synthetic(30, dim=10, n_classes=3, seed=0)
    assert data.x.shape == (30, 10) and data.image_shape == (1, 10)
    assert set(np.unique(data.y)) == {0, 1, 2} and data.n_classes == 3
    data = D.load_dataset("synthetic", "test", limit=50)
    assert data.x.shape == (50, 64) and data.split == "test"
    with pytest.raises(ValueError, match="noise"):
        D.make_synthetic(10, noise=2.0)


def test_repo_data_readme_documents_lookup():
    text = (REPO_DATA / "README.md").read_text()
    assert D.ENV_VAR in text and "/usr/share/datasets" in text
    for sums in D.CHECKSUMS["mnist"].values():
        assert sums.gz[0] in text
    assert os.path.basename(D.files.CHECKOUT_DATA_DIR) == "data"
