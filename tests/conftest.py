import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own dataset cache, its own working folder (what a command writes by default
    lands there, never in the repository) and a fixed thread count."""
    monkeypatch.setenv("TINYDIFF_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    torch.set_num_threads(1)
