"""Who may connect: access tokens, stored hashed, each naming a principal that owns its conversations.

Tokens come from `[auth] tokens` in config.toml (as sha256 hashes) and from the token file that
`assistant tokens create|list|revoke` manages (`[auth] tokens_file`). Only a token's sha256 is ever
stored; the token itself is shown once, when it is created. The file is re-read when it changes (checked at
most once a second), so a revoked token is refused within a second, without a restart. With no token configured
anywhere, authentication is off: every client is the principal `local`, and the server listens on
loopback only unless the config says otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

LOCAL_PRINCIPAL = "local"
RECHECK_S = 1.0
"""The token file is looked at (one stat) at most this often: a revocation takes effect within it."""
TOKEN_PREFIX = "ast_"


class AuthError(Exception):
    """A token file that cannot be read or written, or a bad command argument."""


def token_hash(token: str) -> str:
    """The sha256 of a token, as stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    """A token as stored: its id, principal, hash and lifetime."""

    id: str
    principal: str
    sha256: str
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None


class TokenFile:
    """The JSON file of hashed tokens. Writes replace the file atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[TokenRecord]:
        """Every token record; [] when the file does not exist."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise AuthError(f"{self.path}: cannot read the token file: {exc}") from None
        try:
            return [TokenRecord(**item) for item in data["tokens"]]
        except (KeyError, TypeError) as exc:
            raise AuthError(f"{self.path}: not a token file ({exc})") from None

    def _write(self, records: list[TokenRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".tokens-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"tokens": [asdict(r) for r in records]}, out, indent=2)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, self.path)

    def create(self, principal: str) -> tuple[TokenRecord, str]:
        """A new token for `principal`: its record (stored) and the token itself (shown once)."""
        if not principal or not principal.replace("-", "").replace("_", "").replace(".", "").isalnum() or len(principal) > 100:
            raise AuthError(f"principal {principal!r}: use letters, digits, '-', '_' or '.', at most 100 characters")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = TokenRecord(
            id="tok_" + secrets.token_hex(4), principal=principal, sha256=token_hash(token),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self._write([*self.read(), record])
        return record, token

    def revoke(self, id_or_principal: str) -> list[TokenRecord]:
        """Revoke the token with this id, or every active token of this principal; returns those revoked."""
        records = self.read()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        revoked, kept = [], []
        for record in records:
            if record.active and id_or_principal in (record.id, record.principal):
                record = TokenRecord(**{**asdict(record), "revoked_at": now})
                revoked.append(record)
            kept.append(record)
        if revoked:
            self._write(kept)
        return revoked


@dataclass(frozen=True)
class ConfiguredToken:
    """`[[auth.tokens]]`: a principal and the sha256 of its token."""

    principal: str
    sha256: str


class Authenticator:
    """Turns a presented token into a principal. Thread-safe; re-reads the token file when it changes."""

    def __init__(self, configured: list[ConfiguredToken], token_file: TokenFile | None) -> None:
        self.configured = {t.sha256.lower(): t.principal for t in configured}
        self.token_file = token_file
        self._lock = threading.Lock()
        self._file_state: tuple[float, int] | None = None
        self._file_tokens: dict[str, str] = {}
        self._file_has_records = False
        self._checked_at = -RECHECK_S
        self._reload()
        self._enabled = bool(self.configured) or self._file_has_records

    def _reload(self) -> None:
        if self.token_file is None:
            return
        now = time.monotonic()
        if now - self._checked_at < RECHECK_S:
            return
        self._checked_at = now
        try:
            stat = self.token_file.path.stat()
            state: tuple[float, int] | None = (stat.st_mtime, stat.st_size)
        except FileNotFoundError:
            state = None
        if state == self._file_state:
            return
        records = self.token_file.read() if state is not None else []
        self._file_tokens = {r.sha256: r.principal for r in records if r.active}
        self._file_has_records = bool(records)
        self._file_state = state

    @property
    def enabled(self) -> bool:
        """True once any token exists (revoked ones count), and from then on for the life of the process:
        revoking the last token or deleting the file must not open the server to everyone."""
        with self._lock:
            self._reload()
            self._enabled = self._enabled or bool(self.configured) or self._file_has_records
            return self._enabled

    def principal(self, token: str | None) -> str | None:
        """The principal a token names, or None when it is unknown or revoked. With auth off: `local`."""
        if not self.enabled:
            return LOCAL_PRINCIPAL
        with self._lock:
            if not token:
                return None
            digest = token_hash(token)
            for known, principal in (*self.configured.items(), *self._file_tokens.items()):
                if hmac.compare_digest(known, digest):
                    return principal
            return None
