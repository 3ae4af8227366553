"""A chat request's image parts → loaded images: data URLs always, local files only under the configured root.

The server never fetches a URL itself (that would let any client make it call any host).
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

from PIL import Image

from ..images import ImageError, ImageTooLargeError, load_image

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,", re.ASCII)


class RequestImageError(ValueError):
    """An image part the server will not or cannot use; the message says which and why (a 400)."""


def _from_data_url(url: str, max_pixels: int) -> Image.Image:
    head = _DATA_URL.match(url)
    if head is None:
        raise RequestImageError("image_url: a data URL must look like data:image/png;base64,<data>")
    mime = head.group("mime") or "text/plain"
    if not mime.startswith("image/"):
        raise RequestImageError(f"image_url: the data URL holds {mime}, not an image")
    if not head.group("b64"):
        raise RequestImageError("image_url: the data URL must be base64-encoded (data:image/...;base64,...)")
    try:
        data = base64.b64decode(url[head.end():], validate=True)
    except (binascii.Error, ValueError):
        raise RequestImageError("image_url: the data URL's base64 payload is not valid base64") from None
    return load_image(data, max_pixels=max_pixels)


def _from_local_path(url: str, root: Path | None, max_pixels: int) -> Image.Image:
    if root is None:
        raise RequestImageError("image_url: this server takes images as data URLs (data:image/...;base64,...); "
                                "local paths need the server to be started with --image-root DIR")
    raw = url.removeprefix("file://")
    path = Path(raw) if Path(raw).is_absolute() else root / raw
    resolved, base = path.resolve(), root.resolve()
    if not resolved.is_relative_to(base):
        raise RequestImageError(f"image_url: {raw} is outside the server's image root")
    return load_image(resolved, max_pixels=max_pixels)


def load_request_image(url: str, *, root: Path | None, max_pixels: int) -> Image.Image:
    """The image an `image_url` names, as upright 8-bit RGB; RequestImageError / ImageTooLargeError otherwise."""
    if not isinstance(url, str) or not url:
        raise RequestImageError("image_url: expected a non-empty URL string")
    scheme = url.split(":", 1)[0].lower() if ":" in url[:12] else ""
    try:
        if scheme == "data":
            return _from_data_url(url, max_pixels)
        if scheme in ("http", "https", "ftp"):
            raise RequestImageError("image_url: this server does not fetch URLs; send the image as a data URL")
        return _from_local_path(url, root, max_pixels)
    except ImageTooLargeError:
        raise
    except ImageError as err:
        raise RequestImageError(f"image_url: {err}") from None
