"""Digit images for ``otpnn predict``: PNG/JPEG files (through Pillow) or IDX image files.

The network was trained on MNIST: 28x28 grey levels, a white digit on a black background. A
picture is made alike: converted to grey, resized to 28x28 if it is not, and inverted when its
background is light (judged by its border pixels, unless the caller says), since a digit drawn
or photographed on paper is dark on light. IDX files are taken as they are (MNIST's own layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from otpnn.data import DataError
from otpnn.data.idx import read_idx

SIDE = 28
INVERT_CHOICES = ("auto", "yes", "no")


@dataclass
class Digit:
    """One image to classify: where it came from and its 784 uint8 pixels."""

    name: str
    pixels: np.ndarray
    inverted: bool = False


def load_digits(path: str | Path, invert: str = "auto") -> list[Digit]:
    """The digits in one file: one per picture, one per image of an IDX file. DataError naming
    the file for anything unreadable."""
    path = Path(path)
    if _is_idx(path):
        images = read_idx(path, 3)
        if images.shape[1:] != (SIDE, SIDE):
            raise DataError(f"{path}: images are {images.shape[1]}x{images.shape[2]}, not 28x28")
        return [Digit(f"{path}[{i}]", img.reshape(-1)) for i, img in enumerate(images)]
    return [_picture(path, invert)]


def _is_idx(path: Path) -> bool:
    name = path.name.removesuffix(".gz")
    return name.endswith("-ubyte") or name.endswith(".idx") or name.endswith(".idx3")


def _picture(path: Path, invert: str) -> Digit:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError("reading PNG or JPEG needs Pillow: pip install 'otpnn[predict]'") from None
    try:
        with Image.open(path) as img:
            grey = img.convert("L")
            if grey.size != (SIDE, SIDE):
                grey = grey.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
            pixels = np.asarray(grey, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    flip = invert == "yes" or (invert == "auto" and border.mean() > 127)
    if flip:
        pixels = 255 - pixels
    return Digit(str(path), pixels.reshape(-1), inverted=flip)
