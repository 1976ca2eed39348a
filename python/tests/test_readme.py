"""The examples of python/README.md run as written (the PyTorch one on a freshly initialised
checkpoint of the main job's config, written where the main job writes its own)."""

import os
import pathlib
import re

import pytest

from metarim import _metarim

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        if "metarim.torch" in block:
            pytest.importorskip("torch")
            _metarim.create_checkpoint(
                os.path.join("runs", "BabyAI-GoToLocal-v0-meta-rim-seed1"), []
            )
        exec(compile(block, str(README), "exec"), {})
