"""`python scripts/extract.py ARGS` is `python -m pipeline extract ARGS` (after `pip install -e .`)."""

import runpy
import sys

sys.argv[1:1] = ["extract"]
runpy.run_module("pipeline", run_name="__main__", alter_sys=True)
