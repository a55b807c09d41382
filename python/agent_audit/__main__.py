"""``python -m agent_audit verify|traces|show|keygen|ingest|prove|verify-proof|erase ...``:
the same Rust code as the ``agent-audit`` binary."""

from __future__ import annotations

import sys
from typing import Optional

from ._native import run_cli


def main(argv: Optional[list[str]] = None) -> int:
    """Runs the command line and returns its exit code."""
    args = sys.argv[1:] if argv is None else argv
    sys.stdout.flush()
    sys.stderr.flush()
    return run_cli(list(args))


if __name__ == "__main__":
    sys.exit(main())
