"""MNIST: where it is looked for, how it is verified, and how it is downloaded.

Search order: (1) an explicit directory (--data-dir), (2) $OTPNN_DATA_DIR, (3) the per-user cache
($XDG_CACHE_HOME/otpnn/mnist, default ~/.cache/otpnn/mnist). A directory counts when it holds all
four files, each gzipped or raw under its standard name. Every file is checked for structure and
its (decompressed) content against MNIST's known SHA-256, so another dataset in the same format is
never silently used, whichever way a mirror compressed it.
Downloads go to the cache, are verified before they are written, and are written atomically.
"""

from __future__ import annotations

import hashlib
import io
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from otpnn.atomic import write_atomic
from otpnn.data.errors import DataError
from otpnn.data.idx import decompress, parse_idx, read_bytes

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# SHA-256 of the decompressed IDX content (as in SHA256SUMS). Content, not the .gz bytes, is what
# is checked: mirrors and local copies gzip the same data differently.
_SUMS = """
ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db  train-images-idx3-ubyte
65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5  train-labels-idx1-ubyte
0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7  t10k-images-idx3-ubyte
ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2  t10k-labels-idx1-ubyte
"""
SHA256 = {name: digest for digest, name in map(str.split, _SUMS.strip().splitlines())}
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
ENV_VAR = "OTPNN_DATA_DIR"


class _Progress(tqdm):
    monitor_interval = 0  # no tqdm monitor thread outliving the download


@dataclass(frozen=True)
class VerifiedFile:
    path: Path
    sha256: str
    shape: tuple[int, ...]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "otpnn" / "mnist"


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The directories looked in, in order. An explicit ``data_dir`` is the only one: a wrong
    one is the user's mistake to hear about, not a reason to read (or download) another."""
    if data_dir:
        return [Path(data_dir)]
    dirs = []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]))
    return [*dirs, cache_dir()]


def _locate(directory: Path, base: str) -> Path | None:
    for name in (base + ".gz", base):
        if (directory / name).is_file():
            return directory / name
    return None


def _missing(directory: Path) -> list[str]:
    return [base for base in FILES.values() if _locate(directory, base) is None]


def where_to_put(dirs: Sequence[Path]) -> str:
    names = ", ".join(f"{b}.gz" for b in FILES.values())
    places = "\n".join(f"  - {d}" for d in dirs)
    return (
        f"Put the four MNIST files ({names}; gzipped or not) in one of:\n{places}\n"
        f"(pass --data-dir DIR or set {ENV_VAR}=DIR), or run `otpnn data fetch` with network."
    )


def find_mnist(data_dir: str | os.PathLike | None = None) -> Path:
    """First directory in the search order holding all four files; DataError if none does."""
    dirs = search_dirs(data_dir)
    for d in dirs:
        if not _missing(d):
            return d
    found = "; ".join(f"{d}: missing {', '.join(_missing(d))}" for d in dirs)
    raise DataError(f"MNIST not found ({found}).\n{where_to_put(dirs)}")


def _parse(path: Path, ndim: int) -> tuple[np.ndarray, bytes]:
    """Structure of one file (its errors say more than a checksum mismatch); also its content."""
    content = decompress(path, read_bytes(path))
    arr = parse_idx(path, content, ndim)
    if ndim == 3 and arr.shape[1:] != (28, 28):
        raise DataError(f"{path}: images are {arr.shape[1]}x{arr.shape[2]}, expected 28x28")
    if ndim == 1 and arr.size and arr.max() > 9:
        raise DataError(f"{path}: label {arr.max()} out of range, expected 0..9")
    return arr, content


def _checksum(path: Path, content: bytes) -> str:
    """MNIST's known SHA-256, so another dataset in the same format is never used silently."""
    digest = hashlib.sha256(content).hexdigest()
    expected = SHA256[path.name.removesuffix(".gz")]
    if digest != expected:
        raise DataError(
            f"{path}: content SHA-256 {digest} does not match MNIST's {expected} "
            "(a different or modified file; delete it and fetch again)"
        )
    return digest


def load_mnist(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """The four verified arrays; images as uint8 (N, 784) C-contiguous, labels uint8 (N,)."""
    return _load(Path(directory))[0]


def verify_mnist(directory: str | os.PathLike) -> list[VerifiedFile]:
    """Check structure, counts and checksums of all four files; DataError on the first defect."""
    return _load(Path(directory))[1]


def _load(directory: Path) -> tuple[dict[str, np.ndarray], list[VerifiedFile]]:
    missing = _missing(directory)
    if missing:
        raise DataError(f"{directory}: missing {', '.join(missing)}.\n{where_to_put([directory])}")
    arrays, contents = {}, {}
    for role, base in FILES.items():
        path = _locate(directory, base)
        assert path is not None, "_missing found every file"
        arrays[role], contents[path] = _parse(path, 3 if role.endswith("images") else 1)
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise DataError(
                f"{directory}: {split} has {n_img} images but {n_lab} labels; they must match"
            )
    report = [
        VerifiedFile(path, _checksum(path, content), arr.shape)
        for (path, content), arr in zip(contents.items(), arrays.values(), strict=True)
    ]
    flat = {k: v.reshape(len(v), -1) if v.ndim == 3 else v for k, v in arrays.items()}
    return flat, report


def fetch_mnist(
    directory: str | os.PathLike | None = None,
    mirrors: Sequence[str] = DEFAULT_MIRRORS,
    *,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download whichever of the four gzipped files are missing (or fail verification) into
    `directory` (default: the cache), trying mirrors in order; return the directory."""
    directory = Path(directory) if directory else cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{directory}: cannot create directory ({e.strerror})") from None
    for role, base in FILES.items():
        path = _locate(directory, base)
        if path is not None:
            try:
                _checksum(path, _parse(path, 3 if role.endswith("images") else 1)[1])
                continue
            except DataError:
                pass  # replaced below by a verified download
        _download(base + ".gz", directory, mirrors, progress, timeout)
    return directory


def _download(
    name: str, directory: Path, mirrors: Sequence[str], progress: bool, timeout: float
) -> None:
    failures = []
    expected = SHA256[name.removesuffix(".gz")]
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        try:
            data = _get(url, name, progress, timeout)
            digest = hashlib.sha256(decompress(Path(name), data)).hexdigest()
        except (urllib.error.URLError, OSError, ValueError) as e:
            failures.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        except DataError as e:
            failures.append(f"{url}: {e}")
            continue
        if digest == expected:
            write_atomic(directory / name, data)
            return
        failures.append(f"{url}: content SHA-256 {digest} does not match the expected {expected}")
    raise DataError(
        f"could not download {name}: "
        + "; ".join(failures or ["no mirrors given"])
        + f"\n{where_to_put([directory])}"
    )


def _get(url: str, name: str, progress: bool, timeout: float) -> bytes:
    buf = io.BytesIO()
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        with _Progress(
            total=total, unit="B", unit_scale=True, desc=name, disable=not progress, leave=False
        ) as bar:
            while chunk := resp.read(1 << 16):
                buf.write(chunk)
                bar.update(len(chunk))
    return buf.getvalue()
