"""Pseudonymised user ids in the audit log: HMAC-SHA256 under a secret key that is kept away from the log.

The log stores `hmac:<key id>:<HMAC-SHA256(key, user id) in hex>` instead of the user id. Without the key
the value cannot be computed, so it cannot be reversed by trying candidate ids (the earlier scheme, a
SHA-256 with a salt stored beside the log, could: whoever held the log's directory held the salt, and
30 of 33 MovieLens user ids came back in under a second by trying 0..100,000). With the key it is one
HMAC per candidate id, which is what a reviewer looking up one user's decisions does
(`python -m audit.lookup`). The key id (the first 12 hex digits of an HMAC of a fixed label under the
key; it reveals nothing about the key) stays in every record, so after a key rotation old records stay
attributable to the key that made them, and destroying an old key makes its records' users unlinkable.

Where the key comes from, first match wins:
  1. `ETHICREC_AUDIT_KEY` (the key itself, at least 32 characters);
  2. a key file: the `audit_key_file` config key / `ETHICREC_AUDIT_KEY_FILE` / `--audit-key-file`, or
     else the default `$XDG_CONFIG_HOME/ethicrec/audit.key` (`~/.config/ethicrec/audit.key`), created with
     a fresh random key (0600, in a 0700 directory) the first time nothing else is configured.
A key file is refused (start-up stops, naming it) if it lies in the log's directory (or below it), if its
group or others have any access to it, if it is not a regular file owned by this user (or root), or if it
holds fewer than 32 characters.

Records written before this scheme (a bare 64-hex salted SHA-256) are kept as they are: rewriting them
would break the hash chain that makes the log tamper-evident. `key_id_of` reports them as legacy (None);
`audit.lookup --legacy-salt-file` can still search them.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from recsys.atomic import write_text_atomic
from recsys.errors import ConfigError

KEY_ENV = "ETHICREC_AUDIT_KEY"
KEY_FILE_ENV = "ETHICREC_AUDIT_KEY_FILE"
LEGACY_SALT_ENV = "ETHICREC_AUDIT_SALT"
SCHEME = "hmac"
MIN_KEY_CHARS = 32
_KEY_ID_LABEL = b"ethicrec audit key id v1"


@dataclass(frozen=True)
class AuditKey:
    """A pseudonymisation key and where it came from (for messages; never the key itself)."""

    secret: bytes = field(repr=False)
    source: str = "given"

    @property
    def key_id(self) -> str:
        return hmac.new(self.secret, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:12]

    def pseudonym(self, user_id: str) -> str:
        digest = hmac.new(self.secret, user_id.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"{SCHEME}:{self.key_id}:{digest}"


def key_id_of(user_hash: str) -> str | None:
    """The key id a stored user hash was made with; None for a legacy (salted SHA-256) value."""
    if user_hash.startswith(SCHEME + ":"):
        return user_hash.split(":", 2)[1]
    return None


def legacy_pseudonym(salt: bytes, user_id: str) -> str:
    """The user hash of records written before the HMAC scheme: SHA-256(salt, NUL, user id)."""
    return hashlib.sha256(salt + b"\x00" + user_id.encode("utf-8")).hexdigest()


def default_key_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ethicrec" / "audit.key"


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except ValueError:
        return False


def check_key_file(path: Path, log_path: Path | None, what: str = "audit key file") -> None:
    """ConfigError unless `path` may hold the key (module docstring); reads nothing."""
    if log_path is not None and _inside(path, Path(log_path).parent):
        raise ConfigError(f"{what} {path} lies in the audit log's directory {Path(log_path).parent.resolve()}: "
                          "whoever holds the log would hold the key; keep it elsewhere")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{what} {path} is not a regular file")
    if st.st_mode & 0o077:
        raise ConfigError(f"{what} {path} is accessible to its group or to others (mode {stat.S_IMODE(st.st_mode):04o});"
                          f" refusing to read it: chmod 600 {path}")
    if st.st_uid not in (os.geteuid(), 0):
        raise ConfigError(f"{what} {path} is owned by uid {st.st_uid}, not by this user or root")


def _checked_secret(text: str, source: str) -> bytes:
    text = text.strip()
    if len(text) < MIN_KEY_CHARS:
        raise ConfigError(f"{source}: the audit key must be at least {MIN_KEY_CHARS} characters; make one with "
                          "python -c 'import secrets; print(secrets.token_hex(32))'")
    return text.encode("utf-8")


def read_key_file(path: Path, log_path: Path | None = None) -> AuditKey:
    check_key_file(path, log_path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"audit key file {path} cannot be read: {exc}") from None
    return AuditKey(_checked_secret(text, f"audit key file {path}"), str(path))


def _create_key_file(path: Path) -> None:
    """A fresh random key at `path`, 0600 in a 0700 directory, appearing whole (written to a temporary
    file and linked into place, so a concurrent starter either creates it or reads the finished one)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # overwrite=False: if another process created it first, use theirs
    write_text_atomic(path, secrets.token_hex(32) + "\n", mode=0o600, overwrite=False)


def resolve_key(log_path: Path | None, key_file: Path | None = None, *, create: bool = True) -> AuditKey | None:
    """The key for a log at `log_path` (module docstring for the order). With `create` False a default key
    file that does not exist yet is not made (returns None: make it later with `create=True`); everything
    that can be checked without writing is checked now, so a bad configuration fails before anything is
    created."""
    env = os.environ.get(KEY_ENV)
    if env:
        return AuditKey(_checked_secret(env, KEY_ENV), KEY_ENV)
    explicit = key_file or (Path(os.environ[KEY_FILE_ENV]) if os.environ.get(KEY_FILE_ENV) else None)
    if explicit is not None:
        return read_key_file(Path(explicit), log_path)
    path = default_key_path()
    if log_path is not None and _inside(path, Path(log_path).parent):
        raise ConfigError(f"the default audit key file {path} would lie in the audit log's directory; set "
                          f"{KEY_ENV} or audit_key_file to a key kept elsewhere")
    if not path.exists():
        if not create:
            return None
        _create_key_file(path)
    return read_key_file(path, log_path)
