"""A run's outlier films: where the config finds them, how they are grouped by source, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumo.config import config_from_dict
from pneumo.errors import PneumoError
from pneumo.training.data import outlier_films, outlier_source
from pneumo.training.report import input_check_line


def test_auto_finds_the_adult_films_beside_the_data(shared_data: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    for data in (shared_data, shared_data / "chest_xray"):
        films = outlier_films(config_from_dict({"data": str(data), "image_size": 32}), False)
        assert films is not None and films.folder == shared_data / "ood" / "adult_other_hospitals"
        assert films.images.shape == (124, 32, 32) and films.images.dtype == np.uint8
        assert len(films.sources) == 124 and 20 < len(set(films.sources)) < 124  # figures of one paper share a source
    assert pneumo_log.messages == []


def test_none_and_bad_folders(shared_data: Path, tmp_path: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    assert outlier_films(config_from_dict({"data": str(shared_data), "outliers": "none"}), False, print) is None
    assert outlier_films(config_from_dict({"data": str(tmp_path)}), False, print) is None  # auto, and nothing beside the data
    with pytest.raises(PneumoError, match="not a folder"):
        outlier_films(config_from_dict({"data": str(shared_data), "outliers": str(tmp_path / "absent")}), False, print)
    (tmp_path / "junk.jpeg").write_text("not pixels")
    assert outlier_films(config_from_dict({"data": str(shared_data), "outliers": str(tmp_path)}), False) is None
    assert any("skipped" in m for m in pneumo_log.messages) and any("no readable films" in m for m in pneumo_log.messages)


def test_sources_group_a_papers_figures() -> None:
    a, b = Path("1-s2.0-S0929664620300449-gr2_lrg-a.jpg"), Path("1-s2.0-S0929664620300449-gr2_lrg-b.jpg")
    assert outlier_source(a) == outlier_source(b) != outlier_source(Path("03BF7561-A9BA-4C3C-B8A0-D3E585F73F3C.jpeg"))


def test_the_log_line_says_what_was_measured() -> None:
    assert "too few" in input_check_line(None)
    assert "distance only" in input_check_line({"notes": ["no outlier films were given"]})
    line = input_check_line(
        {"val_false_alarm_rate": 0.01, "val_false_alarm_ci95": (0.005, 0.018), "outlier_catch_rate": 0.95, "n_outliers": 124}
    )
    assert "1.0% of validation children" in line and "95% of 124" in line
