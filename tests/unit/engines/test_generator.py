"""The generator replica's helpers that need no engine: model paths and CPU core binds."""

from __future__ import annotations

from ttsearch.config import EMBEDDED_MODEL
from ttsearch.engines.models import EMBEDDED_NAME, resolve_model


def test_resolve_model_passes_local_dirs_and_hub_ids_through(tmp_path):
    assert resolve_model(str(tmp_path), str(tmp_path)) == str(tmp_path)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", str(tmp_path)) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    prepared = tmp_path / "models" / EMBEDDED_NAME
    prepared.mkdir(parents=True)
    assert resolve_model(EMBEDDED_MODEL, str(tmp_path)) == str(prepared)  # reused, not converted again


def test_cpu_replicas_get_disjoint_cores(monkeypatch):
    from ttsearch.actors.generator import cpu_core_binds

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert cpu_core_binds(2) == ["0,1", "2,3"]
    assert cpu_core_binds(3) == ["0", "1", "2"]
    assert cpu_core_binds(5) == ["0", "1", "2", "3", "0"]
