"""Files in a published network's own layout, filled by the golden rule (golden/seeded_weights.py).

The key lists are the original code's state dicts as the golden scripts recorded them
(``tests/golden/published_<name>_keys.json``: keys, shapes, dtypes, the file's container and
prefix), so a file written here has exactly the published key names and shapes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))
from seeded_weights import seeded_state  # noqa: E402

# family -> the key list the golden script recorded for its file
KEY_LISTS = {
    "nvidia_wrn38": "published_nvidia_wrn38_keys.json",
    "sml_r101_os8": "published_sml_r101_os8_keys.json",
    "vainf_r101_os16": "published_vainf_r101_keys.json",
    "vainf_r101_os8": "published_vainf_r101_keys.json",
    "vainf_mbv2_os16": "published_vainf_mbv2_keys.json",
    "mmseg_r101_d8": "published_mmseg_r101_d8_keys.json",
}


def recorded_keys(family: str) -> dict:
    """The golden script's record for ``family``: {"keys", "container", "prefix", "source", ...}."""
    return json.loads((GOLDEN / KEY_LISTS[family]).read_text())


def published_state(family: str) -> dict[str, torch.Tensor]:
    """The seeded tensors under the file's own keys (prefix included, container not)."""
    return seeded_state(recorded_keys(family)["keys"])


def write_published_file(family: str, path: Path, **extra) -> Path:
    """Write ``{container: seeded state, **extra}`` (or the bare state) as the published file."""
    record = recorded_keys(family)
    state = published_state(family)
    payload = state if record["container"] is None else {record["container"]: state, **extra}
    torch.save(payload, path)
    return path
