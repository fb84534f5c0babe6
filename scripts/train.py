"""`python scripts/train.py ARGS` is `python -m pipeline train ARGS` (after `pip install -e .`)."""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
