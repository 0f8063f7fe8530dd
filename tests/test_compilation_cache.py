"""Tests for experiments.compilation_cache: a cache folder that cannot be used is said, not
silently turned into recompiles."""

import os

import pytest
from experiment_runs import run_experiment

from experiments import compilation_cache


def test_a_writable_folder_is_made_and_left_clean(tmp_path):
    path = tmp_path / "new" / "xla"
    compilation_cache.check_dir(str(path))
    assert path.is_dir() and os.listdir(path) == []


def test_a_file_is_refused(tmp_path):
    path = tmp_path / "cache"
    path.write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        compilation_cache.check_dir(str(path))


def test_a_folder_that_cannot_be_made_is_refused(tmp_path):
    """Below a file no folder can be made (root included, who may write read-only ones)."""
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="cannot be written"):
        compilation_cache.check_dir(str(tmp_path / "file" / "xla"))


def test_train_refuses_a_cache_flag_naming_a_file_before_any_work(tmp_path):
    path = tmp_path / "cache"
    path.write_text("")
    result = run_experiment(
        "train", f"--workdir={tmp_path / 'run'}", f"--compilation_cache_dir={path}"
    )
    assert result.returncode == 2
    assert f"--compilation_cache_dir={path}: {path} is a file" in result.stderr
    assert not (tmp_path / "run").exists()
