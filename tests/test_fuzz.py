"""Fuzz tests (hypothesis, bounded time): any bytes given to the IDX reader or the checkpoint loader give
either a valid result or the library's own error type (IDXError, CheckpointError), never another
exception."""

import gzip
import io
import json
import struct
import zipfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from npvae.data.idx import IDXError, encode_idx, parse_idx, read_idx  # noqa: E402
from npvae.training.checkpoint import CheckpointError, load_checkpoint  # noqa: E402

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


def idx_like():
    """Bytes that look like IDX often enough to reach the header and size checks: a valid file, cut,
    extended or with bytes replaced, or a plausible header with random dimensions."""
    valid = st.builds(lambda a: encode_idx(np.asarray(a, np.uint8)),
                      st.lists(st.integers(0, 255), min_size=1, max_size=20))
    header = st.builds(lambda t, dims, tail: bytes([0, 0, t, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
                       + tail, st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07]),
                       st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 4), min_size=0, max_size=70),
                       st.binary(max_size=64))
    # the corners: products that wrap around 2**64 (4 x 65536), and more dimensions than numpy takes
    corner = st.builds(lambda dims: bytes([0, 0, 0x08, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims),
                       st.lists(st.sampled_from([0, 1, 2, 65536, 2**32 - 1]), min_size=1, max_size=70))
    mutated = st.builds(lambda b, i, v: b[:i % (len(b) + 1)] + bytes([v]) + b[i % (len(b) + 1) + 1:],
                        valid, st.integers(0, 100), st.integers(0, 255))
    return st.one_of(st.binary(max_size=200), valid, header, corner, mutated, valid.map(lambda b: b[:-3]))


@settings(FUZZ, max_examples=300)
@given(idx_like(), st.booleans())
def test_any_bytes_read_as_idx_give_an_array_or_an_idx_error(tmp_path, data, compress):
    path = tmp_path / ("f.gz" if compress else "f")
    path.write_bytes(gzip.compress(data) if compress else data)
    try:
        a = read_idx(path)
    except IDXError:
        return
    assert isinstance(a, np.ndarray) and a.dtype.isnative
    np.testing.assert_array_equal(a, parse_idx(data))


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_as_a_gzip_file_give_an_array_or_an_idx_error(tmp_path, data):
    path = tmp_path / "f.gz"
    path.write_bytes(b"\x1f\x8b" + data)
    try:
        read_idx(path)
    except IDXError:
        pass


def _good_checkpoint():
    """A small valid checkpoint's bytes (np.savez of params, optimizer state and metadata)."""
    rng_state = np.random.default_rng(0).bit_generator.state
    meta = {"format_version": 1, "kind": "vae", "epoch": 1, "config": {"model": {}, "train": {}},
            "rng_state": rng_state, "history": [{"epoch": 1, "train_loss": 1.5}]}
    arrays = {"param/w": np.ones((2, 3), np.float32), "optim/kind": np.array("Adam"), "optim/t": np.array(3),
              "optim/m/w": np.zeros((2, 3), np.float32), "meta": np.array(json.dumps(meta))}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue(), arrays, meta


GOOD, ARRAYS, META = _good_checkpoint()


def test_the_fuzzed_checkpoint_is_valid_to_start_with(tmp_path):
    (tmp_path / "c.npz").write_bytes(GOOD)
    ck = load_checkpoint(tmp_path / "c.npz")
    assert ck["meta"]["epoch"] == 1 and ck["params"]["w"].shape == (2, 3)


def _npz(arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 2**70) | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                           max_leaves=8)
meta_edits = st.dictionaries(st.sampled_from(sorted(META) + ["rng_state.bit_generator", "config.model"]),
                             json_values, min_size=1, max_size=3)


def _edited_meta(edits):
    meta = json.loads(json.dumps(META))
    for key, value in edits.items():
        if "." in key:
            outer, inner = key.split(".")
            if isinstance(meta.get(outer), dict):
                meta[outer][inner] = value
        else:
            meta[key] = value
    return json.dumps(meta)


array_values = st.sampled_from([np.array([[np.inf, 0, 0], [0, 0, 0]], np.float32), np.ones((2, 3), np.int64),
                                np.array(["a"]), np.ones((2, 3), np.float64), np.array(1.0), np.zeros((0,))])


@st.composite
def checkpoints(draw):
    kind = draw(st.integers(0, 3))
    if kind == 0:  # random bytes, or a zip of random members
        return draw(st.binary(max_size=400))
    if kind == 1:  # the valid file cut short or with bytes changed (CRC errors, broken headers)
        cut = draw(st.integers(0, len(GOOD)))
        b = bytearray(GOOD[:cut] if draw(st.booleans()) else GOOD)
        for _ in range(draw(st.integers(0, 4))):
            if b:
                b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
        return bytes(b)
    if kind == 2:  # valid arrays, metadata with wrong types, keys or values
        return _npz({**ARRAYS, "meta": np.array(_edited_meta(draw(meta_edits)))})
    arrays = dict(ARRAYS)  # arrays of the wrong dtype, shape, finiteness
    arrays[draw(st.sampled_from(sorted(ARRAYS)))] = draw(array_values)
    return _npz(arrays)


@FUZZ
@given(checkpoints())
def test_any_bytes_as_a_checkpoint_give_a_checkpoint_or_a_checkpoint_error(tmp_path, data):
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(data)
    try:
        ck = load_checkpoint(path)
    except CheckpointError:
        return
    meta = ck["meta"]  # what came through has the schema
    assert isinstance(meta["epoch"], int) and len(meta["history"]) == meta["epoch"]
    assert all(v.dtype in (np.float32, np.float64) and np.isfinite(v).all() for v in ck["params"].values())
    assert all(np.isfinite(v).all() for v in ck["optim"].values() if v.dtype.kind == "f")


def test_a_zip_member_claiming_a_huge_array_is_refused_before_allocating(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("param/w.npy", header.getvalue() + b"\0" * 64)
        zf.writestr("meta.npy", _npz({"meta": ARRAYS["meta"]})[0:0] or b"")
    (tmp_path / "c.npz").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="claims shape"):
        load_checkpoint(tmp_path / "c.npz")
