"""The GPU tier (tests/gpu) stays runnable where only torch, transformers and its small offline wheelhouse
(tests/gpu/wheelhouse.sh) are installed: none of the project's heavier dependencies is imported on the way in."""

from __future__ import annotations

import subprocess
import sys

from tests.fixtures import ROOT

# Dependencies of the project that a GPU machine with torch and transformers lacks, and the wheelhouse leaves out.
NOT_ON_A_GPU_MACHINE = ("ray", "vllm", "pyarrow", "pandas", "sklearn", "matplotlib", "math_verify", "gguf", "rapidfuzz")
PROBE = """
import sys
for name in {names!r}:
    sys.modules[name] = None  # `import name` now fails, as where the package is not installed
import tests.conftest, tests.fixtures, tests.gpu.test_cuda_engines
import ttsearch.engines.prm, ttsearch.engines.transformers_generator
"""


def test_the_gpu_tier_imports_none_of_the_heavy_dependencies() -> None:
    probe = PROBE.format(names=NOT_ON_A_GPU_MACHINE)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
