import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for a module of tiny models (``pytestmark = pytest.mark.usefixtures("single_thread")``):
    a second intra-op thread only adds synchronisation, which on a shared 2-core machine costs ~100x per step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def smoke_cfg(tmp_path):
    """The smoke preset writing its runs and caches under a temporary folder."""
    from seqjepa.config import preset
    from seqjepa.options import apply_overrides

    cfg = preset("smoke")
    apply_overrides(cfg, [f"train.runs_dir={tmp_path / 'runs'}", f"world.cache_dir={tmp_path / 'cache'}",
                          "train.progress=off"])
    return cfg
