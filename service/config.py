"""Service configuration: one typed, validated object, loaded once at start-up
from a TOML file, then environment variables, then command-line flags.

Everything that can be wrong about a value (range, enum, a TLS file that is
not there) is checked here, so a bad deployment stops before the model loads,
with a message naming the key.
"""
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
MAX_PROCESSES = 64
# Inline tokens only from the environment: a config file is often committed, a secret must not be.
TOKENS_ENV = ENV_PREFIX + "AUTH_TOKENS"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    artifacts: Path = Path("artifacts")
    policy: Path | None = None            # None: the shipped default policy
    audit_log: Path = Path("var/audit.db")
    audit_store: str | None = None        # where audit records go: a SQLite path or postgresql://USER@HOST:PORT/DB
                                          # (audit/store/); None: audit_log. ETHICREC_AUDIT_STORE, --audit-store
    audit_store_password_file: Path | None = None   # PostgreSQL password (0600); else ETHICREC_AUDIT_STORE_PASSWORD
    audit_journal_dir: Path = Path("var/audit-journal")   # PostgreSQL store: this process's local journal
    audit_writer: str | None = None       # PostgreSQL store: the name in this process's writer id (default: host name)
    audit_key_file: Path | None = None    # pseudonymisation key (audit/pseudonym.py); None: ETHICREC_AUDIT_KEY,
                                          # else the default key file (created on first start)
    max_workers: int = 0                  # RPCs executing at once; 0 = auto (`rpc_workers`)
    max_queue: int = 16                   # RPCs waiting for a worker; more in flight -> RESOURCE_EXHAUSTED
    max_streams: int = 0                  # RankStreams (any streaming call) open at once, on their own threads;
                                          # 0 = auto (`rpc_workers`); more -> RESOURCE_EXHAUSTED (service/lanes.py)
    stream_idle_timeout_s: float = 30.0   # a stream with no request and no response taken for this long is ended
    request_read_timeout_s: float = 10.0  # a unary call whose request message has not arrived by then is ended
    processes: int = 1                    # server processes sharing the port (service/processes.py)
    max_message_bytes: int = 16 * 1024 * 1024
    reflection: str = "auto"              # auto (on when bound to loopback) | on | off
    device: str = "auto"
    encode_precision: str = "auto"        # text encoding: auto (bf16 on CUDA and native-bf16 CPUs) | fp32 | bf16
    torch_threads: int | None = None
    grace_seconds: float = 10.0
    blend: str = "lightgbm"               # lightgbm | linear (see recsys/blend.py)
    blend_weight: float = 0.5             # linear mode: share of the BERT interest score
    encode_batch_max: int = 64            # texts per shared BERT call for cache misses (recsys/microbatch.py); 0 = off
    encode_batch_wait_ms: float = 0.0     # how long the first request may wait for others to join its batch
    encode_batch_instances: int = 0       # batches encoded at once (Triton's instance count); 0 = auto (`rpc_workers`)
    tls_cert: Path | None = None          # PEM server certificate chain; with tls_key turns TLS on
    tls_key: Path | None = None
    tls_client_ca: Path | None = None     # PEM CA bundle; set = mutual TLS (client certificates required)
    auth_tokens_file: Path | None = None  # one bearer token per line; with ETHICREC_AUTH_TOKENS turns auth on
    auth_tokens: tuple[str, ...] = field(default=(), repr=False)   # from ETHICREC_AUTH_TOKENS (comma-separated)
    metrics_port: int | None = None       # Prometheus /metrics on metrics_host:metrics_port; None/0 = off
    metrics_host: str = "127.0.0.1"       # loopback by default, whatever `host` is
    metrics_tls: str = "auto"             # auto: HTTPS with tls_cert/tls_key (and tls_client_ca) when set | on | off
    metrics_auth: str = "auto"            # auto: the gRPC bearer tokens required when auth is on | on | off
    log_format: str = "auto"              # auto (text on a terminal, else JSON) | json | text
    log_level: str = "INFO"
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"config key port must be 0..65535; got {self.port}")
        if self.max_workers < 0:
            raise ConfigError(f"config key max_workers must be >= 1, or 0 for auto; got {self.max_workers}")
        if self.max_message_bytes < 1:
            raise ConfigError(f"config key max_message_bytes must be >= 1; got {self.max_message_bytes}")
        if not 1 <= self.processes <= MAX_PROCESSES:
            raise ConfigError(f"config key processes must be between 1 and {MAX_PROCESSES}; got {self.processes}")
        if self.processes > 1 and self.port == 0:
            raise ConfigError("config key processes > 1 needs a fixed port (the processes share it); got port 0")
        if self.processes > 1 and self.metrics_port and self.metrics_port + self.processes - 1 > 65535:
            raise ConfigError(f"config key metrics_port: processes {self.processes} serve /metrics on "
                              f"{self.metrics_port}..{self.metrics_port + self.processes - 1}, past 65535")
        if self.max_streams < 0:
            raise ConfigError(f"config key max_streams must be >= 1, or 0 for auto; got {self.max_streams}")
        for key in ("stream_idle_timeout_s", "request_read_timeout_s"):
            if not 0 < getattr(self, key) <= 86400:
                raise ConfigError(f"config key {key} must be > 0 and at most 86400 seconds; got {getattr(self, key)}")
        if self.max_queue < 0:
            raise ConfigError(f"config key max_queue must be >= 0; got {self.max_queue}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"config key torch_threads must be >= 1; got {self.torch_threads}")
        if self.reflection not in ("auto", "on", "off"):
            raise ConfigError(f"config key reflection must be auto, on or off; got {self.reflection!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"config key device must be auto, cpu or cuda; got {self.device!r}")
        if self.encode_precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"config key encode_precision must be auto, fp32 or bf16; got {self.encode_precision!r}")
        if self.blend not in ("lightgbm", "linear"):
            raise ConfigError(f"config key blend must be lightgbm or linear; got {self.blend!r}")
        if not 0 <= self.blend_weight <= 1:
            raise ConfigError(f"config key blend_weight must be between 0 and 1; got {self.blend_weight}")
        if self.encode_batch_max < 0:
            raise ConfigError(f"config key encode_batch_max must be >= 0 (0 = off); got {self.encode_batch_max}")
        if self.encode_batch_instances < 0:
            raise ConfigError(f"config key encode_batch_instances must be >= 1, or 0 for auto; "
                              f"got {self.encode_batch_instances}")
        if not 0 <= self.encode_batch_wait_ms <= 1000:
            raise ConfigError(f"config key encode_batch_wait_ms must be between 0 and 1000; "
                              f"got {self.encode_batch_wait_ms}")
        if self.grace_seconds < 0:
            raise ConfigError(f"config key grace_seconds must be >= 0; got {self.grace_seconds}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"config key metrics_port must be 0..65535 (0 = off); got {self.metrics_port}")
        if self.metrics_tls not in ("auto", "on", "off"):
            raise ConfigError(f"config key metrics_tls must be auto, on or off; got {self.metrics_tls!r}")
        if self.metrics_tls == "on" and self.tls_cert is None:
            raise ConfigError("config key metrics_tls = on needs tls_cert and tls_key (/metrics uses the same certificate)")
        if self.metrics_auth not in ("auto", "on", "off"):
            raise ConfigError(f"config key metrics_auth must be auto, on or off; got {self.metrics_auth!r}")
        if self.log_format not in ("auto", "json", "text"):
            raise ConfigError(f"config key log_format must be auto, json or text; got {self.log_format!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"config key log_level must be DEBUG, INFO, WARNING or ERROR; got {self.log_level!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("config keys tls_cert and tls_key must be set together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("config key tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        for key in ("tls_cert", "tls_key", "tls_client_ca", "auth_tokens_file"):
            path = getattr(self, key)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"config key {key}: file not found: {path}")
        if self.audit_store is not None:
            from audit.store import check_target

            check_target(self.audit_store, key="audit_store", password_file=self.audit_store_password_file)
        if self.audit_writer is not None and (not self.audit_writer or "/" in self.audit_writer
                                              or len(self.audit_writer) > 200):
            raise ConfigError(f"config key audit_writer must be 1-200 characters without '/'; got {self.audit_writer!r}")
        if self.audit_key_file is not None:
            from audit.pseudonym import check_key_file

            check_key_file(Path(self.audit_key_file), self.audit_key_anchor, "config key audit_key_file:")
        if any(not t or any(c.isspace() for c in t) for t in self.auth_tokens):
            raise ConfigError(f"{TOKENS_ENV}: tokens must be non-empty and contain no whitespace")
        if self.metrics_auth == "on" and not self.auth_enabled:
            raise ConfigError("config key metrics_auth = on needs bearer tokens (auth_tokens_file or "
                              f"{TOKENS_ENV}); /metrics accepts the same tokens")
        if self.auth_tokens_file is not None:
            read_tokens_file(self.auth_tokens_file)  # fail at start-up, not on the first call

    @property
    def audit_target(self) -> str:
        """The audit store: `audit_store` when set, else the SQLite file `audit_log`."""
        return self.audit_store if self.audit_store is not None else str(self.audit_log)

    @property
    def audit_postgres(self) -> bool:
        from audit.store import is_postgres

        return is_postgres(self.audit_target)

    @property
    def audit_key_anchor(self) -> Path:
        """A path whose directory the audit key file must stay out of: the SQLite file, or for PostgreSQL a
        file in the journal directory."""
        return (Path(self.audit_journal_dir) / "audit-store") if self.audit_postgres else Path(self.audit_target)

    @property
    def encode_instances(self) -> int:
        """Batches of new texts encoded at once: encode_batch_instances, or with 0 one per RPC worker, so a
        request with new texts never waits behind another's batch while a worker could run it."""
        return self.encode_batch_instances or self.rpc_workers

    @property
    def rpc_workers(self) -> int:
        """The gRPC worker threads: max_workers, or with 0 the usable CPUs, at least 2 and at most 8.

        Why not more: the handlers hold the GIL for most of a call, so threads beyond the cores add GIL
        hand-offs and cache misses, not parallelism. On the 2-core dev VM, 16 closed-loop clients: server CPU
        per `Rank` 1.05 ms with 2 threads, 1.14 with 4, 1.25-1.40 with 8 (bench/README.md). At least 2 so
        one slow call (new texts to encode, which releases the GIL) does not stall the rest.
        """
        if self.max_workers:
            return self.max_workers
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:   # not on Linux
            cpus = os.cpu_count() or 1
        return min(8, max(2, cpus))

    @property
    def stream_slots(self) -> int:
        """Streaming calls open at once: max_streams, or with 0 as many as RPC workers. They run on threads
        of their own (service/lanes.py), so idle or slow streams never hold a `Rank` worker."""
        return self.max_streams or self.rpc_workers

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth_tokens) or self.auth_tokens_file is not None

    @property
    def reflection_enabled(self) -> bool:
        if self.reflection != "auto":
            return self.reflection == "on"
        return _is_loopback(self.host)

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    @property
    def loopback(self) -> bool:
        return _is_loopback(self.host)

    @property
    def metrics_tls_enabled(self) -> bool:
        return self.metrics_tls == "on" or (self.metrics_tls == "auto" and self.tls_enabled)

    @property
    def metrics_auth_enabled(self) -> bool:
        return self.metrics_auth == "on" or (self.metrics_auth == "auto" and self.auth_enabled)


_CASTS: dict[str, Any] = {
    "host": str, "port": int, "artifacts": Path, "policy": Path, "audit_log": Path, "audit_key_file": Path,
    "audit_store": str, "audit_store_password_file": Path, "audit_journal_dir": Path, "audit_writer": str,
    "max_workers": int,
    "max_queue": int, "max_message_bytes": int, "processes": int, "max_streams": int,
    "stream_idle_timeout_s": float, "request_read_timeout_s": float,
    "reflection": str, "device": str, "encode_precision": str, "torch_threads": int, "grace_seconds": float,
    "blend": str, "blend_weight": float, "encode_batch_max": int, "encode_batch_wait_ms": float,
    "encode_batch_instances": int,
    "tls_cert": Path, "tls_key": Path, "tls_client_ca": Path, "auth_tokens_file": Path,
    "metrics_port": int, "metrics_host": str, "metrics_tls": str, "metrics_auth": str,
    "log_format": str, "log_level": str,
}


def _cast(key: str, value: Any) -> Any:
    caster = _CASTS[key]
    if caster in (int, float) and isinstance(value, bool):
        raise ConfigError(f"config key {key} must be a number; got {value!r}")
    try:
        return caster(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key} has an invalid value {value!r}") from None


def read_tokens_file(path: Path) -> tuple[str, ...]:
    """One token per line; blank lines and lines starting with # are ignored.
    Re-read on SIGHUP so tokens can be rotated without a restart."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"config key auth_tokens_file: cannot read {path}: {exc.strerror}") from None
    tokens = tuple(s for s in (line.strip() for line in lines) if s and not s.startswith("#"))
    if not tokens:
        raise ConfigError(f"config key auth_tokens_file: {path} holds no tokens")
    if any(any(c.isspace() for c in t) for t in tokens):
        raise ConfigError(f"config key auth_tokens_file: {path}: a token contains whitespace")
    return tokens


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
    tokens = tuple(t.strip() for t in env.get(TOKENS_ENV, "").split(",") if t.strip())
    return ServiceConfig(**values, auth_tokens=tokens, limits=lim)
