"""Hard inputs through the library, the `pneumo` command and the HTTP API.

Each one gets either the right answer or one clear error that names the file and says what
is wrong: never a traceback, a hang, or an answer that is silently wrong. Files are built
from real training films. The CLI and the service run the bundled model's ONNX export: the
decoding path is the one the PyTorch backend uses, without paying for importing torch in
every subprocess. Batch behaviour (a bad file among good ones: skipped and counted, or an
error with --strict) is tested beside prediction, evaluation and training.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLSLossless

from pneumo.data.io import read_image_with_info
from pneumo.data.layout import discover
from pneumo.data.summary import summarize
from pneumo.errors import PneumoError
from pneumo.inference.onnx_backend import OnnxModel
from pneumo.inference.predict import BUNDLED_ONNX, bundled_model_dir, load_model, predict
from pneumo.service.app import create_app
from pneumo.utils.walk import expand_paths
from tests.conftest import SAMPLES, copy_class_folders, pick

ONNX = bundled_model_dir() / BUNDLED_ONNX
DX = SAMPLES / "dicom" / "dx_chest_uncompressed.dcm"


# --- running the three entry points -------------------------------------------------------------


def pneumo(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m pneumo ARGS`, wide enough that Rich never wraps a message; output bytes that are
    not UTF-8 (file names) come back escaped."""
    env = {**os.environ, "COLUMNS": "4000"}
    command = [sys.executable, "-m", "pneumo", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, errors="backslashreplace", env=env, timeout=timeout)


def assert_cli_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2, one `error:` line naming what it must, no traceback; the message."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    message = " ".join(proc.stderr.split())
    assert message.startswith("error:"), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def assert_cli_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def model() -> OnnxModel:
    return load_model(ONNX)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app(ONNX))


def post(client: TestClient, name: str, data: bytes):
    return client.post("/v1/predict", files={"file": (name, data, "application/octet-stream")})


# --- building hard files from real films ----------------------------------------------------------


def film() -> Path:
    return pick("PNEUMONIA", 1, offset=3)[0]


