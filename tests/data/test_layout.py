"""pneumo.data.layout: file-name parsing, layout discovery and manifests, on real files."""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pneumo.data.layout import Dataset, Record, discover, parse_filename
from pneumo.data.split import write_split
from pneumo.errors import PneumoError
from pneumo.data.summary import summarize
from tests.conftest import SAMPLES, pick

# --- parse_filename -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "patient", "pathogen"),
    [
        ("person1000_bacteria_2931.jpeg", "person1000", "bacteria"),
        ("person1000_virus_1681.jpeg", "person1000", "virus"),
        ("IM-0115-0001.jpeg", "IM-0115", None),
        ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427", None),
        # the same series with a second image number: same patient
        ("NORMAL2-IM-0587-0001-0002.jpeg", "NORMAL2-IM-0587", None),
        ("scan_42.png", "scan_42", None),
    ],
)
def test_parse_filename(name: str, patient: str, pathogen: str | None) -> None:
    assert parse_filename(name) == (patient, pathogen)


def test_parse_filename_ignores_folders_and_case() -> None:
    assert parse_filename("some/dir/PERSON7_Virus_12.JPEG") == ("person7", "virus")
    # IM and NORMAL2-IM series with the same number are different patients
    assert parse_filename("IM-1427-0001.jpeg")[0] != parse_filename("NORMAL2-IM-1427-0001.jpeg")[0]


# --- the shared data (numbers from ../shared/data/README.md) ---------------------------------


@pytest.fixture(scope="module")
def shared_dataset(shared_data: Path) -> Dataset:
    return discover(shared_data)


def test_discover_shared_data_counts(shared_dataset: Dataset, shared_data: Path) -> None:
    assert shared_dataset.layout == "kaggle"
    assert shared_dataset.root == shared_data / "chest_xray"
    assert list(shared_dataset.splits) == ["train"]
    records = shared_dataset.split("train")
    assert Counter(r.label for r in records) == {"NORMAL": 1341, "PNEUMONIA": 3875}
    assert Counter(r.pathogen for r in records if r.label == "PNEUMONIA") == {"bacteria": 2530, "virus": 1345}
    assert all(r.pathogen is None for r in records if r.label == "NORMAL")
    patients = {label: {r.patient_id for r in records if r.label == label} for label in ("NORMAL", "PNEUMONIA")}
    assert len(patients["NORMAL"]) == 1211
    assert len(patients["PNEUMONIA"]) == 1635
    assert len({r.patient_id for r in records}) == 2846
    # every record points at a real file in the folder of its class
    assert all(r.path.is_file() and r.path.parent.name == r.label for r in records)


def test_split_none_with_a_single_split(shared_dataset: Dataset) -> None:
    assert shared_dataset.split(None) is shared_dataset.split("train")


def test_split_unknown_name(shared_dataset: Dataset) -> None:
    with pytest.raises(PneumoError, match="no split 'test'.*train"):
        shared_dataset.split("test")


# --- nested Kaggle archive with junk --------------------------------------------------------


def test_discover_nested_kaggle_ignores_junk(kaggle_root: Path) -> None:
    ds = discover(kaggle_root)
    assert ds.layout == "kaggle"
    assert ds.root == kaggle_root / "chest_xray"
    assert list(ds.splits) == ["train", "test"]
    train, test = ds.split("train"), ds.split("test")
    assert Counter(r.label for r in train) == {"NORMAL": 80, "PNEUMONIA": 120}
    assert Counter(r.label for r in test) == {"NORMAL": 20, "PNEUMONIA": 30}
    every = train + test
    assert not any("__MACOSX" in r.path.parts for r in every)
    assert not any(r.path.name.startswith(".") for r in every)
    assert all(r.path.suffix == ".jpeg" for r in every)


def test_split_none_with_several_splits_raises(kaggle_root: Path) -> None:
    ds = discover(kaggle_root)
    with pytest.raises(PneumoError, match="train, test"):
        ds.split(None)


# --- class folders ----------------------------------------------------------------------------


