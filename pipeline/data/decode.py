"""Image decoding, conversion to RGB uint8, and the resize/crop geometry."""

from __future__ import annotations

import io
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import BadImageError, DataError, check_positive_int

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

# What PIL raises on truncated, corrupt or hostile files (UnidentifiedImageError is an OSError).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# The formats image folders document: no other PIL plugin (EPS, which runs Ghostscript, among them) ever sees
# a file's bytes. (PIL's JPEG opener also reads multi-picture JPEGs.)
FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
# Larger image files are refused unread: a photo is a few MB; this bounds memory per decode thread.
MAX_FILE_BYTES = 256 << 20


class _Named(io.BytesIO):
    """File bytes whose repr is the item id, so PIL's messages name the file, not a memory address."""

    def __init__(self, data: bytes, item_id: str) -> None:
        super().__init__(data)
        self._item_id = item_id

    def __repr__(self) -> str:
        return repr(self._item_id)


def read_file(path: Path, item_id: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; anything else is a BadImageError.

    FIFOs, devices (a link to /dev/zero), sockets, directories, link loops, dangling links and oversized files
    are refused before a byte is read, so no read can block or grow without bound.
    """
    try:
        # O_NONBLOCK: should the path become a FIFO after the check, opening it still cannot block.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise BadImageError(item_id, f"cannot open file: {e.strerror or e}") from e
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadImageError(item_id, "not a regular file (a FIFO, device, socket or directory)")
        if info.st_size > limit:
            raise BadImageError(item_id, f"file of {info.st_size} bytes exceeds the {limit}-byte limit")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise BadImageError(item_id, f"cannot read file: {e.strerror or e}") from e
    finally:
        os.close(fd)
    if len(data) > limit:
        raise BadImageError(item_id, f"file grew past the {limit}-byte limit while read")
    return data


@dataclass(frozen=True)
class Geometry:
    """How an image is brought to a fixed square size.

    Args:
        resolution: side of the square output, in pixels.
        resize: when set, the shorter side is first resized to `resize` (the longer side to
            int(resize * long / short), as torchvision's Resize does), then a centred
            `resolution` square is cropped (left = round((w - resolution) / 2), likewise top).
            When None, the image is resized straight to resolution x resolution.
        resample: PIL filter name, one of RESAMPLE's keys.
    """

    resolution: int
    resize: int | None = None
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        check_positive_int("Geometry resolution", self.resolution)
        if self.resize is not None and (isinstance(self.resize, bool) or not isinstance(self.resize, int)
                                        or self.resize < self.resolution):
            raise DataError(f"Geometry resize must be None or an int >= resolution ({self.resolution}), "
                            f"got {self.resize!r}")
        if self.resample not in RESAMPLE:
            raise DataError(f"unknown resample {self.resample!r}; valid: {', '.join(RESAMPLE)}")

    def apply(self, image: Image.Image) -> Image.Image:
        """Resizes (and centre-crops) a PIL image to resolution x resolution."""
        r, f = self.resolution, RESAMPLE[self.resample]
        w, h = image.size
        if self.resize is None:
            return image.resize((r, r), f)
        if w <= h:
            size = (self.resize, int(self.resize * h / w))
        else:
            size = (int(self.resize * w / h), self.resize)
        if size != (w, h):
            image = image.resize(size, f)
        left, top = round((size[0] - r) / 2), round((size[1] - r) / 2)
        return image.crop((left, top, left + r, top + r))


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """Composites (H, W, 4) uint8 RGBA over a white background, rounding to nearest."""
    rgb = rgba[..., :3].astype(np.uint32)
    alpha = rgba[..., 3:].astype(np.uint32)
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any PIL mode to RGB uint8.

    Alpha (RGBA, LA, PA, P with transparency) is composited over white; 16-bit grey keeps the
    high byte (v >> 8, so 65535 -> 255 and 257 * x -> x); CMYK and the rest use PIL's convert.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT:
        grey = np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        return Image.fromarray(_over_white(np.asarray(image.convert("RGBA"))), "RGB")
    return image.convert("RGB")


def decode_file(path: Path, item_id: str, geometry: Geometry) -> np.ndarray:
    """Reads one image file, decoded by content (not extension), as RGB at the geometry.

    Args:
        path: the file.
        item_id: the name used in errors.
        geometry: the output size.
    Returns:
        (1, resolution, resolution, 3) uint8.
    Raises:
        BadImageError: unreadable, empty, truncated or corrupt file.
    """
    data = read_file(path, item_id)
    if not data:
        raise BadImageError(item_id, "empty file (0 bytes)")
    try:
        with Image.open(_Named(data, item_id), formats=FORMATS) as image:
            image.load()
            rgb = to_rgb(image)
    except _DECODE_ERRORS as e:
        raise BadImageError(item_id, f"cannot decode ({type(e).__name__}: {e})") from e
    return np.asarray(geometry.apply(rgb), dtype=np.uint8)[None]


def resize_array(images: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Applies a geometry to (N, H, W, C) uint8 arrays, N >= 1, C = 1 or 3, keeping C."""
    mode = "L" if images.shape[-1] == 1 else "RGB"
    out = [np.asarray(geometry.apply(Image.fromarray(im[..., 0] if mode == "L" else im, mode)))
           for im in images]
    stacked = np.stack(out)
    return stacked[..., None] if mode == "L" else stacked
