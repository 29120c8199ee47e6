"""IDX reading and writing: round trips, exact bytes, and clear errors on broken files."""

import gzip
import os

import numpy as np
import pytest

from npvae.data.idx import IDXError, encode_idx, parse_idx, read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def _random_array(dtype, shape, rng):
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype) * 1e3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (4, 28, 28), (2, 1, 3, 2)])
def test_round_trip(tmp_path, dtype, suffix, shape):
    rng = np.random.default_rng(0)
    array = _random_array(dtype, shape, rng)
    path = tmp_path / f"a-idx{len(shape)}{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype)
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    if suffix:
        assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert sorted(os.listdir(tmp_path)) == [path.name], "temporary file left behind"


def test_header_and_big_endian_bytes():
    data = encode_idx(np.array([[1, -2, 258]], dtype=np.int16))
    assert data[:4] == bytes([0, 0, 0x0B, 2])
    assert data[4:12] == bytes([0, 0, 0, 1, 0, 0, 0, 3])
    assert data[12:] == bytes([0x00, 0x01, 0xFF, 0xFE, 0x01, 0x02])


def test_uint8_header_matches_mnist_layout():
    data = encode_idx(np.zeros((2, 28, 28), dtype=np.uint8))
    assert data[:16] == bytes.fromhex("00000803" "00000002" "0000001c" "0000001c")
    assert len(data) == 16 + 2 * 784


def test_gzip_detected_by_content_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = tmp_path / "plain-name-idx2-ubyte"
    path.write_bytes(gzip.compress(encode_idx(array)))
    np.testing.assert_array_equal(read_idx(path), array)


def test_write_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    assert os.listdir(tmp_path) == []


def test_write_replaces_existing_file_atomically(tmp_path):
    path = tmp_path / "a.gz"
    write_idx(path, np.zeros(5, dtype=np.uint8))
    write_idx(path, np.ones(7, dtype=np.uint8))
    np.testing.assert_array_equal(read_idx(path), np.ones(7, dtype=np.uint8))
    assert os.listdir(tmp_path) == ["a.gz"]


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_truncated_payload(tmp_path, suffix):
    full = encode_idx(np.zeros((10, 28, 28), dtype=np.uint8))
    cut = full[: 16 + 1234]
    path = tmp_path / f"images-idx3-ubyte{suffix}"
    path.write_bytes(gzip.compress(cut) if suffix else cut)
    with pytest.raises(IDXError) as info:
        read_idx(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "truncated: expected 7840 bytes of data" in msg
    assert "found 1234" in msg
    assert info.value.path == str(path)


def test_truncated_gzip_stream(tmp_path):
    blob = gzip.compress(np.random.default_rng(1).integers(0, 255, 5000, dtype=np.uint8)
                         .tobytes())
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(IDXError, match="truncated gzip stream") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip_stream(tmp_path):
    array = np.random.default_rng(2).integers(0, 255, (50, 28, 28), dtype=np.uint8)
    blob = bytearray(gzip.compress(encode_idx(array)))
    for i in range(30, len(blob) - 20, 97):
        blob[i] ^= 0xFF
    path = tmp_path / "images-idx3-ubyte.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(IDXError) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert "gzip" in str(info.value)


def test_plain_file_named_gz(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(encode_idx(np.arange(5, dtype=np.uint8)))
    with pytest.raises(IDXError, match="not gzip-compressed") as info:
        read_idx(path)
    assert "drop the .gz" in str(info.value)
    assert str(path) in str(info.value)


def test_html_named_gz(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(b"<html>Not Found</html>")
    with pytest.raises(IDXError, match="not gzip-compressed: first bytes are 3c 68 74 6d"):
        read_idx(path)


@pytest.mark.parametrize(
    "blob, pattern",
    [
        (b"\x01\x02\x08\x01\x00\x00\x00\x01\x00", "bad magic number 0x01020801"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown element type 0x07"),
        (b"\x00\x00\x08\x00", "number of dimensions is 0"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated header: 3 dimensions need 16"),
        (b"\x00\x00", "too short for an IDX header: 2 bytes"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02\x05\x06\x07", "1 extra bytes"),
    ],
)
def test_bad_headers(tmp_path, blob, pattern):
    path = tmp_path / "bad-idx"
    path.write_bytes(blob)
    with pytest.raises(IDXError, match=pattern) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_empty_dimension():
    blob = encode_idx(np.zeros((0, 3), dtype=np.float32))
    out = parse_idx(blob)
    assert out.shape == (0, 3) and out.dtype == np.float32


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope.gz")


# ------------------------------------------------------------- hostile headers (issue 14)


def test_dimensions_whose_product_overflows_int64_are_an_idx_error():
    blob = b"\x00\x00\x08\x03" + b"\xff\xff\xff\xff" * 3 + b"\x00" * 8
    with pytest.raises(IDXError, match=r"header claims shape \(4294967295, 4294967295, 4294967295\)"):
        parse_idx(blob)


def test_more_dimensions_than_numpy_takes_are_an_idx_error():
    blob = b"\x00\x00\x08\x41" + b"\x00\x00\x00\x01" * 65 + b"\x07"
    with pytest.raises(IDXError, match="number of dimensions is 65, expected 1 to 32"):
        parse_idx(blob)


def test_a_gzip_bomb_is_refused_from_its_header_without_decompressing_it(tmp_path, monkeypatch):
    import npvae.data.idx as idx_module

    header = b"\x00\x00\x08\x01" + (4_000_000_000).to_bytes(4, "big")
    path = tmp_path / "bomb-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(header + b"\x00" * 2_000_000))
    with pytest.raises(IDXError, match="4000000000 bytes, more than the 2147483648 bytes"):
        read_idx(path)
    # a small header over a long stream: only what the header promises (+1 byte) is decompressed
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x0a" + b"\x00" * 5_000_000))
    reads = []
    real = gzip.GzipFile.read
    monkeypatch.setattr(gzip.GzipFile, "read", lambda self, n=-1: reads.append(n) or real(self, n))
    with pytest.raises(IDXError, match="expected 10 bytes .* found 11"):
        read_idx(path)
    assert -1 not in reads and sum(reads) < 100
    assert idx_module.MAX_BYTES == 1 << 31
