"""Service configuration: one typed, validated object, loaded once at start-up
from a TOML file, then environment variables, then command-line flags."""
from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from recsys.errors import ConfigError
from recsys.validation import Limits

ENV_PREFIX = "ETHICREC_"


@dataclass(frozen=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    artifacts: Path = Path("artifacts")
    policy: Path | None = None            # None: the shipped default policy
    audit_log: Path = Path("var/audit.db")
    max_workers: int = 8
    reflection: str = "auto"              # auto (on when bound to loopback) | on | off
    device: str = "auto"
    torch_threads: int | None = None
    grace_seconds: float = 10.0
    blend: str = "lightgbm"               # lightgbm | linear (see recsys/blend.py)
    blend_weight: float = 0.5             # linear mode: share of the BERT interest score
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"config key port must be 0..65535; got {self.port}")
        if self.max_workers < 1:
            raise ConfigError(f"config key max_workers must be >= 1; got {self.max_workers}")
        if self.reflection not in ("auto", "on", "off"):
            raise ConfigError(f"config key reflection must be auto, on or off; got {self.reflection!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"config key device must be auto, cpu or cuda; got {self.device!r}")
        if self.blend not in ("lightgbm", "linear"):
            raise ConfigError(f"config key blend must be lightgbm or linear; got {self.blend!r}")
        if not 0 <= self.blend_weight <= 1:
            raise ConfigError(f"config key blend_weight must be between 0 and 1; got {self.blend_weight}")
        if self.grace_seconds < 0:
            raise ConfigError(f"config key grace_seconds must be >= 0; got {self.grace_seconds}")

    @property
    def reflection_enabled(self) -> bool:
        if self.reflection != "auto":
            return self.reflection == "on"
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


_CASTS: dict[str, Any] = {
    "host": str, "port": int, "artifacts": Path, "policy": Path, "audit_log": Path, "max_workers": int,
    "reflection": str, "device": str, "torch_threads": int, "grace_seconds": float,
    "blend": str, "blend_weight": float,
}


def _cast(key: str, value: Any) -> Any:
    caster = _CASTS[key]
    if caster is int and isinstance(value, bool):
        raise ConfigError(f"config key {key} must be an integer; got {value!r}")
    try:
        return caster(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key} has an invalid value {value!r}") from None


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> ServiceConfig:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
        for key, value in data.items():
            if key == "limits":
                if not isinstance(value, dict):
                    raise ConfigError("config key limits must be a table")
                limits.update(value)
            elif key in _CASTS:
                values[key] = _cast(key, value)
            else:
                raise ConfigError(f"config key {key} is not known; allowed: {', '.join(sorted([*_CASTS, 'limits']))}")
    for key in _CASTS:
        raw = env.get(ENV_PREFIX + key.upper())
        if raw:
            values[key] = _cast(key, raw)
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key] = _cast(key, value)
    known_limits = {f.name for f in fields(Limits)}
    for key in limits:
        if key not in known_limits:
            raise ConfigError(f"config key limits.{key} is not known; allowed: {', '.join(sorted(known_limits))}")
    try:
        lim = replace(Limits(), **limits)
    except ValueError as exc:
        raise ConfigError(f"config key {exc}") from None
    return ServiceConfig(**values, limits=lim)
