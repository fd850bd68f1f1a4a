"""Generic model sources: a local folder, and the Hugging Face hub (cache only while offline)."""

from __future__ import annotations

import os
from pathlib import Path

from assistant import hookimpl
from assistant.models import ModelSource, NotHere


class LocalPathSource(ModelSource):
    """A name that is an existing folder is used as it is."""

    def resolve(self, name: str, cache_dir: Path) -> Path:
        """The folder itself, if it exists and holds a config.json (or a diffusers model_index.json)."""
        path = Path(name).expanduser()
        if not path.exists():
            raise NotHere(f"no folder at {str(path)!r}")
        if not path.is_dir() or not any((path / f).is_file() for f in ("config.json", "model_index.json")):
            raise NotHere(f"{str(path)!r} is not a model folder (no config.json or model_index.json)")
        return path.resolve()


class HubSource(ModelSource):
    """A hub id such as `HuggingFaceTB/SmolLM2-360M-Instruct`: the local HF cache, or a download when online."""

    def resolve(self, name: str, cache_dir: Path) -> Path:
        """Snapshot folder of the hub repo; raises NotHere when offline and not cached."""
        if name.count("/") != 1 or name.startswith((".", "/", "~")):
            raise NotHere(f"{name!r} is not a hub id of the form owner/name")
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        try:
            return Path(snapshot_download(name, local_files_only=offline))
        except LocalEntryNotFoundError:
            raise NotHere(f"{name!r} is not in the local hub cache and HF_HUB_OFFLINE=1 forbids downloads") from None
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise NotHere(f"hub download of {name!r} failed: {exc}") from None


@hookimpl(trylast=True)
def register_model_sources(register):
    """Register the local-folder and hub sources, last, so packs and third parties come first."""
    register("local_path", LocalPathSource())
    register("huggingface_hub", HubSource())
