"""Load test of ``yinxin serve`` (issue 7): ``python -m benchmarks.load.run``; see ``run.py``."""
