"""`python evaluate.py [checkpoint=PATH] [head=NAME | head=[A,B]] [data=...]` = fsbench-evaluate."""

from fsbench.cli import evaluate

if __name__ == "__main__":
    evaluate()
