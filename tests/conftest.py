import os

# Tests never reach a model hub: encoders are built without pretrained weights.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYTHONHASHSEED", "0")

import pytest  # noqa: E402


@pytest.fixture(params=["compiled", "numpy"])
def kernels(request, monkeypatch):
    """Run a test on fsbench's compiled kernels, then on the numpy paths (as without a C
    compiler): both must give the reference's numbers."""
    from fsbench.metrics import native

    if request.param == "compiled" and native.library() is None:
        pytest.skip(f"no compiled kernels: {native.status()}")
    if request.param == "numpy":
        monkeypatch.setattr(native, "library", lambda: None)
    return request.param
