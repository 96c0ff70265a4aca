import os

# Tests never reach a model hub: encoders are built without pretrained weights.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYTHONHASHSEED", "0")
