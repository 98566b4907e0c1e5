"""Input images -> HxWx3 uint8 RGB, with documented conversions.

Accepted:
* PIL.Image in any mode Pillow can convert: RGB as is; grayscale (L, I;16, I, F) is
  replicated to three channels; palette (P) is expanded; 16-bit data is reduced to
  8 bits (round(v / 257)); CMYK / YCbCr / LAB go through Pillow's RGB conversion.
* numpy arrays HxWx3, HxW or HxWx1 (grayscale), HxWx4 (RGBA), of dtype uint8,
  uint16 (reduced as above) or float in [0, 1] (rounded to 1/255).
* torch tensors (3, H, W) or (1, 3, H, W) (also 1-channel), uint8 or float in [0, 1].
* a path (str or pathlib.Path) to an image file Pillow can read.
An alpha channel is dropped only when it is fully opaque; an image with transparency
is rejected (flatten it onto a background first), since decoding returns RGB only.
Anything else raises ImageError.

load_image(source) also returns the metadata a codec should keep: the EXIF orientation is
applied to the pixels (and the tag reset to 1), and the ICC profile, EXIF block and a
grayscale source mode are returned for the bitstream (see load_image).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .bitstream import MAX_SIDE
from .errors import ImageError


def _from_pil(img) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if mode == "F":
            raise ImageError("float ('F' mode) PIL images are not supported: convert to 8-bit first")
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ImageError(f"{mode} image values outside 0..65535")
        return _from_array(a.astype(np.uint16))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        return _from_array(np.asarray(img.convert("RGBA")))
    if mode in ("1", "L", "P", "RGB", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB"))
    raise ImageError(f"unsupported PIL image mode {mode!r}")


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.uint16:
        return np.floor(a.astype(np.float64) / 257 + 0.5).astype(np.uint8)
    if a.dtype in (np.float16, np.float32, np.float64):
        if not np.isfinite(a).all():
            raise ImageError("image contains NaN or infinite values")
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ImageError(f"float images must lie in [0, 1], got [{a.min():.3g}, {a.max():.3g}]")
        return np.floor(a.astype(np.float64) * 255 + 0.5).astype(np.uint8)
    raise ImageError(f"unsupported image dtype {a.dtype}: use uint8, uint16 or float in [0, 1]")


def _from_array(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ImageError(f"expected an HxWx3, HxWx4 or HxW image array, got shape {a.shape}")
    a = _to_uint8(a)
    if a.shape[2] == 4:
        if (a[:, :, 3] != 255).any():
            raise ImageError("image has transparency (alpha < 255); ECF codes RGB only: "
                             "composite it onto a background first")
        a = a[:, :, :3]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return a


def _with_file(path, convert):
    """convert(the opened, loaded PIL image of path); an unreadable file is an ImageError."""
    try:
        with Image.open(path) as img:
            img.load()
            return convert(img)
    except UnidentifiedImageError as e:
        raise ImageError(f"{path}: not an image file Pillow can read") from e


def to_rgb_array(image) -> np.ndarray:
    """Any supported image -> contiguous HxWx3 uint8 array (see module docstring)."""
    if isinstance(image, (str, Path)):
        return _with_file(image, to_rgb_array)
    if isinstance(image, Image.Image):
        a = _from_pil(image)
    elif isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise ImageError(f"expected a (3, H, W) or (1, 3, H, W) tensor, got shape {tuple(image.shape)}")
        a = _from_array(t.permute(1, 2, 0).numpy())
    elif isinstance(image, np.ndarray):
        a = _from_array(image)
    else:
        raise ImageError(f"unsupported image type {type(image).__name__}: "
                         "pass a PIL.Image, a numpy array, a torch tensor or a file path")
    H, W = a.shape[:2]
    if H < 1 or W < 1 or H > MAX_SIDE or W > MAX_SIDE:
        raise ImageError(f"image size {W}x{H} outside 1..{MAX_SIDE} per side")
    return np.require(a, requirements=["C_CONTIGUOUS", "WRITEABLE"])


GRAY_MODES = ("1", "L", "LA", "La", "I;16", "I;16B", "I;16L", "I;16N", "I")
EXIF_PREFIX = b"Exif\x00\x00"
ORIENTATION = 0x0112


def load_image(source) -> tuple[np.ndarray, dict]:
    """A path or PIL.Image -> (HxWx3 uint8 RGB, metadata). Other inputs (arrays, tensors)
    -> (to_rgb_array(source), {}).

    metadata has the keys that apply, of:
    * "icc_profile": bytes, the embedded ICC profile;
    * "exif": bytes starting with b"Exif\\0\\0" (the form JPEG stores; Pillow's PNG, WebP and
      AVIF writers accept it too), with the orientation tag reset to 1;
    * "mode": "L" when the source is grayscale (so a decoder can give grayscale back).
    The EXIF orientation (tag 0x0112, values 2..8) is applied to the returned pixels, as
    every viewer does, so the coded image looks the way the source is displayed."""
    if isinstance(source, (str, Path)):
        return _with_file(source, load_image)
    if not isinstance(source, Image.Image):
        return to_rgb_array(source), {}
    meta = {}
    if source.info.get("icc_profile"):
        meta["icc_profile"] = bytes(source.info["icc_profile"])
    exif = source.getexif()
    orientation = exif.get(ORIENTATION, 1)
    if orientation not in (1, None):
        source = ImageOps.exif_transpose(source)
        exif[ORIENTATION] = 1
        meta["exif"] = exif.tobytes()
    elif source.info.get("exif"):
        raw = bytes(source.info["exif"])
        meta["exif"] = raw if raw.startswith(EXIF_PREFIX) else EXIF_PREFIX + raw
    elif len(exif):                              # e.g. TIFF tags: no raw block in .info
        meta["exif"] = exif.tobytes()
    if source.mode in GRAY_MODES:
        meta["mode"] = "L"
    return to_rgb_array(source), meta
