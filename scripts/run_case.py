"""`python scripts/run_case.py ...` = `python -m pipeline run-case ...`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["run-case", *sys.argv[1:]]))
