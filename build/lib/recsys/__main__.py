import sys

print("use `python -m recsys.train`, `python -m recsys.batch`", file=sys.stderr)
sys.exit(2)
