"""Image decoding, conversion to RGB uint8, and the resize/crop geometry."""

from __future__ import annotations

import io
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
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadImageError(item_id, f"cannot read file: {e}") from e
    if not data:
        raise BadImageError(item_id, "empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
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