def test_class_folders_any_case(tmp_path: Path, shared_data: Path) -> None:
    normal, pneumonia = pick("NORMAL", 3), pick("PNEUMONIA", 4)
    (tmp_path / "normal").mkdir()
    (tmp_path / "Pneumonia" / "sub").mkdir(parents=True)
    for f in normal:
        shutil.copy(f, tmp_path / "normal" / f.name)
    for f in pneumonia[:2]:
        shutil.copy(f, tmp_path / "Pneumonia" / f.name)
    for f in pneumonia[2:]:  # nested one level down: still found
        shutil.copy(f, tmp_path / "Pneumonia" / "sub" / f.name)
    (tmp_path / "normal" / "notes.txt").write_text("not an image")
    (tmp_path / "normal" / "._IM-0001-0001.jpeg").write_bytes(b"junk")

    ds = discover(tmp_path)
    assert ds.layout == "folders"
    records = ds.split(None)
    assert sorted(r.path.name for r in records if r.label == "NORMAL") == sorted(f.name for f in normal)
    assert sorted(r.path.name for r in records if r.label == "PNEUMONIA") == sorted(f.name for f in pneumonia)
    for r in records:
        assert r.patient_id == parse_filename(r.path.name)[0]
        if r.label == "PNEUMONIA":
            assert r.pathogen in r.path.name


def _class_folders(root: Path, normal: str = "NORMAL", pneumonia: str = "PNEUMONIA", n: int = 2) -> Path:
    for label, name in (("NORMAL", normal), ("PNEUMONIA", pneumonia)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for f in pick(label, n):
            shutil.copy(f, root / name / f.name)
    return root


def test_films_named_oddly_are_found_and_what_is_not_an_image_is_reported(tmp_path: Path, shared_data: Path) -> None:
    root = _class_folders(tmp_path / "data")
    film = pick("NORMAL", 1, offset=5)[0]
    shutil.copy(film, root / "NORMAL" / (film.name + " "))  # a trailing blank
    shutil.copy(SAMPLES / "dicom" / "cr_chest_pa_monochrome1.dcm", root / "PNEUMONIA" / "IM000000")  # PACS: no extension
    (root / "PNEUMONIA" / "README").write_text("films from the ward, 2024")
    ds = discover(root)
    names = {label: [r.path.name for r in ds.split(None) if r.label == label] for label in ("NORMAL", "PNEUMONIA")}
    assert film.name + " " in names["NORMAL"] and "IM000000" in names["PNEUMONIA"]
    assert [p.name for p in ds.left_out] == ["README"]
    summary = summarize(root, check_images=True, progress=False)
    assert any("1 files in the class folders are not images and were left out (e.g. README)" in w for w in summary["warnings"])
    assert not summary.get("unreadable")  # both odd names decode


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: _class_folders(_class_folders(root), normal="normal", n=1), "has both NORMAL/ and normal/"),
        (lambda root: (_class_folders(root / "train"), _class_folders(root / "Train", n=1)), "has both Train/ and train/"),
        (lambda root: (_class_folders(root), _class_folders(root / "train", n=1)), "and a split folder train/ beside them"),
        (
            lambda root: (_class_folders(root), _class_folders(root / "NORMAL", normal="x", n=1)),
            r"holds another class's folder \(PNEUMONIA/, 1 images\)",
        ),
    ],
    ids=["class folders differing in case", "split folders differing in case", "class folders beside train/", "a class inside another"],
)
def test_an_ambiguous_layout_is_an_error_that_says_what_was_found(tmp_path: Path, shared_data: Path, make, message: str) -> None:
    make(tmp_path / "data")
    with pytest.raises(PneumoError, match=message):
        discover(tmp_path / "data")


# --- manifests --------------------------------------------------------------------------------


def _manifest_rows(tmp_path: Path) -> list[tuple[Path, str, str]]:
    """Real images copied under tmp_path/img, with the manifest label each one gets."""
    (tmp_path / "img").mkdir()
    rows = []
    normal = pick("NORMAL", 2)
    bacteria = [f for f in pick("PNEUMONIA", 40) if "bacteria" in f.name][:2]
    virus = [f for f in pick("PNEUMONIA", 40) if "virus" in f.name][:2]
    for f, label in [
        (normal[0], "normal"),
        (normal[1], "NORMAL"),
        (bacteria[0], "bacteria"),
        (virus[0], "Virus"),
        (bacteria[1], "pneumonia"),
        (virus[1], "PNEUMONIA"),
    ]:
        shutil.copy(f, tmp_path / "img" / f.name)
        rows.append((Path("img") / f.name, label, f.name))
    return rows


