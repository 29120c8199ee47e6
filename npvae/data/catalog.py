"""The data sets npvae knows: names and aliases, splits, the files of each split and their SHA-256 sums,
and ``Dataset``, the arrays of one split."""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

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
