"""An example modality plugin: what an image's metadata says (size, format, camera, date taken).

Installed as its own package, it is found through its `assistant` entry point. For a dialogue model
that reads only text, each image a user sends then comes with a line such as
`[Image 1: a 4032x3024 JPEG photo, taken with a Pixel 8 on 2024-05-01 at 10:00]`. Configured by
`[plugins.image_metadata]`: `camera` and `date` (both true) say whether to mention them; the core
validates that table with `MetadataSettings` at startup. GPS coordinates are never passed on; only
the fact that the photo has a location.
"""

from __future__ import annotations

import io

from PIL import ExifTags, Image
from pydantic import BaseModel, ConfigDict, Field

from assistant import ImageInput, Modality, hookimpl

PLUGIN_NAME = "image_metadata"  # the entry-point name in pyproject.toml, hence the `[plugins.image_metadata]` table


class MetadataSettings(BaseModel):
    """`[plugins.image_metadata]`: what to mention besides size and format. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    camera: bool = Field(True, description="mention the camera make and model")
    date: bool = Field(True, description="mention when the photo was taken")


class ImageMetadata(Modality):
    """Describes an image by its pixel size, its format and the EXIF data of the bytes the user sent."""

    def __init__(self) -> None:
        self.settings = MetadataSettings()

    def load(self, app) -> bool:
        """Take the validated `[plugins.image_metadata]` settings; there is nothing to load."""
        self.settings = app.plugin_settings(PLUGIN_NAME)
        return True

    def describe(self, image: ImageInput) -> str | None:
        """`a WxH FORMAT image[, taken with MAKE MODEL][ on DATE][, with a GPS location]`."""
        with Image.open(io.BytesIO(image.data)) as original:
            kind = original.format or image.mime
            exif = original.getexif()
        width, height = image.image.size
        text = f"a {width}x{height} {kind} image"
        camera = " ".join(str(exif.get(tag, "")).strip() for tag in (ExifTags.Base.Make, ExifTags.Base.Model)).strip()
        if self.settings.camera and camera:
            text += f", taken with {camera}"
        taken = exif.get_ifd(ExifTags.IFD.Exif).get(ExifTags.Base.DateTimeOriginal) or exif.get(ExifTags.Base.DateTime)
        if self.settings.date and taken:
            day, _, time = str(taken).partition(" ")
            text += (" on " if self.settings.camera and camera else ", taken on ") + day.replace(":", "-")
            text += f" at {time[:5]}" if time else ""
        if exif.get_ifd(ExifTags.IFD.GPSInfo):
            text += ", with a GPS location"
        return text


@hookimpl
def register_modalities(register):
    """Register the `image_metadata` modality and its settings model."""
    register("image_metadata", ImageMetadata(), settings=MetadataSettings)