def test_manifest_without_split(tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _manifest_rows(tmp_path)
    lines = ["path,label,patient_id"] + [f"{p.as_posix()},{label},child{i}" for i, (p, label, _) in enumerate(rows)]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    monkeypatch.chdir(shared_data)  # relative paths are read from the manifest's folder, not the cwd

    ds = discover(manifest)
    assert ds.layout == "manifest"
    assert list(ds.splits) == ["all"]
    records = ds.split(None)
    assert [r.path for r in records] == [tmp_path / p for p, _, _ in rows]
    assert [r.label for r in records] == ["NORMAL", "NORMAL"] + ["PNEUMONIA"] * 4
    # labels bacteria/virus give the pathogen; plain "pneumonia" takes it from the file name
    expected_pathogens = [None, None, "bacteria", "virus", "bacteria", "virus"]
    assert [r.pathogen for r in records] == expected_pathogens
    assert [r.patient_id for r in records] == [f"child{i}" for i in range(len(rows))]
    assert [r.target("pathogen") for r in records] == [0, 0, 1, 2, 1, 2]


def test_a_manifest_names_a_split_on_every_row_and_its_usual_names_are_understood(tmp_path: Path, shared_data: Path) -> None:
    rows = _manifest_rows(tmp_path)
    manifest = tmp_path / "manifest.csv"
    splits = ["Training", "validation", "test", "train", "valid", "train"]
    manifest.write_text("path,label,split\n" + "".join(f"{p.as_posix()},{label},{s}\n" for (p, label, _), s in zip(rows, splits)))
    ds = discover(manifest)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 3, "val": 2, "test": 1}
    splits[2], splits[4] = "", " "  # no split: their films would be dropped from training and validation alike
    manifest.write_text("path,label,split\n" + "".join(f"{p.as_posix()},{label},{s}\n" for (p, label, _), s in zip(rows, splits)))
    with pytest.raises(PneumoError, match=r"2 rows with a blank split \(line 4, line 6\) among rows of train, val"):
        discover(manifest)


def test_a_manifest_naming_a_column_twice_is_refused(tmp_path: Path, shared_data: Path) -> None:
    rows = _manifest_rows(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,Label\n" + "".join(f"{p.as_posix()},{label},NORMAL\n" for p, label, _ in rows))
    with pytest.raises(PneumoError, match=r"names a column more than once \(label\)"):
        discover(manifest)


def test_manifest_with_split_and_no_patient_column(tmp_path: Path, shared_data: Path) -> None:
    rows = _manifest_rows(tmp_path)
    splits = ["train", "train", "val", "train", "val", "Test"]
    lines = ["path,label,split"] + [f"{p.as_posix()},{label},{s}" for (p, label, _), s in zip(rows, splits)]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(lines) + "\n")

    ds = discover(manifest)
    assert sorted(ds.splits) == ["test", "train", "val"]
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [3, 2, 1]
    for r in ds.split("train") + ds.split("val") + ds.split("test"):
        assert r.patient_id == parse_filename(r.path.name)[0]  # from the file name when not given
    with pytest.raises(PneumoError, match="choose one"):
        ds.split(None)


def test_manifest_absolute_paths_and_bom(tmp_path: Path, shared_data: Path) -> None:
    files = pick("NORMAL", 1) + pick("PNEUMONIA", 1)
    manifest = tmp_path / "excel.csv"
    text = " Path , LABEL \n" + f"{files[0]},0\n{files[1]},1\n"
    manifest.write_bytes(b"\xef\xbb\xbf" + text.encode())  # Excel writes a byte-order mark
    records = discover(manifest).split(None)
    assert [r.path for r in records] == files
    assert [r.label for r in records] == ["NORMAL", "PNEUMONIA"]


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [None, 3, b"data", ["a", "b"], {"path": "x"}], ids=repr)
def test_data_that_is_not_a_path_is_one_line(source: object) -> None:
    with pytest.raises(
        PneumoError, match=r"^source must be a dataset folder \(.*\) or a CSV manifest, as a str or pathlib.Path; got "
    ) as err:
        discover(source)  # type: ignore[arg-type]
    assert str(err.value).endswith("got None" if source is None else f"({type(source).__name__})")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="does not exist") as err:
        discover(tmp_path / "nowhere")
    assert "nowhere" in str(err.value)


