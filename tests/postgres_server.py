"""A throw-away PostgreSQL server for the tests and benches: `initdb` into a temporary directory and
`pg_ctl start` on a loopback port (and a unix socket in that directory), password authentication.

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as an unprivileged system user
(`postgres`, which Debian's package creates, else `ethicrec-pg`, created here with useradd), through
util-linux's setpriv (or subprocess's `user=`/`group=` where it is missing; no su or sudo needed). Its directory is made
in /tmp (not under pytest's root-only temporary directory) and handed to that user.

    with LocalPostgres() as pg:
        url = pg.create_database("t1")        # postgresql://ethicrec@127.0.0.1:PORT/t1
        # password: pg.password (tests set ETHICREC_AUDIT_STORE_PASSWORD)
        pg.restart(mode="immediate")          # a crash-like restart; committed transactions survive
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ADMIN, USER = "ethicrec_admin", "ethicrec"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started on this machine (binaries missing, initdb or start failed)."""


def find_bindir() -> Path:
    """The server binaries: $PG_BINDIR, else the newest /usr/lib/postgresql/*/bin, else pg_config's."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]) if
                   p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb) found: apt-get install postgresql "
                              "(`make postgresql` does), or set PG_BINDIR")


def _server_user() -> tuple[int, int] | None:
    """(uid, gid) to run the server as, or None to run as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "ethicrec-pg"):
        try:
            pw = pwd.getpwnam(name)
            return pw.pw_uid, pw.pw_gid
        except KeyError:
            continue
    useradd = shutil.which("useradd")
    if useradd is None:
        raise PostgresUnavailable("running as root, no 'postgres' user and no useradd to create one")
    r = subprocess.run([useradd, "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "ethicrec-pg"], capture_output=True, text=True)
    if r.returncode != 0:
        raise PostgresUnavailable(f"could not create the user ethicrec-pg: {r.stderr.strip()}")
    pw = pwd.getpwnam("ethicrec-pg")
    return pw.pw_uid, pw.pw_gid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    def __init__(self, *, fsync: bool = True, max_connections: int = 200) -> None:
        self.bindir = find_bindir()
        self.fsync = fsync
        self.max_connections = max_connections
        self.password = secrets.token_hex(16)
        self.admin_password = secrets.token_hex(16)
        self.port = _free_port()
        self.host = "127.0.0.1"
        self.dir: Path | None = None
        self._as = None

    # -- life cycle --------------------------------------------------------------------------
    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a server binary, as the server's user when we are root. Through setpriv(1) where it exists:
        subprocess's own user=/group= rule out vfork, and a plain fork() in a process with gRPC threads runs
        gRPC's fork handlers, which sometimes abort the child before it execs (pg_ctl then silently never
        ran). A child killed by a signal before it ran is retried."""
        kw: dict = {}
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as is not None:
            setpriv = shutil.which("setpriv")
            if setpriv:
                cmd = [setpriv, f"--reuid={self._as[0]}", f"--regid={self._as[1]}", "--clear-groups", *cmd]
            else:
                kw = {"user": self._as[0], "group": self._as[1], "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C", "LC_ALL": "C",
               "HOME": str(self.dir)}
        for _ in range(3):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=self.dir, **kw)
            if r.returncode >= 0:
                return r
        return r

    def start(self) -> "LocalPostgres":
        self._as = _server_user()
        self.dir = Path(tempfile.mkdtemp(prefix="ethicrec-pg-"))
        try:
            pwfile = self.dir / "pw"
            pwfile.write_text(self.admin_password + "\n")
            if self._as is not None:
                for p in (self.dir, pwfile):
                    os.chown(p, *self._as)
            r = self._run("initdb", "-D", str(self.dir / "data"), "-U", ADMIN, f"--pwfile={pwfile}",
                          "--auth=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync")
            if r.returncode != 0:
                raise PostgresUnavailable(f"initdb failed: {(r.stderr or r.stdout).strip()[-500:]}")
            pwfile.unlink()
            self._pg_ctl_start()
            self._setup_roles()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _pg_ctl_start(self) -> None:
        opts = (f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories={self.dir}"
                f" -c max_connections={self.max_connections} -c fsync={'on' if self.fsync else 'off'}")
        r = self._run("pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "server.log"), "-w", "-t", "60",
                      "-o", opts, "start")
        if r.returncode != 0:
            log = (self.dir / "server.log").read_text(errors="replace")[-800:] if (self.dir / "server.log").exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed (exit {r.returncode}): {r.stdout.strip()[-300:]} "
                                      f"{r.stderr.strip()[-300:]}; server log: {log}")

    def stop(self, mode: str = "fast") -> None:
        if self.dir is not None and (self.dir / "data" / "postmaster.pid").exists():
            r = self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", mode, "-w", "-t", "60", "stop")
            if r.returncode != 0 and (self.dir / "data" / "postmaster.pid").exists():
                raise PostgresUnavailable(f"pg_ctl stop failed (exit {r.returncode}): {r.stdout.strip()[-300:]} "
                                          f"{r.stderr.strip()[-300:]}")

    def start_again(self) -> None:
        self._pg_ctl_start()

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self._pg_ctl_start()

    def cleanup(self) -> None:
        try:
            self.stop("immediate")
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def __enter__(self) -> "LocalPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # -- databases -----------------------------------------------------------------------------
    def admin(self, dbname: str = "postgres"):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=ADMIN, password=self.admin_password,
                               dbname=dbname, autocommit=True, connect_timeout=10)

    def _setup_roles(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with self.admin() as conn:
                    conn.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{self.password}'")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise

    def create_database(self, name: str) -> str:
        """A new empty database owned by the `ethicrec` role; returns its URL (no password in it)."""
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {USER}')
        return self.url(name)

    def url(self, dbname: str) -> str:
        return f"postgresql://{USER}@{self.host}:{self.port}/{dbname}"

    def server_log(self) -> str:
        p = self.dir / "server.log" if self.dir else None
        return p.read_text(errors="replace") if p and p.exists() else ""
