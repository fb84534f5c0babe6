"""`python scripts/advise.py ...` = `python -m pipeline advise ...`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["advise", *sys.argv[1:]]))
