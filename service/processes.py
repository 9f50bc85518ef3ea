"""`processes` > 1: that many server processes on one port, started and stopped together (`serve` picks this
or one process).

Why: a `Rank` holds the GIL for most of its time, so one process serves on about one core however many threads
it has. gRPC's answer for CPU-bound Python servers is one server process per core, all bound to the same port
with SO_REUSEPORT (grpc's examples/python/multiprocessing): the kernel spreads *connections* over the processes,
so each client connection is served by one process, and many connections (many frontends, or a client with
several channels) use them all. On the 2-core dev VM, 16 client threads with a connection each: 2 processes
served 1.70x the calls per second of one, 3 processes 1.60x (bench/processes.py; bench/README.md, "Several server
processes").

Each process is a whole server: its own copy of the models, its caches, its fairness monitor (which sees only
the requests it serves), and its /metrics on metrics_port + its index. They share the audit log, which is built
for several writers (SQLite transactions serialise the chain; each process has its own journal). This parent
process loads nothing: it prepares the audit log once (schema, audit key, the journals of dead processes), starts the
children, forwards SIGTERM/SIGINT (drain and stop) and SIGHUP (reload) to them, and stops them all if one dies,
so that a supervisor sees the failure and restarts the service.
"""
from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import threading
from dataclasses import replace

from service.config import ServiceConfig

log = logging.getLogger("ethicrec.service")

# How long after the grace period a child may take to finish (audit log commit and checkpoint) before it is killed.
STOP_SLACK_S = 30.0


def serve(config: ServiceConfig) -> int:
    """Serve until SIGTERM/SIGINT: this process (`service.server.serve_one`), or with `processes` > 1 that
    many child processes sharing the port."""
    if config.processes > 1:
        return serve_processes(config)
    from service.server import serve_one

    return serve_one(config)


def child_config(config: ServiceConfig, index: int) -> ServiceConfig:
    """Child `index`'s configuration: /metrics on metrics_port + index (each process has its own registry)."""
    return replace(config, metrics_port=config.metrics_port + index if config.metrics_port else config.metrics_port)


def _run_child(config: ServiceConfig) -> None:   # pragma: no cover - runs in the child processes
    from service.logging_json import configure_logging
    from service.server import serve_one

    configure_logging(config.log_format, config.log_level, background=True)
    try:
        code = serve_one(config)
    except Exception as exc:   # the parent reports the exit; the reason goes to this process's log
        log.error("cannot serve: %s", exc)
        print(f"ethicrec: cannot start: {exc}", file=sys.stderr, flush=True)
        code = 1
    sys.exit(code)


def _prepare_audit_log(config: ServiceConfig) -> None:
    """Create the audit log's schema (and the default key file, if that is the key), and ingest dead
    processes' journals, once, before the children race to do it. Called after the port check, so a start
    that cannot bind creates nothing."""
    from audit.policy import load_policy
    from service.audit_trail import make_audit_log, open_audit_log

    log = make_audit_log(config, load_policy(config.policy), lazy=True)
    open_audit_log(log)
    log.close()


def check_port(host: str, port: int) -> None:
    """OSError unless the port can be bound the way the children will bind it (SO_REUSEPORT): a port held by
    another program fails here in one line, before N processes load models only to fail one by one."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(address)
    except OSError:
        raise OSError(f"could not bind {host}:{port} (address in use or invalid)") from None


def serve_processes(config: ServiceConfig) -> int:
    """Run `config.processes` server processes until SIGTERM/SIGINT; 0 when all stopped cleanly, else 1."""
    from recsys.artifacts import resolve_version_dir
    from service.tls import check_tls_files

    n = config.processes
    # What fails for every child fails here first, in one line.
    check_tls_files(config)
    resolve_version_dir(config.artifacts)
    check_port(config.host, config.port)
    if config.metrics_port:   # each child binds metrics_port + its index: a busy one fails here, before the log exists
        for i in range(n):
            check_port(config.metrics_host, config.metrics_port + i)
    _prepare_audit_log(config)
    ctx = multiprocessing.get_context("spawn")   # no fork of a process that has threads (and, in tests, models)
    children = [ctx.Process(target=_run_child, args=(child_config(config, i),), name=f"ethicrec-{i}", daemon=False)
                for i in range(n)]
    stop = threading.Event()

    def _forward(signum, _frame) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            stop.set()
            signum = signal.SIGTERM
        for p in children:
            if p.pid is not None and p.exitcode is None:
                try:
                    os.kill(p.pid, signum)
                except ProcessLookupError:
                    pass

    previous = {s: signal.signal(s, _forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        for p in children:
            p.start()
        if stop.is_set():   # a signal while starting them: the ones started after it have not had it yet
            _forward(signal.SIGTERM, None)
        log.info("%d server processes on %s:%d (pids %s)", n, config.host, config.port,
                 ", ".join(str(p.pid) for p in children))
        print(f"ethicrec: {n} server processes on {config.host}:{config.port}", flush=True)
        failed = None
        while not stop.is_set():
            multiprocessing.connection.wait([p.sentinel for p in children], timeout=1.0)
            dead = next((p for p in children if p.exitcode is not None), None)
            if dead is not None and not stop.is_set():
                failed = dead
                log.error("server process %s exited with %s; stopping the others", dead.name, dead.exitcode)
                print(f"ethicrec: server process {dead.name} exited with {dead.exitcode}; stopping",
                      file=sys.stderr, flush=True)
                _forward(signal.SIGTERM, None)
        for p in children:
            p.join(config.grace_seconds + STOP_SLACK_S)
            if p.exitcode is None:
                log.error("server process %s did not stop; killing it", p.name)
                p.kill()
                p.join()
        ok = failed is None and all(p.exitcode == 0 for p in children)
        print("ethicrec: stopped" if ok else "ethicrec: stopped (a server process failed)", flush=True)
        return 0 if ok else 1
    except BaseException:
        for p in children:   # never leave servers running without their parent
            if p.pid is not None and p.exitcode is None:
                p.kill()
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
