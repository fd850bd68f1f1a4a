"""Image parts users send: decoded and checked with Pillow before anything is stored.

PNG, JPEG, WebP and GIF (first frame) are accepted, turned upright by their EXIF orientation and
converted to RGB. Limits on bytes and pixels come from `[image_input]`; the pixel count is checked
from the header, before any pixel is decoded, so a decompression bomb costs nothing. What is kept
is at most `max_decoded_pixels`: a JPEG is downscaled while it is decoded (`draft`), any other image
right after (`reduce`), before the full-size pixels get copied (orientation, transparency, RGB).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

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
        """(width, height) after EXIF orientation (and any downscaling to `max_decoded_pixels`)."""
        return self.image.size


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image's header, without decoding pixels; None when it is not an image Pillow reads."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Exception:
        return None


def decode_cost(width: int, height: int) -> int:
    """Bytes decoding an image of this size may hold at its peak (full-size RGBA, plus a palette image's indexes)."""
    return width * height * 5


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}


def decode_image(data: bytes, max_bytes: int, max_pixels: int, max_decoded_pixels: int | None = None) -> DecodedImage:
    """Decode and check one image; raises ImageInputError (bad_request, too_large or unsupported).

    The pixels kept are downscaled (aspect kept) to at most `max_decoded_pixels` when given.

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
    fmt = image.format or ""
    if fmt not in MIME_BY_FORMAT:
        raise ImageInputError("unsupported", f"{fmt} images are not accepted; send PNG, JPEG, WebP or GIF")
    width, height = image.size
    if width * height > max_pixels:
        raise ImageInputError("too_large", f"the image is {width}x{height} pixels; at most {max_pixels} pixels are accepted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.seek(0)  # the first frame of an animation
            orientation = image.getexif().get(0x0112, 1)
            if max_decoded_pixels is not None and image.format == "JPEG" and width * height > max_decoded_pixels:
                scale = (max_decoded_pixels / (width * height)) ** 0.5  # draft never goes below the size asked for
                image.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
            image.load()
            if image.format != "JPEG" and image.size != (width, height):
                raise ValueError(f"decoded {image.size[0]}x{image.size[1]} pixels, the header said {width}x{height}")
            rgb = _on_white(_smaller(image, max_decoded_pixels))
            del image
            transpose = _TRANSPOSE.get(orientation)
            upright = rgb.transpose(transpose) if transpose is not None else rgb
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageInputError("bad_request", f"the {fmt} image is damaged or truncated: {exc}") from None
    return DecodedImage(upright, MIME_BY_FORMAT[fmt], data, hashlib.sha256(data).hexdigest())


def _smaller(image: Any, max_pixels: int | None) -> Any:
    """`image`, or a copy downscaled to at most `max_pixels` (by an integer factor first: cheap, and the
    full-size pixels can be freed before anything else is made of them)."""
    width, height = image.size
    if max_pixels is None or width * height <= max_pixels:
        return image
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    factor = int((width * height / max_pixels) ** 0.5)
    if factor >= 2:
        image = image.reduce(factor)
    if image.size[0] * image.size[1] > max_pixels:
        scale = (max_pixels / (image.size[0] * image.size[1])) ** 0.5
        image = image.resize((max(1, int(image.size[0] * scale)), max(1, int(image.size[1] * scale))), Image.Resampling.BILINEAR)
    return image


def _on_white(image: Any) -> Any:
    """RGB pixels; transparent areas become white (as a viewer shows them), not black."""
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