def gray() -> np.ndarray:
    with Image.open(film()) as image:
        return np.asarray(image.convert("L"))


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height 1-bit pixels: a decompression bomb's shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + width // 8) * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def dicom_bytes(change: Callable[[pydicom.Dataset], None]) -> bytes:
    ds = pydicom.dcmread(DX)
    change(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _drop_pixels(ds: pydicom.Dataset) -> None:
    del ds.PixelData


def _jpeg_ls(ds: pydicom.Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9" * 40])


def frames(fmt: str) -> bytes:
    """Three different frames, the first being the film."""
    g = gray()
    images = [Image.fromarray(g), Image.fromarray(255 - g), Image.fromarray(g // 2)]
    return encoded(images[0], fmt, save_all=True, append_images=images[1:])


# name, bytes, what the message must say (library and CLI; the service says the same)
BAD: dict[str, tuple[str, Callable[[], bytes], str]] = {
    "zero-byte file": ("empty.jpeg", lambda: b"", "is empty (0 bytes)"),
    "truncated JPEG": ("cut.jpeg", lambda: film().read_bytes()[:3000], "damaged or truncated"),
    "JPEG without its last bytes": ("tail.jpeg", lambda: film().read_bytes()[:-20], "damaged or truncated"),
    "truncated PNG": ("cut.png", lambda: (d := encoded(Image.fromarray(gray()), "PNG"))[: len(d) // 2], "damaged or truncated"),
    "bytes that are not an image": ("noise.jpeg", lambda: np.random.default_rng(0).bytes(4096), "not a readable JPEG, PNG or DICOM image"),
    "text file named .png": ("notes.png", lambda: "Patient 12: follow-up in 2 weeks.\n".encode() * 20, "holds text, not pixels"),
    "PDF named .jpeg": (
        "scan.jpeg",
        lambda: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n" + bytes(200),
        "not a readable JPEG, PNG or DICOM image",
    ),
    "decompression bomb (PNG claiming 30000x30000)": ("bomb.png", lambda: png_claiming(30000, 30000), "too many pixels to decode safely"),
    "DICOM without pixel data": ("report.dcm", lambda: dicom_bytes(_drop_pixels), "no Pixel Data element"),
    "DICOM with an undecodable transfer syntax (JPEG-LS)": (
        "jpegls.dcm",
        lambda: dicom_bytes(_jpeg_ls),
        "cannot be decoded with the installed packages",
    ),
}
bad_cases = pytest.mark.parametrize("case", list(BAD))


def write_bad(case: str, folder: Path) -> Path:
    if "JPEG-LS" in case and get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder (pylibjpeg) is installed here")
    name, make, _ = BAD[case]
    path = folder / name
    path.write_bytes(make())
    return path


@bad_cases
def test_bad_image_library(case: str, tmp_path: Path, model: OnnxModel) -> None:
    path = write_bad(case, tmp_path)
    fragment = BAD[case][2]
    with pytest.raises(PneumoError) as err:
        read_image_with_info(path)
    assert str(path) in str(err.value) and fragment in str(err.value)
    with pytest.raises(PneumoError) as err:
        predict([path], model=model)
    assert str(path) in str(err.value) and fragment in str(err.value)


@pytest.mark.slow  # a new process per case; the library and HTTP variants run in the fast set
@bad_cases
def test_bad_image_cli(case: str, tmp_path: Path) -> None:
    path = write_bad(case, tmp_path)
    assert_cli_error(pneumo("predict", path, "--model", ONNX), str(path), BAD[case][2])


@bad_cases
def test_bad_image_http(case: str, tmp_path: Path, client: TestClient) -> None:
    path = write_bad(case, tmp_path)
    response = post(client, path.name, path.read_bytes())
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{path.name}: ") and BAD[case][2] in response.json()["error"]


# --- files that must work, whatever their mode, container or name -------------------------------------

# name, bytes, largest difference from the film's gray pixels (lossy re-encodings differ a little)
GOOD: dict[str, tuple[str, Callable[[], bytes], int]] = {
    "PNG named .jpeg": ("actually-png.jpeg", lambda: encoded(Image.fromarray(gray()), "PNG"), 0),
    "16-bit PNG": ("deep.png", lambda: encoded(Image.fromarray(gray().astype(np.uint16) * 257), "PNG"), 1),
    "CMYK JPEG": ("print.jpeg", lambda: encoded(Image.fromarray(gray()).convert("CMYK"), "JPEG", quality=95), 12),
    "RGBA PNG": ("alpha.png", lambda: encoded(Image.fromarray(gray()).convert("RGBA"), "PNG"), 0),
    "palette PNG": ("palette.png", lambda: encoded(Image.fromarray(gray()).convert("P"), "PNG"), 0),
}


def stretched(pixels: np.ndarray) -> np.ndarray:
    lo, hi = int(pixels.min()), int(pixels.max())
    return np.round((pixels.astype(float) - lo) / (hi - lo) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def good_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("good")
    files = {}
    for case, (name, make, _) in GOOD.items():
        files[case] = folder / name
        files[case].write_bytes(make())
    return files


@pytest.mark.parametrize("case", list(GOOD))
def test_good_image_library_and_http(case: str, good_files: dict[str, Path], model: OnnxModel, client: TestClient) -> None:
    path, tolerance = good_files[case], GOOD[case][2]
    pixels, info = read_image_with_info(path)
    reference = stretched(gray()) if case == "16-bit PNG" else gray()
    assert pixels.shape == reference.shape and info.frames == 1
    assert np.abs(pixels.astype(int) - reference).max() <= tolerance
    same_pixels = film()
    if case == "16-bit PNG":  # deep images are stretched over their range: compare with the film stretched so
        same_pixels = path.with_name("stretched-reference.png")
        same_pixels.write_bytes(encoded(Image.fromarray(reference), "PNG"))
    expected = predict([same_pixels], model=model)[0].probability
    result = predict([path], model=model)[0]
    assert result.probability == pytest.approx(expected, abs=0.05) and result.warnings == ()
    answer = post(client, path.name, path.read_bytes())
    assert answer.status_code == 200, answer.text
    assert answer.json()["probability"] == pytest.approx(result.probability, abs=1e-5) and answer.json()["warnings"] == []


def test_good_images_cli(good_files: dict[str, Path], model: OnnxModel) -> None:
    proc = pneumo("predict", *good_files.values(), "--model", ONNX, "--json")
    assert_cli_ok(proc)
    answers = {Path(a["path"]).name: a for a in json.loads(proc.stdout)}
    for path in good_files.values():
        assert answers[path.name]["probability"] == pytest.approx(predict([path], model=model)[0].probability, abs=1e-5)
        assert answers[path.name]["warnings"] == []


# --- several frames: the first one is used, and the answer says so -------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "PNG"], ids=["animated GIF", "animated PNG"])
def test_animated_image_uses_the_first_frame_with_a_warning(fmt: str, tmp_path: Path, model: OnnxModel, client: TestClient) -> None:
    path = tmp_path / f"cine.{fmt.lower()}"
    path.write_bytes(frames(fmt))
    pixels, info = read_image_with_info(path)
    assert info.frames == 3 and np.array_equal(pixels, gray())
    result = predict([path], model=model)[0]
    assert any("3 frames" in w for w in result.warnings)
    answer = post(client, path.name, path.read_bytes()).json()
    assert answer["input"]["frames"] == 3 and any("3 frames" in w for w in answer["warnings"])
    proc = pneumo("predict", path, "--model", ONNX, "--json")
    assert_cli_ok(proc)
    assert any("3 frames" in w for w in json.loads(proc.stdout)[0]["warnings"])


# --- names: spaces, accents, bytes that are not UTF-8, characters Rich reads as markup ---------------------


@pytest.mark.slow  # new processes
def test_path_with_spaces_and_accents(tmp_path: Path, model: OnnxModel, client: TestClient) -> None:
    folder = tmp_path / "dossier ébauche"
    folder.mkdir()
    path = folder / "radiographie ü.jpeg"
    shutil.copy(film(), path)
    expected = predict([film()], model=model)[0].probability
    assert predict([path], model=model)[0].probability == pytest.approx(expected, abs=1e-6)
    as_json, as_csv = (pneumo("predict", path, "--model", ONNX, "--format", fmt) for fmt in ("json", "csv"))
    assert_cli_ok(as_json)
    assert_cli_ok(as_csv)
    assert json.loads(as_json.stdout)[0]["path"] == str(path) and as_csv.stdout.splitlines()[1].startswith(f"{path},")
    answer = post(client, path.name, path.read_bytes()).json()
    assert answer["filename"] == "radiographie ü.jpeg" and answer["probability"] == pytest.approx(expected, abs=1e-5)
    broken = folder / "notes ü.png"
    broken.write_text("not an image")
    assert_cli_error(pneumo("predict", broken, "--model", ONNX), str(broken), "holds text")
    assert post(client, broken.name, broken.read_bytes()).json()["error"].startswith("notes ü.png: ")


def test_dataset_and_manifest_with_accented_paths(tmp_path: Path) -> None:
    root = copy_class_folders(tmp_path / "données été", {"NORMAL": 2, "PNEUMONIA": 2})
    first = sorted((root / "NORMAL").iterdir())[0]
    first.rename(first.with_name("radiographie ü.jpeg"))
    assert len(discover(root).split(None)) == 4
    manifest = tmp_path / "liste é.csv"
    manifest.write_text(
        "path,label\n" + "".join(f"{p.relative_to(tmp_path)},{p.parent.name}\n" for p in sorted(root.rglob("*.jpeg"))), encoding="utf-8"
    )
    assert {r.path.name for r in discover(manifest).split(None)} >= {"radiographie ü.jpeg"}
    proc = pneumo("data", "summary", manifest, "--json")
    assert_cli_ok(proc)
    assert json.loads(proc.stdout)["splits"]["all"]["images"] == 4


@pytest.mark.slow  # new processes
@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that stores names as bytes")
def test_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    path = Path(os.fsdecode(bytes(tmp_path) + b"/radiograf\xeda.jpeg"))  # Latin-1 i-acute, as old Windows archives have
    shutil.copy(film(), path)
    for fmt in ("table", "json", "csv"):
        assert_cli_ok(pneumo("predict", path, "--model", ONNX, "--format", fmt))


def test_file_name_that_is_not_utf8_written_to_a_file(tmp_path: Path) -> None:
    path = Path(os.fsdecode(bytes(tmp_path) + b"/radiograf\xeda.jpeg"))
    shutil.copy(film(), path)
    assert_cli_ok(pneumo("predict", path, "--model", ONNX, "--out", tmp_path / "out.csv"))


def test_brackets_in_a_path_are_printed_as_they_are(tmp_path: Path) -> None:
    folder = tmp_path / "[b]atch"
    folder.mkdir()
    (folder / "x.png").write_text("not an image")
    assert_cli_error(pneumo("predict", folder / "x.png", "--model", ONNX), str(folder / "x.png"))


# --- files that cannot be opened -------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads a file whatever its permissions")
def test_unreadable_file(tmp_path: Path, client: TestClient) -> None:
    path = tmp_path / "locked.jpeg"
    shutil.copy(film(), path)
    path.chmod(0)
    with pytest.raises(PneumoError, match="Permission denied") as err:
        read_image_with_info(path)
    assert str(path) in str(err.value)
    assert_cli_error(pneumo("predict", path, "--model", ONNX), str(path), "Permission denied")


def test_folder_named_like_an_image(tmp_path: Path) -> None:
    folder = tmp_path / "scan.jpeg"
    folder.mkdir()
    with pytest.raises(PneumoError, match="is a folder, not an image file") as err:
        read_image_with_info(folder)
    assert str(folder) in str(err.value)
    assert_cli_error(pneumo("predict", folder, "--model", ONNX), str(folder), "holds no images (.bmp, .dcm")


def test_dangling_symlink_and_symlink_loop_as_inputs(tmp_path: Path) -> None:
    dangling = tmp_path / "moved.jpeg"
    dangling.symlink_to(tmp_path / "nowhere.jpeg")
    loop_a, loop_b = tmp_path / "a.jpeg", tmp_path / "b.jpeg"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    for path, reason in [(dangling, "No such file"), (loop_a, "Too many levels of symbolic links")]:
        with pytest.raises(PneumoError, match=reason) as err:
            read_image_with_info(path)
        assert str(path) in str(err.value)
        assert_cli_error(pneumo("predict", path, "--model", ONNX), str(path))
    with pytest.raises(PneumoError, match="symlink that leads nowhere"):
        discover(loop_a)


# --- dataset folders: links, empty and missing classes, a single class ----------------------------------------


def _linked_dataset(tmp_path: Path) -> tuple[Path, Path]:
    """3 + 3 films, an outside folder of 2 more NORMAL films linked in, and every loop there is."""
    root = copy_class_folders(tmp_path / "data", {"NORMAL": 3, "PNEUMONIA": 3})
    outside = copy_class_folders(tmp_path / "elsewhere", {"NORMAL": 2}, offset=5) / "NORMAL"
    (root / "a").symlink_to("b")  # a -> b -> a
    (root / "b").symlink_to("a")
    (root / "NORMAL" / "x.jpeg").symlink_to("y.jpeg")  # a loop with an image's name
    (root / "NORMAL" / "y.jpeg").symlink_to("x.jpeg")
    (root / "PNEUMONIA" / "up").symlink_to("..", target_is_directory=True)  # the dataset, again
    (root / "NORMAL" / "top").symlink_to("../..", target_is_directory=True)  # above the dataset
    (root / "NORMAL" / "side").symlink_to("../PNEUMONIA", target_is_directory=True)  # the other class
    (root / "NORMAL" / "more").symlink_to(outside, target_is_directory=True)  # outside: followed
    (outside / "back").symlink_to(root, target_is_directory=True)  # and back in from there
    return root, outside


def test_symlink_loops_in_a_dataset_end_and_count_each_film_once(tmp_path: Path) -> None:
    root, outside = _linked_dataset(tmp_path)
    records = discover(root).split(None)
    normal = sorted(r.path.name for r in records if r.label == "NORMAL")
    pneumonia = sorted(r.path.name for r in records if r.label == "PNEUMONIA")
    assert pneumonia == sorted(p.name for p in (root / "PNEUMONIA").glob("*.jpeg"))
    real_normal = [p.name for p in (root / "NORMAL").glob("*.jpeg") if not p.is_symlink()]
    assert normal == sorted([*real_normal, *(p.name for p in outside.glob("*.jpeg")), "x.jpeg", "y.jpeg"])
    summary = summarize(root, progress=False)
    assert sorted(Path(e.split(": ")[0].removeprefix("cannot read ")).name for e in summary["unreadable"]) == ["x.jpeg", "y.jpeg"]
    assert "Too many levels of symbolic links" in summary["unreadable"][0]
    proc = pneumo("data", "summary", root, "--json", timeout=60)
    assert_cli_ok(proc)
    assert json.loads(proc.stdout)["splits"]["all"]["images"] == len(records)
    assert len(set(expand_paths([root]))) == len(expand_paths([root]))  # prediction's folder search ends too


def test_glob_through_a_symlink_to_a_parent_lists_each_film_once(tmp_path: Path) -> None:
    root = copy_class_folders(tmp_path / "data", {"NORMAL": 2})
    (root / "NORMAL" / "up").symlink_to("..", target_is_directory=True)  # two such links make the glob never end
    files = expand_paths([f"{root}/**/*.jpeg"])
    assert len(files) == len({f.resolve() for f in files}) == 2


def test_empty_class_folders(tmp_path: Path) -> None:
    (tmp_path / "NORMAL").mkdir()
    (tmp_path / "PNEUMONIA").mkdir()
    (tmp_path / "NORMAL" / ".DS_Store").write_bytes(b"\x00")
    with pytest.raises(PneumoError, match="has no .jpeg/.jpg/.png images or DICOM files") as err:
        discover(tmp_path)
    assert str(tmp_path / "NORMAL") in str(err.value)
    assert_cli_error(pneumo("data", "summary", tmp_path), str(tmp_path / "NORMAL"), "put the NORMAL images in it")


def test_missing_class_folder(tmp_path: Path) -> None:
    copy_class_folders(tmp_path, {"PNEUMONIA": 2})
    with pytest.raises(PneumoError, match="has a PNEUMONIA/ folder but no NORMAL/ folder"):
        discover(tmp_path)
    assert_cli_error(pneumo("data", "summary", tmp_path), str(tmp_path), "no NORMAL/ folder")
    split = copy_class_folders(tmp_path / "kaggle" / "train", {"NORMAL": 2, "PNEUMONIA": 2}).parent
    copy_class_folders(split / "test", {"NORMAL": 1})
    assert_cli_error(pneumo("data", "summary", split), str(split / "test"), "no PNEUMONIA/ folder")


@pytest.fixture(scope="module")
def single_class_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest = tmp_path_factory.mktemp("single") / "normal-only.csv"
    manifest.write_text("path,label\n" + "".join(f"{f},NORMAL\n" for f in pick("NORMAL", 8)))
    return manifest


def test_single_class_dataset_is_warned_about(single_class_manifest: Path) -> None:
    warnings = summarize(single_class_manifest, check_images=False)["warnings"]
    assert any("has no PNEUMONIA images" in w and "training" in w for w in warnings)
    proc = pneumo("data", "summary", single_class_manifest, "--no-check")
    assert_cli_ok(proc)
    assert "has no PNEUMONIA images" in " ".join(proc.stdout.split())


@pytest.fixture(scope="module")
def single_class_training(single_class_manifest: Path) -> subprocess.CompletedProcess:
    """`pneumo train` on the single-class manifest, run once for the tests that read its answer."""
    return pneumo(
        "train", "--config", "cpu", "--set", f"data={single_class_manifest}", "--out", single_class_manifest.parent / "run", "--quiet"
    )


@pytest.mark.slow
def test_training_refuses_a_single_class(
    single_class_manifest: Path, single_class_training: subprocess.CompletedProcess, tmp_path: Path
) -> None:
    from pneumo.config import load_config
    from pneumo.training.loop import train

    with pytest.raises(PneumoError, match="single class"):
        train(load_config("cpu", [f"data={single_class_manifest}"]), out=tmp_path / "run", progress=False)
    assert_cli_error(single_class_training, "single class", "NORMAL and PNEUMONIA")


@pytest.mark.slow
def test_training_refusal_names_the_data(single_class_manifest: Path, single_class_training: subprocess.CompletedProcess) -> None:
    assert_cli_error(single_class_training, str(single_class_manifest), "NORMAL")


# --- manifests -----------------------------------------------------------------------------------------------


def _manifest(rows: list[list[str]], header: str = "path,label") -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return f"{header}\n{buffer.getvalue()}"


def _films(folder: Path, n: int) -> list[str]:
    names = []
    for f in pick("NORMAL", n // 2) + pick("PNEUMONIA", n - n // 2):
        shutil.copy(f, folder / f.name)
        names.append(f.name)
    return names


def _missing_files(folder: Path) -> bytes:
    rows = [[n, "normal"] for n in _films(folder, 2)] + [[f"gone/{i}.jpeg", "normal"] for i in range(7)]
    return _manifest(rows).encode()


def _duplicates(folder: Path) -> bytes:
    names = _films(folder, 2)
    rows = [[names[0], "normal"], [names[1], "normal"], [names[0], "normal"], [f"./{names[1]}", "pneumonia"]]
    return _manifest(rows).encode()


MANIFESTS: dict[str, tuple[Callable[[Path], bytes], list[str]]] = {
    "files that do not exist": (
        _missing_files,
        [
            "7 of the listed files do not exist",
            "line 4: gone/0.jpeg",
            "line 8: gone/4.jpeg",
            "and 2 more",
            "read from the manifest's folder",
        ],
    ),
    "wrong header": (
        lambda d: _manifest([[n, "normal"] for n in _films(d, 2)], "file,class").encode(),
        ["needs a header with at least 'path' and 'label'", "'file,class'"],
    ),
    "semicolons": (lambda d: _manifest([], "path;label").encode(), ["'path;label'", "save it with commas"]),
    "unknown label": (
        lambda d: _manifest([[n, lab] for n, lab in zip(_films(d, 2), ["normal", "covid"])]).encode(),
        ["line 3", "label 'covid' is not NORMAL or PNEUMONIA"],
    ),
    "duplicate rows": (
        _duplicates,
        ["2 repeated rows", "line 4 repeats line 2", "line 5 repeats line 3 with another label", "keep one row per image"],
    ),
    "empty manifest": (lambda d: b"", ["is empty", "'path' and 'label'"]),
    "header only": (lambda d: b"path,label\r\n\r\n,\r\n", ["lists no images"]),
    "UTF-16 manifest": (lambda d: _manifest([[n, "normal"] for n in _films(d, 2)]).encode("utf-16"), ["not a UTF-8 CSV file", "CSV UTF-8"]),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_bad_manifest(case: str, tmp_path: Path) -> None:
    make, fragments = MANIFESTS[case]
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(make(tmp_path))
    with pytest.raises(PneumoError) as err:
        discover(manifest)
    assert str(manifest) in str(err.value)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert_cli_error(pneumo("data", "summary", manifest), str(manifest), *fragments)


def test_manifest_from_a_spreadsheet_reads(tmp_path: Path) -> None:
    """BOM, CRLF, padded cells, a trailing row of empty cells and a blank line: all fine."""
    names = _films(tmp_path, 4)
    text = "\ufeff Path , Label ,patient_id\r\n" + "".join(
        f'"{n}" , {lab} ,\r\n' for n, lab in zip(names, ["normal", "NORMAL", "1", "Virus"])
    )
    (tmp_path / "sheet.csv").write_text(text + ",,\r\n\r\n", encoding="utf-8")
    records = discover(tmp_path / "sheet.csv").split(None)
    assert [r.path.name for r in records] == names and [r.label for r in records] == ["NORMAL", "NORMAL", "PNEUMONIA", "PNEUMONIA"]