def test_folder_without_class_folders(tmp_path: Path, shared_data: Path) -> None:
    (tmp_path / "images").mkdir()
    shutil.copy(pick("NORMAL", 1)[0], tmp_path / "images")
    with pytest.raises(PneumoError, match="no dataset found") as err:
        discover(tmp_path)
    assert str(tmp_path) in str(err.value)
    (tmp_path / "NORMAL").mkdir()  # one class folder is not enough, and the error says which is missing
    with pytest.raises(PneumoError, match="has a NORMAL/ folder but no PNEUMONIA/ folder") as err:
        discover(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_empty_class_folder(tmp_path: Path, shared_data: Path) -> None:
    (tmp_path / "NORMAL").mkdir()
    (tmp_path / "PNEUMONIA").mkdir()
    shutil.copy(pick("NORMAL", 1)[0], tmp_path / "NORMAL")
    (tmp_path / "PNEUMONIA" / ".DS_Store").write_bytes(b"\x00")  # junk does not count as an image
    with pytest.raises(PneumoError, match="has no .jpeg/.jpg/.png images") as err:
        discover(tmp_path)
    assert "PNEUMONIA" in str(err.value)


def test_kaggle_split_missing_a_class(tmp_path: Path, shared_data: Path) -> None:
    for split, classes in {"train": ["NORMAL", "PNEUMONIA"], "test": ["NORMAL"]}.items():
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            shutil.copy(pick(c, 1)[0], tmp_path / split / c)
    with pytest.raises(PneumoError, match="PNEUMONIA/") as err:
        discover(tmp_path)
    assert "test" in str(err.value)


def test_manifest_missing_file(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label\nnot_there.jpeg,normal\n")
    with pytest.raises(PneumoError, match="1 of the listed files does not exist.*line 2: not_there.jpeg"):
        discover(tmp_path / "m.csv")


def test_manifest_bad_label(tmp_path: Path, shared_data: Path) -> None:
    f = pick("NORMAL", 1)[0]
    (tmp_path / "m.csv").write_text(f"path,label\n{f},normal\n{f},covid\n")
    with pytest.raises(PneumoError, match="line 3.*'covid'"):
        discover(tmp_path / "m.csv")


def test_manifest_bad_pathogen(tmp_path: Path, shared_data: Path) -> None:
    f = pick("PNEUMONIA", 1)[0]
    (tmp_path / "m.csv").write_text(f"path,label,pathogen\n{f},pneumonia,fungal\n")
    with pytest.raises(PneumoError, match="pathogen 'fungal'"):
        discover(tmp_path / "m.csv")


@pytest.mark.parametrize("header", ["file,label", "path,class", "path", ""])
def test_manifest_without_required_columns(tmp_path: Path, shared_data: Path, header: str) -> None:
    f = pick("NORMAL", 1)[0]
    (tmp_path / "m.csv").write_text(f"{header}\n{f},normal\n" if header else "")
    with pytest.raises(PneumoError, match="'path' and 'label'"):
        discover(tmp_path / "m.csv")


def test_manifest_with_no_rows(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,label\n")
    with pytest.raises(PneumoError, match="lists no images"):
        discover(tmp_path / "m.csv")


def test_manifest_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_bytes(b"path,label\n\xff\xfe\xfa.jpeg,normal\n")
    with pytest.raises(
        PneumoError, match="some names are not UTF-8 text: if the manifest was saved in another encoding, save it as CSV UTF-8"
    ):
        discover(tmp_path / "m.csv")
    (tmp_path / "latin1.csv").write_bytes("path,étiquette,label\nx.jpeg,a,normal\n".encode("latin-1"))
    with pytest.raises(PneumoError, match="is not a UTF-8 CSV file; save it as CSV UTF-8"):
        discover(tmp_path / "latin1.csv")


def test_a_film_whose_name_is_not_utf8_is_trained_on_and_its_split_reads_back(tmp_path: Path, shared_data: Path) -> None:
    film = pick("NORMAL", 1)[0]
    root = tmp_path / "data"
    (root / "NORMAL").mkdir(parents=True)
    (root / "PNEUMONIA").mkdir()
    shutil.copy(film, os.fsencode(root / "NORMAL") + b"/caf\xe9.jpeg")  # a latin-1 name, as an old share writes it
    for f in pick("PNEUMONIA", 2):
        shutil.copy(f, root / "PNEUMONIA" / f.name)
    records = discover(root).split(None)
    write_split(tmp_path / "split.csv", {"train": records})
    assert [r.path for r in discover(tmp_path / "split.csv").split("train")] == [r.path for r in records]


def test_non_csv_file(tmp_path: Path, shared_data: Path) -> None:
    image = tmp_path / "IM-0115-0001.jpeg"
    shutil.copy(pick("NORMAL", 1)[0], image)
    with pytest.raises(PneumoError, match="not a .csv manifest") as err:
        discover(image)
    assert image.name in str(err.value)


# --- Record.target --------------------------------------------------------------------------------


def test_record_target() -> None:
    normal = Record(Path("IM-0001-0001.jpeg"), "NORMAL", None, "IM-0001")
    bacteria = Record(Path("person1_bacteria_1.jpeg"), "PNEUMONIA", "bacteria", "person1")
    virus = Record(Path("person2_virus_2.jpeg"), "PNEUMONIA", "virus", "person2")
    unknown = Record(Path("x.png"), "PNEUMONIA", None, "x")
    assert [r.target("binary") for r in (normal, bacteria, virus, unknown)] == [0, 1, 1, 1]
    assert [r.target("pathogen") for r in (normal, bacteria, virus)] == [0, 1, 2]
    with pytest.raises(PneumoError, match="unknown pathogen") as err:
        unknown.target("pathogen")
    assert "x.png" in str(err.value)


# --- properties of the manifest reader ---------------------------------------------------------------

# files the generated manifests may point at; the reader checks that they exist, not what they hold
_EXISTING = ["IM-0001-0001.jpeg", "person1_bacteria_1.jpeg", "person2_virus_7.png", "sub dir/radiographie ü.dcm", 'odd,"name".jpeg']
_KNOWN_COLUMNS = ["path", "label", " Path ", "LABEL", "patient_id", "pathogen", "split", "file", "class", ""]
_LABELS = ["normal", "NORMAL", "pneumonia", "0", "1", "bacteria", "Virus", "covid", ""]


@pytest.fixture(scope="module")
def manifest_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("manifests")
    for name in _EXISTING:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    return folder


def _cell(column: str, clean: bool) -> st.SearchStrategy[str]:
    """A value for a column: in a clean manifest one the reader accepts, else anything plausible or not."""
    name = column.strip().lower()
    if name == "path":
        return st.sampled_from(_EXISTING + ["./" + _EXISTING[0], "missing.jpeg", ""]) | st.text(max_size=20)
    if name == "label":
        return st.sampled_from(_LABELS[:-2]) if clean else st.sampled_from(_LABELS) | st.text(max_size=8)
    if name == "pathogen":
        return st.sampled_from(["", "bacteria", "viral"] if clean else ["", "bacteria", "viral", "fungal"])
    return st.text(max_size=12)


@st.composite
def _manifest_bytes(draw: st.DrawFn) -> bytes:
    """CSV text as people and programs write it: any header, quoting, line ends, BOM, blank lines, damage."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    clean = draw(st.booleans())  # a valid manifest, damaged (or not) afterwards
    if clean:
        header = list(draw(st.permutations(["path", "label", "pathogen"])))
    else:
        header = draw(
            st.permutations(["path", "label"]).map(list) | st.lists(st.sampled_from(_KNOWN_COLUMNS) | st.text(max_size=8), max_size=6)
        )
    files = iter(draw(st.permutations(_EXISTING)))
    rows = []
    for _ in range(draw(st.integers(1 if clean else 0, len(_EXISTING) if clean else 6))):
        row = [next(files) if clean and column == "path" else draw(_cell(column, clean)) for column in header]
        if not clean and draw(st.booleans()):
            row = row[: draw(st.integers(0, len(row)))] + draw(st.lists(st.text(max_size=5), max_size=2))
        rows.append(row)
    buffer = io.StringIO()
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
    csv.writer(buffer, quoting=quoting, lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"]))).writerows([header, *rows])
    lines = buffer.getvalue().splitlines(keepends=True)
    for _ in range(draw(st.integers(0, 2))):  # blank lines, stray quotes and text anywhere
        lines.insert(
            draw(st.integers(0, len(lines))), draw(st.sampled_from(["\n", "\r\n", '"', ",,\n", "\ufeff"])) + draw(st.text(max_size=6))
        )
    text = ("\ufeff" if draw(st.booleans()) else "") + "".join(lines)
    return text.encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1"])), errors="replace")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_manifest_bytes())
def test_any_manifest_gives_records_or_a_pneumo_error(manifest_folder: Path, data: bytes) -> None:
    manifest = manifest_folder / "fuzzed.csv"
    manifest.write_bytes(data)
    try:
        dataset = discover(manifest)
    except PneumoError as exc:
        assert str(manifest) in str(exc)
        event("a PneumoError")
        return
    event("records")
    records = [r for split in dataset.splits.values() for r in split]
    assert records and all(r.path.is_file() and r.label in ("NORMAL", "PNEUMONIA") for r in records)
    assert all(r.pathogen in (None, "bacteria", "virus") and (r.label == "PNEUMONIA" or r.pathogen is None) for r in records)
    assert len({os.path.normpath(r.path) for r in records}) == len(records)  # each file once


_FILE_NAMES = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"), min_size=1, max_size=24).map(
    lambda stem: stem + ".jpeg"
)
_SPLITS = st.one_of(
    st.sampled_from(["train", "val", "test"]),
    st.text(min_size=1, max_size=8).map(lambda s: s.strip().lower()).filter(lambda s: s and s == s.strip() and s == s.lower()),
)


@st.composite
def _record_parts(draw: st.DrawFn) -> dict[str, list[tuple[str, str, str | None, str]]]:
    """Split -> (file name, label, pathogen, patient id) rows, as a run's split.csv holds them."""
    names = draw(st.lists(_FILE_NAMES, min_size=1, max_size=6, unique=True).filter(lambda ns: all(len(n.encode()) < 250 for n in ns)))
    parts: dict[str, list[tuple[str, str, str | None, str]]] = {}
    for name in names:
        label = draw(st.sampled_from(["NORMAL", "PNEUMONIA"]))
        pathogen = draw(st.sampled_from([None, "bacteria", "virus"])) if label == "PNEUMONIA" else None
        patient = draw(st.text(min_size=1, max_size=12).map(str.strip).filter(bool))
        parts.setdefault(draw(_SPLITS), []).append((name, label, pathogen, patient))
    return parts


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=_record_parts())
def test_a_written_manifest_reads_back_the_same_records(tmp_path_factory: pytest.TempPathFactory, parts: dict) -> None:
    folder = tmp_path_factory.mktemp("roundtrip")
    records = {}
    for split, rows in parts.items():
        records[split] = []
        for name, label, pathogen, patient in rows:
            (folder / name).write_bytes(b"")
            # a pneumonia row without a pathogen takes the one its file name gives, as on reading
            found = pathogen or parse_filename(name)[1] if label == "PNEUMONIA" else None
            records[split].append(Record(folder / name, label, found, patient))
    write_split(folder / "split.csv", records)
    assert discover(folder / "split.csv").splits == records


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("a" * 5000, "of at most 4095 bytes, each name in it at most 255"),
        ("a" * 256, "each name in it at most 255"),
        ("data\x00", "without a NUL byte"),
        ("\ud800", "the file system can encode"),
        ("", "got '' (an empty str)"),
    ],
    ids=["5000 chars", "256-char name", "NUL", "lone surrogate", "empty"],
)
def test_a_path_no_file_system_takes_is_refused_naming_it(source: str, fragment: str) -> None:
    """Not an OSError (File name too long) or a ValueError (embedded null byte) from os.stat."""
    with pytest.raises(PneumoError, match=r"^source must be a dataset folder") as err:
        discover(source)
    assert fragment in str(err.value)
