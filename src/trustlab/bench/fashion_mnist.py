"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (MIT/Expat; 60,000 + 10,000 28x28 images of 10
clothing classes), read from its original gzipped IDX files: the offline image data of mix-cd's vision part,
the DDPM of Diffusion-TracIn and the Concept Gradient concept sets. ``apt-get install dataset-fashion-mnist``
(``bash scripts/install.sh test`` does it); the files are found with ``dpkg -L``, never a hard-coded path.

Example:
    >>> files = fashion_mnist_files()
    >>> None if files is None else read_idx(files["train_labels"]).shape
    (60000,)
"""

from __future__ import annotations

import gzip
import math
import subprocess
from pathlib import Path

import numpy as np

from trustlab.errors import DataFileError

FASHION_FILES = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
                 "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}


def fashion_mnist_files() -> dict[str, Path] | None:
    """The four IDX files of Debian's ``dataset-fashion-mnist``, as listed by ``dpkg -L``; None when the
    package (or dpkg) is missing or a file is absent."""
    try:
        listing = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True,
                                 timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if listing.returncode != 0:
        return None
    found = {}
    for line in listing.stdout.splitlines():
        path = Path(line.strip())
        for key, name in FASHION_FILES.items():
            if path.name == name and path.is_file():
                found[key] = path
    return found if len(found) == len(FASHION_FILES) else None


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file of unsigned bytes: images (magic 2051, 16-byte header) or labels (2049, 8 bytes)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic == 2051:
        n, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
        shape, start = (n, rows, cols), 16
    elif magic == 2049:
        shape, start = (int.from_bytes(raw[4:8], "big"),), 8
    else:
        raise DataFileError(f"{path} is not an IDX file of unsigned bytes (magic number {magic})")
    data = np.frombuffer(raw, dtype=np.uint8, offset=start)
    if data.size != math.prod(shape):
        raise DataFileError(f"{path}: the header promises {math.prod(shape)} values, the file holds {data.size}")
    return data.reshape(shape)
