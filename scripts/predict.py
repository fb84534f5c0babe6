"""`python scripts/predict.py ARGS` is `python -m pipeline predict ARGS` (after `pip install -e .`)."""

import runpy
import sys

sys.argv[1:1] = ["predict"]
runpy.run_module("pipeline", run_name="__main__", alter_sys=True)
