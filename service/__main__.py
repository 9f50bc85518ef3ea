"""`python -m service [--config FILE] [--host H] [--port P] [--artifacts DIR] ...`"""
from __future__ import annotations

import argparse
import os
import sys

from recsys.cli import cli_main


def _known_errors() -> tuple[type[BaseException], ...]:
    from recsys.errors import EthicrecError

    return (EthicrecError, OSError)


@cli_main(errors=_known_errors, code=1, prefix="ethicrec: ", message=lambda exc: f"cannot start: {exc}")
def main(argv: list[str] | None = None) -> int:
    """Exit 0 after a clean drain; 1 when the server cannot start (one line on stderr)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(prog="python -m service", description="Serve ethicrec over gRPC.")
    ap.add_argument("--config", help="TOML config file (see README: Configuration)")
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)
    ap.add_argument("--artifacts", help="artifact root (uses LATEST) or one version directory")
    ap.add_argument("--policy", help="audit policy TOML (default: the shipped policy)")
    ap.add_argument("--audit-log", dest="audit_log", help="SQLite audit log path")
    ap.add_argument("--audit-store", dest="audit_store",
                    help="audit store: a SQLite path or postgresql://USER@HOST:PORT/DBNAME (password from "
                         "ETHICREC_AUDIT_STORE_PASSWORD or audit_store_password_file); default: --audit-log")
    ap.add_argument("--audit-key-file", dest="audit_key_file",
                    help="pseudonymisation key file (0600, outside the log's directory; default: ETHICREC_AUDIT_KEY, "
                         "else ~/.config/ethicrec/audit.key, created on first start)")
    ap.add_argument("--reflection", choices=["auto", "on", "off"])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--encode-precision", dest="encode_precision", choices=["auto", "fp32", "bf16"],
                    help="text encoding precision (auto: bf16 on CUDA and on CPUs with native bf16)")
    ap.add_argument("--metrics-port", dest="metrics_port", type=int, help="Prometheus /metrics port (0 = off)")
    ap.add_argument("--metrics-host", dest="metrics_host", help="address /metrics binds (default 127.0.0.1)")
    ap.add_argument("--log-format", dest="log_format", choices=["auto", "json", "text"])
    ap.add_argument("--grace-seconds", dest="grace_seconds", type=float, help="drain time on SIGTERM/SIGINT")
    ap.add_argument("--processes", type=int, help="server processes sharing the port (default 1)")
    args = ap.parse_args(argv)
    from service.config import load_config
    from service.logging_json import configure_logging
    from service.processes import serve

    config = load_config(args.config, overrides={k: getattr(args, k) for k in (
        "host", "port", "artifacts", "policy", "audit_log", "audit_store", "audit_key_file", "reflection", "device",
        "encode_precision", "metrics_port", "metrics_host", "log_format", "grace_seconds", "processes")})
    configure_logging(config.log_format, config.log_level, background=True)
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
