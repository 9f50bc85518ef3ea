"""`python -m service [--config FILE] [--host H] [--port P] [--artifacts DIR] ...`"""
from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser(prog="python -m service", description="Serve ethicrec over gRPC.")
    ap.add_argument("--config", help="TOML config file (see README: Configuration)")
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)
    ap.add_argument("--artifacts", help="artifact root (uses LATEST) or one version directory")
    ap.add_argument("--policy", help="audit policy TOML (default: the shipped policy)")
    ap.add_argument("--audit-log", dest="audit_log", help="SQLite audit log path")
    ap.add_argument("--reflection", choices=["auto", "on", "off"])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from recsys.errors import EthicrecError
    from service.config import load_config
    from service.server import serve

    try:
        config = load_config(args.config, overrides={k: getattr(args, k) for k in (
            "host", "port", "artifacts", "policy", "audit_log", "reflection", "device")})
        return serve(config)
    except (EthicrecError, OSError) as exc:
        print(f"ethicrec: cannot start: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
