import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def smoke_cfg(tmp_path):
    """The smoke preset writing its runs and caches under a temporary folder."""
    from seqjepa.config import apply_overrides, preset

    cfg = preset("smoke")
    apply_overrides(cfg, [f"train.runs_dir={tmp_path / 'runs'}", f"world.cache_dir={tmp_path / 'cache'}",
                          "train.progress=off"])
    return cfg
