"""The web client: plain HTML, CSS and JavaScript in `static/`, served by the server at `/` (no build step).

The files are read once when the server starts and served from memory with their content type and
a Content-Security-Policy that allows only this origin (and the websocket on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class StaticFile:
    """A file of the web client: its bytes and content type."""

    body: bytes
    content_type: str


def load_static_files() -> dict[str, StaticFile]:
    """URL path -> file, for every file in `static/`; `/` serves `index.html`."""
    files = {}
    for entry in resources.files(__name__).joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in CONTENT_TYPES:
            files["/" + entry.name] = StaticFile(entry.read_bytes(), CONTENT_TYPES[suffix])
    files["/"] = files["/index.html"]
    return files
