"""Decoding and checking image parts with Pillow, no sockets."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image

from assistant.image_input import ImageInputError, decode_image
from tests import images

LIMITS = {"max_bytes": 5 * 1024 * 1024, "max_pixels": 40_000_000}


@pytest.mark.parametrize("fmt, mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp"), ("GIF", "image/gif")])
def test_accepted_formats_decode_to_rgb_with_their_mime_and_sha256(fmt, mime):
    """PNG, JPEG, WebP and GIF decode to RGB pixels of the right size, with the detected mime and the sha256 of the bytes."""
    data = images.solid("red", (48, 40), fmt)
    decoded = decode_image(data, **LIMITS)
    assert decoded.mime == mime and decoded.image.mode == "RGB" and decoded.size == (48, 40)
    assert decoded.sha256 == hashlib.sha256(data).hexdigest() and decoded.data == data
    red, green, blue = decoded.image.getpixel((10, 10))
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_is_applied():
    """A JPEG stored 60x20 whose EXIF says 'rotate 90 degrees' comes out 20x60."""
    assert decode_image(images.exif_rotated_jpeg((60, 20), orientation=6), **LIMITS).size == (20, 60)


def test_an_animated_gif_gives_its_first_frame():
    """Only the first frame of an animation is used."""
    frames = [Image.new("RGB", (16, 16), color) for color in ("blue", "yellow")]
    data = images.encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    red, green, blue = decode_image(data, **LIMITS).image.getpixel((5, 5))
    assert blue > 200 and red < 60


def test_transparency_becomes_white():
    """A fully transparent PNG decodes to white, as a viewer shows it."""
    data = images.encode(Image.new("RGBA", (8, 8), (0, 0, 0, 0)))
    assert decode_image(data, **LIMITS).image.getpixel((2, 2)) == (255, 255, 255)


@pytest.mark.parametrize("data, code, words", [
    (b"", "bad_request", "empty"),
    (b"hello, I am a text file\n" * 10, "bad_request", "not an image"),
    (images.solid("blue", (64, 64))[:-40], "bad_request", "truncated"),
    (images.png_header_only(30000, 30000), "too_large", "pixels"),
    (images.png_header_only(5000, 9000), "too_large", "5000x9000"),
    (images.solid("blue", (8, 8), "TIFF"), "unsupported", "TIFF"),
    (images.solid("blue", (8, 8), "BMP"), "unsupported", "BMP"),
], ids=["zero-bytes", "text-file", "truncated-png", "bomb-30000x30000", "over-max-pixels", "tiff", "bmp"])
def test_bad_images_are_refused_with_their_code(data, code, words):
    """Zero bytes, text, a truncated PNG, bombs and unsupported formats each raise the right code and say why."""
    with pytest.raises(ImageInputError) as caught:
        decode_image(data, **LIMITS)
    assert caught.value.code == code and words in str(caught.value), str(caught.value)


def test_too_many_bytes_is_too_large():
    """An image over max_bytes is refused before it is decoded."""
    with pytest.raises(ImageInputError) as caught:
        decode_image(images.solid("red", (200, 200)), max_bytes=100, max_pixels=10**9)
    assert caught.value.code == "too_large" and "100" in str(caught.value)
