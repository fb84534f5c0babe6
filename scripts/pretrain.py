"""`python scripts/pretrain.py ARGS` is `python -m pipeline pretrain ARGS` (after `pip install -e .`)."""

import runpy
import sys

sys.argv[1:1] = ["pretrain"]
runpy.run_module("pipeline", run_name="__main__", alter_sys=True)
