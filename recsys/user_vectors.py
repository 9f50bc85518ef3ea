"""`python -m recsys.user_vectors --artifacts artifacts` — add the known users' vectors to an artifact trained
without them, as a new derived version (what the file holds and why: recsys/known_user_vectors.py).

An application: it loads the full artifact bundle through the composition root (recsys/compose.py), which
also checks that the derived version is servable before it is published.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from recsys.cli import cli_main


def _known_errors() -> tuple[type[BaseException], ...]:
    from recsys.errors import ArtifactError

    return (ArtifactError,)


@cli_main(errors=_known_errors)
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recsys.user_vectors",
                                 description="Derive a new artifact version holding the known users' vectors.")
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--encode-precision", dest="encode_precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="text encoding precision (auto: bf16 on CUDA and on CPUs with native bf16)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from recsys.artifact_update import base_version_dir, derive_version
    from recsys.compose import check_servable, load_artifacts
    from recsys.known_user_vectors import write_user_vectors

    art = load_artifacts(base_version_dir(args.artifacts), device=args.device, encode_precision=args.encode_precision)
    out = derive_version(args.artifacts, "user_vectors",
                         lambda staging, meta: {**write_user_vectors(staging, art.store.encoder, art.catalog,
                                                                     art.users, progress=True),
                                                "encode_precision": art.store.encoder.precision},
                         check=lambda staging: check_servable(staging, device=args.device))
    print(f"published {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
