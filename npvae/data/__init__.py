"""Data sets: MNIST and Fashion-MNIST (found locally or downloaded and verified) and synthetic data.

    catalog.py    names, splits, file names and SHA-256 sums; ``Dataset``
    files.py      lookup order, checksums, downloads (``dataset_files``)
    idx.py        the IDX file format
    load.py       ``load_dataset``: decode once, binarise, return a ``Dataset``
    binarize.py   dynamic / fixed / threshold binarisation
    shift.py      random translations of square images (M2's labelled images, ``--shift``)
    synthetic.py  a synthetic data set for offline runs
"""

from npvae.data import files  # noqa: F401
from npvae.data.binarize import BINARIZE_MODES, dynamic_binarize, fixed_binarize, threshold_binarize  # noqa: F401
from npvae.data.catalog import CHECKSUMS, FILES, IMAGE_SHAPE, N_EXAMPLES, SPLITS, Dataset, FileSum, \
    canonical_name  # noqa: F401
from npvae.data.files import ENV_VAR, ChecksumError, DatasetNotFoundError, cache_dir, dataset_files, \
    download_dataset, search_dirs, sha256_file, verify_file  # noqa: F401
from npvae.data.idx import IDXError, encode_idx, parse_idx, read_idx, write_idx  # noqa: F401
from npvae.data.load import clear_cache, load_dataset  # noqa: F401
from npvae.data.synthetic import make_synthetic  # noqa: F401
from npvae.validate import check_unit_interval as validate_unit_interval  # noqa: F401 (the old name)
