"""`ttsearch train-prm`'s checks that need no model: bad input is refused before Ray starts."""

from __future__ import annotations

import pytest
from ttsearch.pipelines.train_prm import run_train_prm

from tests.fixtures import train_prm_overrides as overrides
from ttsearch.config import load_config
from ttsearch.training.finetune import FineTuneError
from ttsearch.training.prm_data import PRMDataError


def test_refuses_bad_input_before_ray(tmp_path):
    with pytest.raises(PRMDataError, match="prm.labels is empty"):
        run_train_prm(load_config(None, [f"prm.output_dir={tmp_path}"]))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(FineTuneError, match="already holds a model"):
        run_train_prm(load_config(None, overrides([tmp_path / "labels"], tmp_path, tmp_path)))
