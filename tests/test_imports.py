"""Inference never imports training: loading and sampling a model leave tinydiff.training unimported."""

import json
import subprocess
import sys

SCRIPT = """
import json, sys
import tinydiff
model = tinydiff.load()
tinydiff.sample(model, 2, steps=2)
tinydiff.sample(model, 2, steps=2, labels=[3, 7], guidance=1.0)
print(json.dumps(sorted(name for name in sys.modules if name.startswith("tinydiff"))))
"""


def test_loading_and_sampling_never_import_training():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    assert "tinydiff.model" in modules and "tinydiff.denoiser" in modules  # the check sees tinydiff's modules
    assert [name for name in modules if name.startswith("tinydiff.training")] == []
