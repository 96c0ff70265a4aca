"""`python train.py [data=...] [model=...] [trainer=...] [seed=...]`, the same as fsbench-train."""

from fsbench.cli import train

if __name__ == "__main__":
    train()
