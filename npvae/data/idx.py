"""The IDX file format of MNIST and Fashion-MNIST: read (plain or gzip) and write.

An IDX file is a 4-byte magic number ``00 00 TT ND`` (TT = element type, ND = number of
dimensions), then ND big-endian uint32 sizes, then the elements in C order, big-endian.
"""

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np

from npvae.fileio import atomic_write_bytes

GZIP_MAGIC = b"\x1f\x8b"
MAX_DIMS = 32              # numpy 1.x's limit (MNIST: 3)
MAX_BYTES = 1 << 31        # the largest payload read (MNIST's training images: 47 MB); a gzip bomb stops here

# type byte -> big-endian dtype of the stored elements
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_NAMES = {0x08: "ubyte", 0x09: "byte", 0x0B: "short", 0x0C: "int", 0x0D: "float",
               0x0E: "double"}


class IDXError(ValueError):
    """An IDX file is truncated, corrupt or not an IDX file; the message names the file."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _read_bytes(path):
    """All bytes of the IDX content of ``path``, decompressing when the file is gzip."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise IDXError(path, f"cannot read file: {exc}") from exc
    is_gzip = raw[:2] == GZIP_MAGIC
    if path.suffix == ".gz" and not is_gzip:
        hint = ""
        if raw[:2] == b"\x00\x00":
            hint = (" (it starts like an uncompressed IDX file: it was probably decompressed"
                    " on download without being renamed; drop the .gz from its name)")
        raise IDXError(path, f"named .gz but is not gzip-compressed: first bytes are "
                             f"{raw[:4].hex(' ') or 'empty'}, expected 1f 8b{hint}")
    if not is_gzip:
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:  # bounded: never more than the header promises
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\x00\x00" or not head[3] or head[3] > MAX_DIMS:
                return _drained(f, head)  # parse_idx says what is wrong with the header
            head += f.read(4 * head[3])
            if len(head) < 4 + 4 * head[3] or head[2] not in IDX_TYPES:
                return _drained(f, head)
            expected = _payload_bytes(head, path)
            return head + f.read(expected + 1)
    except EOFError as exc:
        raise IDXError(path, f"truncated gzip stream ({len(raw)} compressed bytes): {exc}; "
                             "the download was probably cut short, delete the file and fetch "
                             "it again") from exc
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise IDXError(path, f"corrupt gzip stream: {exc}; delete the file and fetch it "
                             "again") from exc


def _drained(f, head):
    """``head``, after reading the rest of the gzip stream ``f`` in bounded chunks (so a truncated or
    corrupt stream is reported as such), keeping none of it."""
    total = 0
    while total <= MAX_BYTES and (chunk := f.read(1 << 20)):
        total += len(chunk)
    return head


def _payload_bytes(head, path):
    """Bytes of data the header ``head`` (magic and dims, checked) promises; IDXError above MAX_BYTES."""
    dims = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(head[3])]
    itemsize = IDX_TYPES[head[2]].itemsize
    # Python ints: no overflow. Zero-length dimensions aside too: numpy refuses a shape like (0, 2**32, 2**32)
    span = math.prod(d for d in dims if d) * itemsize
    if span > MAX_BYTES:
        raise IDXError(path, f"header claims shape {tuple(dims)} of {_TYPE_NAMES[head[2]]}, {span} bytes, "
                             f"more than the {MAX_BYTES} bytes this reader accepts; the file is corrupt")
    return math.prod(dims) * itemsize


def parse_idx(buf, path="<bytes>"):
    """Decode IDX bytes into an array of native byte order.

    Args:
        buf: bytes of a whole, uncompressed IDX file.
        path: name used in error messages.
    Returns:
        array of shape ``dims`` from the header, dtype per the type byte (native byte order).
    """
    if len(buf) < 4:
        raise IDXError(path, f"too short for an IDX header: {len(buf)} bytes, need at least 4")
    zero, type_byte, ndim = buf[0:2], buf[2], buf[3]
    if zero != b"\x00\x00":
        raise IDXError(path, f"bad magic number 0x{buf[:4].hex()}: an IDX file starts with "
                             "0x0000 then a type byte and the number of dimensions")
    if type_byte not in IDX_TYPES:
        known = ", ".join(f"0x{t:02x} ({n})" for t, n in _TYPE_NAMES.items())
        raise IDXError(path, f"bad magic number 0x{buf[:4].hex()}: unknown element type "
                             f"0x{type_byte:02x}; known types are {known}")
    if ndim == 0 or ndim > MAX_DIMS:
        raise IDXError(path, f"bad magic number 0x{buf[:4].hex()}: number of dimensions is {ndim}, "
                             f"expected 1 to {MAX_DIMS}")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise IDXError(path, f"truncated header: {ndim} dimensions need {header} header bytes, "
                             f"file has {len(buf)}")
    dims = tuple(int(d) for d in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[type_byte]
    expected = _payload_bytes(bytes(buf[:header]), path)
    found = len(buf) - header
    if found < expected:
        raise IDXError(path, f"truncated: expected {expected} bytes of data for shape {dims} "
                             f"of {_TYPE_NAMES[type_byte]}, found {found}")
    if found > expected:
        raise IDXError(path, f"corrupt: expected {expected} bytes of data for shape {dims} of "
                             f"{_TYPE_NAMES[type_byte]}, found {found} ({found - expected} "
                             "extra bytes)")
    data = np.frombuffer(buf, dtype=dtype, count=expected // dtype.itemsize, offset=header)
    return data.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def read_idx(path):
    """Read an IDX file, plain or gzip-compressed (detected from its first bytes).

    Args:
        path: file path; a name ending in ``.gz`` must hold gzip data.
    Returns:
        array of the shape in the header, e.g. (60000, 28, 28) uint8 for MNIST training images.
    Raises:
        IDXError: truncated, corrupt or mislabelled file (the message says which and why).
    """
    return parse_idx(_read_bytes(path), path)


def _dtype_code(dtype):
    for code, idx_dtype in IDX_TYPES.items():
        if np.dtype(dtype) == idx_dtype.newbyteorder("=") or np.dtype(dtype) == idx_dtype:
            return code
    known = ", ".join(str(d.newbyteorder("=")) for d in IDX_TYPES.values())
    raise ValueError(f"write_idx: dtype {np.dtype(dtype)} has no IDX type; use one of {known}")


def encode_idx(array):
    """The IDX bytes of ``array``.

    Args:
        array: (d1, ..., dk) array, 1 <= k <= 255, of uint8, int8, int16, int32, float32 or
            float64.
    Returns:
        bytes: header and big-endian data.
    """
    array = np.asarray(array)
    code = _dtype_code(array.dtype)
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx: an IDX array needs 1 to 255 dimensions, got shape "
                         f"{array.shape}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()


def write_idx(path, array):
    """Write ``array`` as an IDX file atomically, gzip-compressed when the name ends in .gz.

    Args:
        path: destination; written via a temporary file in the same directory and os.replace.
        array: (d1, ..., dk) array of an IDX element type (see ``encode_idx``).
    Returns:
        Path of the written file.
    """
    path = Path(path)
    data = encode_idx(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return atomic_write_bytes(path, lambda f: f.write(data))
