import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own dataset cache and a fixed thread count."""
    monkeypatch.setenv("TINYDIFF_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
