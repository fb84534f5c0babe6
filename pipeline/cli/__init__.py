"""`python -m pipeline COMMAND ...`: argument parsing, progress bars and printing; numerics live elsewhere."""

from __future__ import annotations

import argparse
import errno
import json
import sys
from typing import Any, Sequence

from pipeline.cli import (backbone_cmds, bench_cmds, cache_cmds, finetune_cmds, head_cmds, quickstart_cmds,
                          strategy_cmds)

COMMAND_MODULES = (quickstart_cmds, backbone_cmds, cache_cmds, head_cmds, bench_cmds, finetune_cmds, strategy_cmds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; user errors print one line to stderr and exit 2 instead of a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except (ValueError, TypeError, FileNotFoundError, TimeoutError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):  # a full disk is the user's to fix; others are bugs
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """A plain left-aligned text table."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
