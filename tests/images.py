"""Images made in tests with Pillow: plain colours, rendered signs, EXIF-rotated photos and a bomb."""

from __future__ import annotations

import struct
import zlib

from PIL import Image, ImageDraw, ImageFont

from assistant.testing.media import encode_image, image_part

__all__ = ["encode", "exif_rotated_jpeg", "image_part", "png_header_only", "sign", "solid"]


encode = encode_image  # the image saved in `fmt` (the installed kit's helper)


def solid(color: str | tuple[int, int, int], size: tuple[int, int] = (48, 40), fmt: str = "PNG") -> bytes:
    """A one-colour image."""
    return encode(Image.new("RGB", size, color), fmt)


def sign(text: str, size: tuple[int, int] = (640, 240)) -> bytes:
    """A white sign with `text` in black, as a PNG (Pillow's built-in font: no system fonts needed)."""
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((30, size[1] // 3), text, fill="black", font=ImageFont.load_default(size=48))
    return encode(image)


def exif_rotated_jpeg(size: tuple[int, int] = (60, 20), orientation: int = 6) -> bytes:
    """A JPEG stored `size` wide whose EXIF says to rotate it (6: 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "TestCam"  # Make
    exif[0x0110] = "Model 1"  # Model
    exif[0x0132] = "2024:05:01 10:00:00"  # DateTime
    return encode(Image.new("RGB", size, "green"), "JPEG", exif=exif.tobytes())


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels with almost no data: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
