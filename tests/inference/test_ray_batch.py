from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from pneumo.errors import PneumoError
from pneumo.inference.batch import predict_archive
from tests.conftest import pick

try:
    import ray
    import ray.data  # noqa: F401
except ImportError:
    if os.environ.get("CI"):  # CI installs pneumo[ray]: a missing Ray there is a broken install, not a skip
        raise
    pytest.skip("Ray Data is not installed (pip install 'pneumo[ray]')", allow_module_level=True)

from pneumo.inference.ray_batch import predict_archive_ray  # noqa: E402

pytestmark = pytest.mark.slow  # starts a local Ray instance


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    root = tmp_path_factory.mktemp("ray-archive")
    for f in pick("NORMAL", 10) + pick("PNEUMONIA", 10):
        (root / f.parent.name).mkdir(exist_ok=True)
        shutil.copy(f, root / f.parent.name / f.name)
    (root / "notes.jpeg").write_text("not pixels")
    return root


def by_path(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {row["path"]: row for row in csv.DictReader(f)}


def test_ray_actors_write_what_predict_archive_writes(local_ray: None, folder: Path, tmp_path: Path) -> None:
    expected = predict_archive(folder, out=tmp_path / "plain.csv", backend="onnx", progress=False)
    summary = predict_archive_ray(folder, tmp_path / "ray.csv", batch_size=8, concurrency=2)
    assert (summary.done, summary.skipped) == (expected.done, expected.skipped) == (20, 1)
    got, want = by_path(tmp_path / "ray.csv"), by_path(tmp_path / "plain.csv")
    assert got.keys() == want.keys()
    for path, row in got.items():
        assert row.keys() == want[path].keys()
        for key, value in row.items():
            if key in ("probability", "p_NORMAL", "p_PNEUMONIA"):
                assert float(value) == pytest.approx(float(want[path][key]), abs=1e-5)
            else:
                assert value == want[path][key]
    assert by_path(summary.skipped_out).keys() == by_path(expected.skipped_out).keys()
    with pytest.raises(PneumoError, match="--resume"):
        predict_archive_ray(folder, tmp_path / "ray.csv")
