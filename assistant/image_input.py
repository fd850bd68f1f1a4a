"""Image parts users send: decoded and checked with Pillow before anything is stored.

PNG, JPEG, WebP and GIF (first frame) are accepted, turned upright by their EXIF orientation and
converted to RGB. Limits on bytes and pixels come from `[image_input]`; the pixel count is checked
from the header, before any pixel is decoded, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

MIME_BY_FORMAT: dict[str, str] = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}


class ImageInputError(Exception):
    """An image part that cannot be accepted; `code` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class DecodedImage:
    """An accepted image: upright RGB pixels, its detected mime type, the bytes as sent and their sha256."""

    image: Any  # PIL.Image.Image, mode RGB
    mime: str
    data: bytes
    sha256: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) after EXIF orientation."""
        return self.image.size


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> DecodedImage:
    """Decode and check one image; raises ImageInputError (bad_request, too_large or unsupported).

    Blocking (decoding takes milliseconds to seconds): call it off the event loop.
    """
    if not data:
        raise ImageInputError("bad_request", "the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageInputError("too_large", f"the image is {len(data)} bytes; at most {max_bytes} are accepted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageInputError("too_large", f"the image has too many pixels: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageInputError("bad_request", "the data is not an image (PNG, JPEG, WebP or GIF expected)") from None
    if image.format not in MIME_BY_FORMAT:
        raise ImageInputError("unsupported", f"{image.format} images are not accepted; send PNG, JPEG, WebP or GIF")
    width, height = image.size
    if width * height > max_pixels:
        raise ImageInputError("too_large", f"the image is {width}x{height} pixels; at most {max_pixels} pixels are accepted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.seek(0)  # the first frame of an animation
            image.load()
            upright = ImageOps.exif_transpose(image)
            rgb = _on_white(upright)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageInputError("bad_request", f"the {image.format} image is damaged or truncated: {exc}") from None
    return DecodedImage(rgb, MIME_BY_FORMAT[image.format], data, hashlib.sha256(data).hexdigest())


def _on_white(image: Any) -> Any:
    """RGB pixels; transparent areas become white (as a viewer shows them), not black."""
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
