"""`python scripts/cache.py ARGS` is `python -m pipeline cache ARGS` (after `pip install -e .`)."""

import runpy
import sys

sys.argv[1:1] = ["cache"]
runpy.run_module("pipeline", run_name="__main__", alter_sys=True)
