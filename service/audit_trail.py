"""The server's audit trail: which store it writes to (config `audit_store`, policy `log.store`, or the
SQLite file `audit_log`), and making, probing and opening its `AuditLog` so that a store that cannot be used
stops start-up with one line naming the key.

Shared by the single server process (service/server.py), the parent of a multi-process server
(service/processes.py) and hot reload (service/reload.py), which refuses a policy that moves the store.
"""
from __future__ import annotations

from audit.log import AuditLog, default_writer
from audit.policy import Policy
from audit.store import StoreError
from recsys.errors import ConfigError
from service.config import ServiceConfig


def audit_target(config: ServiceConfig, policy: Policy) -> str:
    """The audit store: config `audit_store`, else policy `log.store`, else the SQLite file `audit_log`;
    ConfigError when config and policy name different stores (the trail must not silently go elsewhere
    than one of them says)."""
    if config.audit_store is not None and policy.log.store and config.audit_store != policy.log.store:
        raise ConfigError(f"config key audit_store ({_shown(config.audit_store)}) and policy key log.store "
                          f"({_shown(policy.log.store)}) name different audit stores; set one of them")
    return config.audit_store if config.audit_store is not None else (policy.log.store or str(config.audit_log))


def _shown(target: str) -> str:
    """A store for a message: a URL without its password."""
    from audit.store import is_postgres

    if is_postgres(target) and "@" in target:
        scheme, rest = target.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}@{host}"
    return target


def make_audit_log(config: ServiceConfig, policy: Policy, *, lazy: bool) -> AuditLog:
    """The server's audit log on its configured store (a SQLite file, or PostgreSQL shared by the fleet: then
    this process's chain is `<audit_writer or host name>/<pid>-<random>` and the monitors share one window)."""
    target = audit_target(config, policy)
    if config.audit_store is None and policy.log.store:
        from audit.store import check_target

        check_target(target, key="policy key log.store", password_file=config.audit_store_password_file)
    return AuditLog(target, key_file=config.audit_key_file, synchronous=policy.log.synchronous,
                    journal=policy.log.write == "journal", lazy=lazy, journal_dir=config.audit_journal_dir,
                    writer=default_writer(config.audit_writer), journal_max_bytes=policy.log.journal_max_mb << 20,
                    password_file=config.audit_store_password_file, shared_windows=True)


def probe_audit_store(config: ServiceConfig) -> None:
    """Before the model loads: a PostgreSQL store is reached once and its schema version checked, creating
    nothing (a SQLite file is checked when it is opened, which costs nothing). A store that cannot be used
    stops start-up with one line naming the key, in a second rather than after the model load."""
    from audit.policy import load_policy
    from audit.store import is_postgres, make_store

    target = audit_target(config, load_policy(config.policy))
    if not is_postgres(target):
        return
    key = "audit_store" if config.audit_store is not None else "policy key log.store"
    store = make_store(target, key=key, password_file=config.audit_store_password_file)
    try:
        store.probe()
    except StoreError as exc:
        raise ConfigError(f"{'config key ' if ' ' not in key else ''}{key}: {exc}") from None


def open_audit_log(log: AuditLog) -> None:
    """Open the store (migrate its schema, ship dead processes' journals); a store that cannot be used stops
    start-up with one line naming the key."""
    try:
        log.open()
    except StoreError as exc:
        raise ConfigError(f"config key audit_store: {exc}") from None
