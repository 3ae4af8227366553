"""Load images from paths, PIL images or arrays into 8-bit RGB, with clear errors for bad input."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]  # noqa: UP007 - a runtime alias on Python 3.10

# 40 MP: above a 8K×5K photo. Larger inputs are refused before their pixels are decoded.
DEFAULT_MAX_PIXELS = 40_000_000
# Transparent pixels are composited over this colour.
ALPHA_BACKGROUND = (255, 255, 255)
ORIENTATION = 0x0112  # the EXIF orientation tag


class ImageError(ValueError):
    """An input that cannot be used as an image; the message names the input and the problem."""


class ImageTooLargeError(ImageError):
    """An image above the configured pixel limit."""


def _describe(src: object) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, np.ndarray):
        return f"array{tuple(src.shape)}"
    if isinstance(src, Image.Image):
        return f"PIL image {src.size[0]}x{src.size[1]} {src.mode}"
    return type(src).__name__


def _check_pixels(width: int, height: int, max_pixels: int | None, name: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: image is {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} (raise max_pixels or downscale it first)"
        )


def _open_file(path: Path, max_pixels: int | None) -> Image.Image:
    name = str(path)
    if not path.exists():
        raise ImageError(f"{name}: file not found")
    if path.is_dir():
        raise ImageError(f"{name}: is a directory, not an image file")
    if path.stat().st_size == 0:
        raise ImageError(f"{name}: file is empty (0 bytes)")
    return _open_bytes(path.read_bytes(), name, max_pixels)


def _open_bytes(data: bytes, name: str, max_pixels: int | None) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a recognised image format") from None
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{name}: image is too large to decode safely ({err})") from None
    except OSError as err:
        raise ImageError(f"{name}: cannot read image header ({err})") from None
    _check_pixels(img.width, img.height, max_pixels, name)
    try:
        img.load()
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{name}: image is too large to decode safely ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{name}: image data is truncated or corrupt ({err})") from None
    return img


def _from_array(arr: np.ndarray, name: str) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(f"{name}: expected an array of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError(f"{name}: array contains NaN or infinite values")
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.integer) and arr.min(initial=0) >= 0 and arr.max(initial=0) <= 255:
            arr = arr.astype(np.uint8)
        else:
            raise ImageError(f"{name}: unsupported array dtype {arr.dtype} (use uint8, uint16, float or bool)")
    return Image.fromarray(np.ascontiguousarray(arr))


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale → 8-bit L, scaled by the type's range."""
    arr = np.asarray(img)
    if img.mode == "F":
        scale = 255.0 if np.nanmax(arr, initial=0.0) <= 1.0 else 1.0
        arr = np.nan_to_num(arr) * scale
    else:
        arr = arr.astype(np.float64) / 257.0  # 16-bit range → 8-bit
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode → 8-bit RGB: alpha composited over white, CMYK/palette/16-bit converted."""
    if img.mode.startswith("I") or img.mode == "F":
        img = _high_bit_depth_to_l(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img if img.mode == "RGB" else img.convert("RGB")


def _is_loaded(img: Image.Image) -> bool:
    """True for an image `load_image` would return unchanged: 8-bit RGB, in memory, no EXIF rotation."""
    return img.mode == "RGB" and not getattr(img, "fp", None) and img.getexif().get(ORIENTATION, 1) == 1


def load_image(src: ImageInput, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Path, bytes, PIL image or numpy array → upright 8-bit RGB PIL image.

    Applies EXIF orientation. An image it already loaded is returned as it is (not copied), so
    loading twice decodes once. Raises `ImageError` (naming the input) for missing, empty,
    corrupt or truncated files, unsupported arrays, and `ImageTooLargeError` above `max_pixels`.
    """
    name = _describe(src)
    if isinstance(src, (str, os.PathLike)):
        img = _open_file(Path(src).expanduser(), max_pixels)
    elif isinstance(src, (bytes, bytearray)):
        if not src:
            raise ImageError("bytes: empty input (0 bytes)")
        img = _open_bytes(bytes(src), "bytes", max_pixels)
    elif isinstance(src, Image.Image):
        if _is_loaded(src):
            _check_pixels(src.width, src.height, max_pixels, name)
            return src  # already upright 8-bit RGB: nothing to decode or convert
        img = src
    elif isinstance(src, np.ndarray):
        img = _from_array(src, name)
    else:
        raise ImageError(f"{name}: expected a path, bytes, PIL image or numpy array")
    _check_pixels(img.width, img.height, max_pixels, name)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:
        pass
    try:
        return to_rgb(img)
    except (OSError, ValueError) as err:
        raise ImageError(f"{name}: cannot convert image to RGB ({err})") from None
