from __future__ import annotations

import csv
import io
import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from pneumo.data.layout import discover
from pneumo.errors import PneumoError
from pneumo.inference.batch import _decoded_batches, predict_archive
from pneumo.inference.loading import load_model
from pneumo.inference.predict import BUNDLED_ONNX, bundled_model_dir, predict
from tests.conftest import pick

BROKEN = ("notes.jpeg", "cut.png")


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """60 real images in nested folders, 2 unreadable ones, and files the walk must pass over."""
    root = tmp_path_factory.mktemp("archive")
    files = pick("NORMAL", 30) + pick("PNEUMONIA", 30)
    for i, f in enumerate(files):
        folder = root / ("a" if i % 3 == 0 else "b/c" if i % 3 == 1 else "b") / f.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, folder / f.name)
    (root / "b" / "notes.jpeg").write_text("not pixels")
    (root / "a" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (root / "a" / "README.txt").write_text("not an image")
    (root / "a" / "._IM-0001.jpeg").write_bytes(b"\x00junk")
    return root


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def assert_same(got: list[dict[str, str]], expected: list[dict[str, str]]) -> None:
    assert [r["path"] for r in got] == [r["path"] for r in expected]
    for g, e in zip(got, expected):
        assert g.keys() == e.keys()
        for key in g:
            if key.startswith("p") and key != "path":
                assert float(g[key]) == pytest.approx(float(e[key]), abs=1e-5), (g["path"], key)
            else:
                assert g[key] == e[key], (g["path"], key)


@pytest.fixture(scope="module")
def expected(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    """`pneumo predict --format csv` on the same folder, with the same (ONNX) model."""
    from pneumo.inference.formats import format_predictions

    out = tmp_path_factory.mktemp("expected") / "predict.csv"
    out.write_text(format_predictions(predict([archive], model=bundled_model_dir() / BUNDLED_ONNX), "csv"))
    return rows(out)


def test_a_folder_streams_to_the_same_csv_as_predict(archive: Path, expected: list[dict[str, str]], tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    summary = predict_archive(archive, out=out, batch_size=16, workers=2, progress=False)
    assert (summary.done, summary.skipped, summary.already_done) == (60, 2, 0)
    assert summary.images_per_second > 0 and summary.skipped_out == tmp_path / "results.skipped.csv"
    assert_same(rows(out), expected)
    skipped = rows(summary.skipped_out)
    assert sorted(Path(r["path"]).name for r in skipped) == sorted(BROKEN)
    assert all(r["path"] in r["error"] for r in skipped)  # each reason names its file


def test_the_torch_backend_matches_predict_with_the_checkpoint(archive: Path, tmp_path: Path) -> None:
    from pneumo.inference.formats import format_predictions

    reference = tmp_path / "predict.csv"
    reference.write_text(format_predictions(predict([archive / "a"], model=load_model(backend="torch")), "csv"))
    out = tmp_path / "results.csv"  # the bundled export is int8: the PyTorch checkpoint is what both read here
    assert predict_archive(archive / "a", out=out, backend="torch", progress=False).done == 20
    assert_same(rows(out), rows(reference))


def test_resume_after_a_kill_finishes_each_file_exactly_once(archive: Path, expected: list[dict[str, str]], tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    predict_archive(archive, out=tmp_path / "full.csv", batch_size=16, progress=False)
    lines = (tmp_path / "full.csv").read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:26]) + lines[26][:30])  # header, 25 rows, and a row cut off mid-write
    summary = predict_archive(archive, out=out, batch_size=16, resume=True, progress=False)
    assert (summary.already_done, summary.done, summary.skipped) == (25, 35, 2)
    assert_same(rows(out), expected)
    again = predict_archive(archive, out=out, resume=True, progress=False)
    assert (again.already_done, again.done) == (60, 0)
    assert len(rows(out)) == 60


def test_an_existing_output_and_other_mistakes_are_refused_with_what_to_do(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    out.write_text("path,probability\n")
    with pytest.raises(PneumoError, match="--resume"):
        predict_archive(archive, out=out, progress=False)
    with pytest.raises(PneumoError, match="name it .csv or .parquet"):
        predict_archive(archive, out=tmp_path / "results.txt", progress=False)
    with pytest.raises(PneumoError, match="backend must be one of 'auto', 'onnx', 'torch'"):
        predict_archive(archive, out=tmp_path / "other.csv", backend="tensorflow", progress=False)
    for wrong, message in (
        ({"batch_size": 0}, "batch_size must be a whole number from 1 to 1048576; got 0 (int)"),  # was a ValueError, or [] silently
        ({"batch_size": 2**63}, "got 9223372036854775808 (int)"),  # was a ValueError from islice
        ({"workers": -1}, "workers must be a whole number from 0 to 1024; got -1 (int)"),
        ({"abstain": "no"}, "abstain must be True or False; got 'no' (str)"),  # was taken as true
        ({"model": 123}, "model must be a run or checkpoint folder"),
    ):
        with pytest.raises(PneumoError, match=re.escape(message)):
            predict_archive(archive, out=tmp_path / "refused.csv", progress=False, **wrong)  # type: ignore[arg-type]
        assert not (tmp_path / "refused.csv").exists()
    with pytest.raises(PneumoError, match=r"^source must be a folder of images or a CSV manifest .*; got 3 \(int\)$"):
        predict_archive(3, out=tmp_path / "refused.csv")  # type: ignore[arg-type]
    with pytest.raises(PneumoError, match="pneumo export"):
        predict_archive(archive, out=tmp_path / "other.csv", model=tmp_path, backend="onnx", progress=False)


def test_a_manifest_lists_the_files(archive: Path, expected: list[dict[str, str]], tmp_path: Path) -> None:
    wanted = [Path(r["path"]) for r in expected[::6]]
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8-sig") as f:  # with a BOM, as spreadsheets save it
        writer = csv.writer(f)
        writer.writerow(["patient", "path"])
        writer.writerows([[i, p] for i, p in enumerate(wanted)])
        writer.writerow([99, "missing.jpeg"])  # relative: taken from the manifest's folder
    out = tmp_path / "results.csv"
    summary = predict_archive(manifest, out=out, progress=False)
    assert (summary.done, summary.skipped) == (len(wanted), 1)
    assert_same(rows(out), [r for r in expected if Path(r["path"]) in wanted])
    assert rows(summary.skipped_out)[0]["path"] == str(tmp_path / "missing.jpeg")
    (tmp_path / "bad.csv").write_text("file\nx.jpeg\n")
    with pytest.raises(PneumoError, match="needs a header with a 'path' column"):
        predict_archive(tmp_path / "bad.csv", out=tmp_path / "bad-results.csv", progress=False)


def test_a_manifest_that_trains_also_predicts(archive: Path, expected: list[dict[str, str]], tmp_path: Path) -> None:
    """`Path,Label` (as a spreadsheet capitalises it) is read the same by `data summary`, `train` and `predict-archive`."""
    wanted = [Path(r["path"]) for r in expected[::10]]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("Path, Label \n" + "".join(f"{p},{'PNEUMONIA' if 'person' in p.name else 'NORMAL'}\n" for p in wanted))
    assert len(discover(manifest).splits["all"]) == len(wanted)
    summary = predict_archive(manifest, out=tmp_path / "results.csv", progress=False)
    assert (summary.done, summary.skipped) == (len(wanted), 0)
    assert_same(rows(tmp_path / "results.csv"), [r for r in expected if Path(r["path"]) in wanted])


def test_strict_stops_at_the_first_unreadable_file(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="--strict.*--resume"):
        predict_archive(archive, out=tmp_path / "results.csv", strict=True, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PneumoError, match="no image files"):
        predict_archive(tmp_path / "empty", out=tmp_path / "empty.csv", progress=False)


def test_parquet_output_has_the_csv_rows(archive: Path, expected: list[dict[str, str]], tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "results.parquet"
    predict_archive(archive, out=out, batch_size=16, progress=False)
    table = pq.read_table(out).to_pylist()
    assert [r["path"] for r in table] == [r["path"] for r in expected]
    assert [r["probability"] for r in table] == pytest.approx([float(r["probability"]) for r in expected], abs=1e-5)
    with pytest.raises(PneumoError, match="--resume needs CSV"):
        predict_archive(archive, out=out, resume=True, progress=False)


def test_a_file_name_that_is_not_utf8_reaches_csv_and_parquet(tmp_path: Path, shared_data: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "films"
    folder.mkdir()
    shutil.copy(pick("NORMAL", 1)[0], os.fsencode(folder) + b"/caf\xe9.jpeg")
    predict_archive(folder, out=tmp_path / "r.parquet", progress=False)
    assert [r["path"] for r in pq.read_table(tmp_path / "r.parquet").to_pylist()] == [str(folder / "caf\\xe9.jpeg")]
    predict_archive(folder, out=tmp_path / "r.csv", progress=False)  # CSV keeps the name's own bytes
    assert os.fsencode(folder) + b"/caf\xe9.jpeg" in (tmp_path / "r.csv").read_bytes()


def test_a_full_disk_under_the_results_names_them_and_gives_the_lock_back(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from pneumo.inference.batch import ResultWriter

    def full(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ResultWriter, "_write_csv", full)
    out = tmp_path / "full.csv"
    with pytest.raises(PneumoError, match=r"cannot write the results .*full\.csv \(No space left on device\): free some disk space"):
        predict_archive(archive, out=out, progress=False)
    assert not (tmp_path / ".full.csv.lock").exists()  # a later run is not told another holds it


def test_parquet_without_pyarrow_says_what_to_install(archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pyarrow" else find_spec(name, *a))
    with pytest.raises(PneumoError, match="pip install pyarrow"):
        predict_archive(archive, out=tmp_path / "results.parquet", progress=False)


def test_decoding_reads_a_bounded_number_of_files_ahead(archive: Path) -> None:
    """Memory stays flat on any archive: an endless source still yields its first batch."""
    consumed = 0

    def endless() -> Iterator[str]:
        nonlocal consumed
        for path in itertools.cycle(sorted(str(p) for p in archive.rglob("NORMAL/*.jpeg"))):
            consumed += 1
            yield path

    batches = _decoded_batches(endless(), batch_size=4, image_size=224, workers=2)
    decoded, _ = next(batches)
    batches.close()
    assert len(decoded) == 4 and consumed <= (2 * 2 + 1) * 4


def test_the_onnx_backend_never_loads_torch(archive: Path, tmp_path: Path) -> None:
    code = (
        "import sys; from pneumo.inference.batch import predict_archive; "
        f"predict_archive({str(archive / 'b' / 'c')!r}, out={str(tmp_path / 'out.csv')!r}, progress=False); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.slow  # new processes
def test_the_command_line_streams_resumes_and_refuses_to_overwrite(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import copy_class_folders

    folder = copy_class_folders(tmp_path / "scans", {"NORMAL": 5, "PNEUMONIA": 5})
    out = tmp_path / "results.csv"

    def pneumo(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pneumo", "predict-archive", *map(str, args)],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
            timeout=300,
        )

    first = pneumo(folder, "--out", out, "--quiet")
    assert first.returncode == 0 and "wrote 10 predictions" in first.stdout, first.stderr
    again = pneumo(folder, "--out", out, "--quiet")
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    resumed = pneumo(folder, "--out", out, "--quiet", "--resume")
    assert resumed.returncode == 0 and "10 were already there" in resumed.stdout
    assert len(out.read_text().splitlines()) == 1 + 10


# File names a Linux disk allows and a naive CSV breaks on: CR/LF split the record, quotes and
# commas shift the columns, and = + - @ make a spreadsheet run the name as a formula.
HOSTILE = [
    "new\nline.jpeg",
    "carriage\rreturn.jpeg",
    "crlf\r\n.jpeg",
    "comma,name.jpeg",
    'quote"name.jpeg',
    "=cmd|' /C calc'!A0.jpeg",
    "+1.jpeg",
    "-1.jpeg",
    "@x.jpeg",
    "'apostrophe.jpeg",
]


def parsed(path: Path, text_columns: frozenset[str] | set[str] | None = None) -> list[dict[str, str]]:
    """Rows as the results' reader sees them: the names as they were on disk."""
    from pneumo.inference.formats import TEXT_COLUMNS
    from pneumo.utils.csvfile import read_csv

    return list(read_csv(path, TEXT_COLUMNS if text_columns is None else text_columns)[1])


def parsed_bytes(data: bytes) -> list[dict[str, str]]:
    from pneumo.inference.formats import TEXT_COLUMNS
    from pneumo.utils.csvfile import parse_csv

    return parse_csv(data.decode("utf-8"), TEXT_COLUMNS)


def record_ends(data: bytes) -> list[int]:
    """The byte offset at which each record (header first) ends."""
    from pneumo.utils.csvfile import format_record

    ends, at = [], 0
    for cells in csv.reader(io.StringIO(data.decode("utf-8", "surrogateescape"), newline="")):
        at += len(format_record(cells).encode("utf-8", "surrogateescape"))
        ends.append(at)
    return ends


@pytest.fixture(scope="module")
def bundled_onnx() -> object:
    from pneumo.inference.onnx_backend import OnnxModel

    return OnnxModel.load(bundled_model_dir() / BUNDLED_ONNX)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Three real films copied under the hostile names, and an unreadable file with one."""
    root = tmp_path_factory.mktemp("hostile")
    films = [
        min((shared_data / "chest_xray" / "train" / label).glob("*.jpeg"), key=lambda f: f.stat().st_size)
        for label in ("NORMAL", "PNEUMONIA")
    ]
    films.append(pick("PNEUMONIA", 1)[0])
    for i, name in enumerate(HOSTILE):
        (root / name).parent.mkdir(exist_ok=True)  # "=cmd|' /C calc'!A0.jpeg" is a file in the folder "=cmd|' "
        shutil.copy(films[i % len(films)], root / name)
    (root / "=bad\n.jpeg").write_text("not pixels")
    return root


@pytest.fixture(scope="module")
def hostile_run(hostile: Path, bundled_onnx: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run over the hostile folder, walked as "." so the names start each cell."""
    out = tmp_path_factory.mktemp("hostile-run") / "full.csv"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(hostile)
        summary = predict_archive(".", out=out, model=bundled_onnx, batch_size=4, progress=False)
    assert (summary.done, summary.skipped) == (len(HOSTILE), 1)
    return out


@pytest.fixture(scope="module")
def hostile_results(hostile_run: Path) -> bytes:
    return hostile_run.read_bytes()


def test_hostile_file_names_stay_in_their_row_and_are_no_formulas(hostile: Path, hostile_results: bytes, tmp_path: Path) -> None:
    out = tmp_path / "full.csv"
    out.write_bytes(hostile_results)
    got = parsed(out)
    assert sorted(r["path"] for r in got) == sorted(HOSTILE)  # each file once, its name exact
    for r in got:
        assert (hostile / r["path"]).is_file() and float(r["probability"]) == pytest.approx(float(r["p_PNEUMONIA"]), abs=1e-6)
        assert r["label"] in ("NORMAL", "PNEUMONIA", "") and r["abstain"] in ("true", "false")
    raw = list(csv.DictReader(io.StringIO(hostile_results.decode("utf-8"), newline="")))  # as a spreadsheet gets it
    assert len(raw) == len(HOSTILE)
    for r in raw:
        assert r["path"][0] not in "=+-@\t\r\n", r["path"]  # the escape: a ' in front of =, +, -, @ (and of ')
        assert float(r["probability"]) >= 0 and float(r["threshold"]) > 0  # numbers are written as numbers
    assert {r["path"] for r in raw} >= {"'=cmd|' /C calc'!A0.jpeg", "'+1.jpeg", "'-1.jpeg", "'@x.jpeg", "''apostrophe.jpeg"}


def test_the_skipped_list_quotes_and_escapes_too_and_works_as_a_manifest(
    hostile: Path, hostile_run: Path, bundled_onnx: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listing = hostile_run.with_suffix(".skipped.csv")
    skipped = parsed(listing, {"path", "error"})
    assert [r["path"] for r in skipped] == ["=bad\n.jpeg"] and "=bad" in skipped[0]["error"]
    assert next(csv.DictReader(listing.open(newline="")))["path"] == "'=bad\n.jpeg"
    fixed = tmp_path / "=bad\n.jpeg"  # the file, fixed, beside a copy of the list: retry just the skipped files
    shutil.copy(hostile / HOSTILE[0], fixed)
    shutil.copy(listing, tmp_path / "skipped.csv")
    monkeypatch.chdir(tmp_path)
    summary = predict_archive("skipped.csv", out="retry.csv", model=bundled_onnx, progress=False)
    assert (summary.done, summary.skipped) == (1, 0)
    assert [r["path"] for r in parsed(tmp_path / "retry.csv")] == ["=bad\n.jpeg"]


@pytest.mark.parametrize(
    "name, where",
    [
        ("new\nline.jpeg", "after the newline inside the name"),
        ("new\nline.jpeg", "before the record's own newline"),
        ("carriage\rreturn.jpeg", "after the carriage return inside the name"),
        ("=cmd|' /C calc'!A0.jpeg", "inside the probability"),
    ],
)
def test_a_kill_inside_any_record_resumes_to_the_uninterrupted_file(
    name: str, where: str, hostile: Path, hostile_results: bytes, bundled_onnx: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ends = record_ends(hostile_results)
    raw_names = [r["path"] for r in parsed_bytes(hostile_results)]
    k = raw_names.index(name) + 1  # its record, after the header
    start, end = ends[k - 1], ends[k]
    record = hostile_results[start:end]
    offset = {
        "after the newline inside the name": record.find(b"\n") + 1,
        "before the record's own newline": len(record) - 1,
        "after the carriage return inside the name": record.find(b"\r") + 1,
        "inside the probability": record.find(b"0.") + 3,
    }[where]
    assert 0 < offset < len(record)
    out = tmp_path / "results.csv"
    out.write_bytes(hostile_results[: start + offset])  # killed while writing that record
    monkeypatch.chdir(hostile)
    summary = predict_archive(".", out=out, model=bundled_onnx, batch_size=4, resume=True, progress=False)
    assert (summary.already_done, summary.done) == (k - 1, len(HOSTILE) - (k - 1))
    assert out.read_bytes() == hostile_results  # each file exactly once, in order, as if never stopped
    assert predict_archive(".", out=out, model=bundled_onnx, resume=True, progress=False).already_done == len(HOSTILE)
    assert out.read_bytes() == hostile_results


def test_resume_after_a_cut_at_every_byte_writes_each_file_once(tmp_path: Path) -> None:
    """The writer alone (no model), cut at every byte of the records with CR or LF in them and on
    either side of every record boundary, then resumed; a name that is not UTF-8 round-trips too."""
    from pneumo.inference.base import Prediction
    from pneumo.inference.batch import ResultWriter

    names = [*HOSTILE, "caf\udce9.jpeg"]  # b"caf\xe9.jpeg" on disk, a Latin-1 name

    predictions = [
        Prediction(
            name,
            i / 10,
            "NORMAL" if i % 2 else None,
            0.5,
            {"NORMAL": 1 - i / 10, "PNEUMONIA": i / 10},
            ("-warned", "=x"),
            not i % 2,
            None if i % 2 else "@reason, with\nnewline",
        )
        for i, name in enumerate(names)
    ]
    full = tmp_path / "full.csv"
    with ResultWriter.open(full) as writer:
        writer.write(predictions[:4], [])
        writer.write(predictions[4:], [])
    data = full.read_bytes()
    ends = record_ends(data)
    out = tmp_path / "results.csv"
    cuts = set(range(ends[3] + 1)) | {end + d for end in ends for d in (-1, 0, 1)}  # header, then the CR/LF names
    for cut in sorted(c for c in cuts if c < len(data)):
        out.write_bytes(data[:cut])
        with ResultWriter.open(out, resume=True) as writer:
            assert writer.done == set(names[: max(0, sum(end <= cut for end in ends) - 1)]), cut
            writer.write([p for p in predictions if p.path not in writer.done], [])
        assert out.read_bytes() == data, cut
    assert [r["path"] for r in parsed(out)] == names
    assert parsed(out)[0]["abstain_reason"] == "@reason, with\nnewline" and parsed(out)[0]["warnings"] == "-warned; =x"


def test_an_output_that_is_a_folder_or_a_device_is_refused_before_any_work(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import stat

    from pneumo.inference import batch

    def no_work(*_a: object, **_k: object) -> None:
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(batch, "_load_classifier", no_work)
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "folder.csv" / "keep").write_text("mine")
    (tmp_path / "null.csv").symlink_to("/dev/null")
    (tmp_path / "side.skipped.csv").mkdir()
    cases = (
        (tmp_path / "folder.csv", "is a folder, not a file"),
        (tmp_path / "null.csv", "is a device, not a regular file"),
        (Path("/dev/null"), "is a device, not a regular file"),
        (tmp_path / "side.csv", r"unreadable files .*side\.skipped\.csv is a folder"),
    )
    for out, message in cases:
        for resume in (False, True):
            with pytest.raises(PneumoError, match=message):
                predict_archive(archive, out=out, progress=False, resume=resume)
    assert (tmp_path / "folder.csv" / "keep").read_text() == "mine" and (tmp_path / "side.skipped.csv").is_dir()
    assert (tmp_path / "null.csv").is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.csv", "null.csv", "side.skipped.csv"]


def test_two_runs_on_one_output_do_not_interleave(archive: Path, tmp_path: Path) -> None:
    """A second predict-archive on an output another is writing is refused at once, naming the holder."""
    from pneumo.utils.lock import OutputLock

    out = tmp_path / "results.csv"
    with OutputLock.acquire(out):
        with pytest.raises(PneumoError, match="is being written by another pneumo"):
            predict_archive(archive, out=out, progress=False)
        assert not out.exists()
    assert predict_archive(archive, out=out, progress=False).done > 0  # free once the other is done
    assert not list(tmp_path.glob(".*.lock"))
