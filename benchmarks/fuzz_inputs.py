"""Fuzz the image decoders and the manifest reader (and, by --target, the config reader, the model
loaders and the upload reader) with damaged real files.

    python benchmarks/fuzz_inputs.py [--target inputs|configs|metadata|multipart] [--seconds 300 | --iterations 20000] [--seed 0] [--out fuzz-findings] [--budget 2]

Seeds: a training JPEG, a sample PNG, every sample DICOM and a small manifest of real films.
Each input is a seed after 1-4 mutations (bytes flipped or overwritten with boundary values,
the file cut short, bytes inserted, a chunk of the file repeated elsewhere); half of them land
in the first 2 KB, where the headers a parser trusts are. The PNG is fed twice: as damaged,
and with its chunk checksums repaired after the damage, which gets past PIL's CRC check into
the decoder itself. Images go to `decode_image_with_info`,
alternating the command line's full decode and the service's reduced decode with its pixel
limit; manifests go to `discover`. Every input must decode to a sane image (or records) or
raise PneumoError. Anything else is a bug: the first few of each kind are saved under --out with
a reproducer. An input still running after --budget seconds (2; 15 for `--target metadata`) is
interrupted (SIGALRM, between Python bytecodes) and saved as a hang; the slowest input of each
seed is reported.

`--target configs` fuzzes the config reader instead (issue 17): the shipped YAML recipes
(src/pneumo/configs and configs/), damaged as bytes as above or with one to three values
swapped for hostile ones (NaN, infinities, huge and negative numbers, bools, lists, anchors
and aliases, deep nesting, repeated or misspelt keys, a non-UTF-8 byte), are fed to
`load_config` as files; the hostile values also go in as `--set key=value` overrides. Each
must give a Config that loads again unchanged from its own dict (what a checkpoint stores)
or raise PneumoError.

`--target metadata` fuzzes the model loaders: a copy of the bundled model's `meta.json` and of
its export's JSON (`src/pneumo/weights/pneumo.json`, beside a copy of `pneumo.onnx`) after one to
three edits (a value swapped for a hostile one: NaN, infinities, huge, negative and tiny numbers,
an integer too large for a float, wrong types, other tasks, classes and architectures, forged
checksums, a deeply nested array; a key deleted or added; a number nudged or written as a
string; a value copied from elsewhere in the file), or a third of the time damaged as bytes.
Each file is fed twice: as edited, which its checksum must catch, and resealed after the edit
with the library's own sealing function (`pneumo.models.meta.seal`; for an export, its checkpoint
record and then the whole JSON), which gets past the checksum to the field checks. Each is loaded
through the real loader (`load_model` on the folder, or on the .onnx) and must give a model or
raise PneumoError; a model that loads must give, for two real films, probabilities that are
finite and in [0, 1] (a PneumoError while predicting counts as a bug: the loader let it through).

`--target multipart` fuzzes the service's upload reader (`pneumo.service.upload.read_upload`) in
process: well-formed multipart/form-data bodies around a real film (a file part and a text
part; a quoted boundary and a file name with a path) and their Content-Type and Content-Length
headers are damaged (bytes as above; parts, boundaries, header lines and CRLFs dropped, repeated
or flooded; hostile Content-Types and lengths), then fed to it as an ASGI request in chunks of
random sizes, a third of them under a 4 KiB upload limit. Each must give the file's name and at
most the limit of bytes, or raise the module's client error (`ApiError`, a 4xx); anything else
is a bug. The parser runs in the calling thread here (not the service's thread pool), so a
hang is interrupted like any other.

`--target api` fuzzes the Python API: every public function of `pneumo` (`predict`, `evaluate`,
`calibrate`, `export`, `ensemble`, `predict_archive`, `train`, `load_model`, `discover`, `serve`,
`load_config`)
called with random values as its first argument and as a random choice of its keyword arguments:
None, booleans, boundary numbers (0, -1, huge, NaN, infinities), strings and paths (empty, a
missing file, a folder of two real films, /dev/null, NUL bytes, very long), bytes (a real film,
cut, random), numpy arrays and torch tensors of every dtype and of 0 to 5 dimensions (NaN, 0-sized,
1 to 5 channels, huge shapes described but not allocated), PIL images of every mode, and lists,
tuples, dicts, sets and generators of these. Each call must return or raise PneumoError; any
other exception is a bug. Calls that would start work (a training run, a server) are given a
value that must be refused before they do (`serve` an unusable port, `train` no real Config).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import re
import shutil
import signal
import statistics
import tempfile
import time
import traceback
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from common import DATA, table

from pneumo.config import Config, config_from_dict, config_to_dict, load_config
from pneumo.data.io import decode_image_with_info
from pneumo.data.pixels import ImageInfo
from pneumo.data.layout import discover
from pneumo.errors import PneumoError

__all__ = ["main", "mutate", "mutate_config", "mutate_json", "mutate_multipart", "repair_png_crcs"]

_HEADER_BYTES = 2048
_BOUNDARY_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
_SERVICE_MAX_PIXELS = 50_000_000  # pneumo.service.app.DEFAULT_MAX_PIXELS
_SAVED_PER_KIND = 3


class _Hang(BaseException):
    """Raised by the alarm; a BaseException, so `except Exception` in the code under test cannot swallow it."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _Hang


def _position(rng: random.Random, size: int) -> int:
    """A position in [0, size], half the time in the header region."""
    if size == 0:
        return 0
    return rng.randrange(min(size, _HEADER_BYTES)) if rng.random() < 0.5 else rng.randrange(size + 1)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """The data after 1-4 random mutations: flips, truncation, insertion, chunk duplication."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(("flip", "truncate", "insert", "duplicate"))
        if kind == "flip" and out:
            for _ in range(rng.randint(1, 8)):
                at = min(_position(rng, len(out)), len(out) - 1)
                out[at] = rng.choice(_BOUNDARY_BYTES) if rng.random() < 0.3 else out[at] ^ (1 << rng.randrange(8))
        elif kind == "truncate":
            del out[_position(rng, len(out)) :]
        elif kind == "insert":
            n = rng.randint(1, 16)
            filler = bytes(rng.getrandbits(8) for _ in range(n)) if rng.random() < 0.5 else bytes([rng.choice(_BOUNDARY_BYTES)]) * n
            at = _position(rng, len(out))
            out[at:at] = filler
        elif kind == "duplicate" and out:
            start = rng.randrange(len(out))
            chunk = out[start : start + rng.randint(1, 4096)]
            at = _position(rng, len(out))
            out[at:at] = chunk
    return bytes(out)


def repair_png_crcs(data: bytes) -> bytes:
    """The PNG with every complete chunk's CRC recomputed, so damage inside chunks reaches the decoder."""
    out, at = bytearray(data), 8
    while at + 12 <= len(out):
        end = at + 8 + int.from_bytes(out[at : at + 4], "big")
        if end + 4 > len(out):
            break
        out[end : end + 4] = zlib.crc32(out[at + 4 : end]).to_bytes(4, "big")
        at = end + 4
    return bytes(out)


@dataclass
class _Seed:
    """A seed file, how to feed an input made from it to the code under test, and what happened."""

    name: str
    suffix: str  # of the files made from it
    data: bytes
    run: Callable[[bytes, int], None]  # raises PneumoError, or AssertionError for a wrong answer
    repair: Callable[[bytes], bytes] | None = None  # applied after mutating, to reach deeper
    mutator: Callable[[bytes, random.Random], bytes] = mutate
    reproduce: Callable[[Path], str] | None = None  # the Python call that replays a saved input
    outcomes: dict[str, int] = field(default_factory=lambda: {"ok": 0, "PneumoError": 0, "other": 0, "hang": 0})
    times: list[float] = field(default_factory=list)
    slowest: tuple[float, bytes] = (0.0, b"")


def _check_image(pixels: np.ndarray, info: ImageInfo) -> None:
    assert pixels.dtype == np.uint8 and pixels.ndim == 2 and pixels.size > 0, f"decoded {pixels.dtype} {pixels.shape}"
    assert info.width > 0 and info.height > 0 and info.frames >= 1, f"info {info}"


def _image_runner(suffix: str) -> Callable[[bytes, int], None]:
    def run(data: bytes, i: int) -> None:
        service = i % 2 == 1  # odd inputs as the service decodes them: reduced decode, pixel limit
        pixels, info = decode_image_with_info(
            data, f"fuzz{suffix}", size_hint=224 if service else None, max_pixels=_SERVICE_MAX_PIXELS if service else None
        )
        _check_image(pixels, info)

    return run


def _manifest_seed(folder: Path) -> _Seed:
    """A manifest over four real films copied into `folder`, read back from `folder`/fuzz.csv."""
    train = DATA / "chest_xray" / "train"
    films = sorted((train / "NORMAL").glob("*.jpeg"))[:2] + sorted((train / "PNEUMONIA").glob("*.jpeg"))[:2]
    for film in films:
        shutil.copy(film, folder / film.name)
    lines = ["path,label,patient_id,pathogen,split"]
    lines += [f"{f.name},{f.parent.name},,,{'val' if i % 2 else 'train'}" for i, f in enumerate(films)]
    target = folder / "fuzz.csv"

    def run(data: bytes, i: int) -> None:
        target.write_bytes(data)
        dataset = discover(target)
        records = [r for split in dataset.splits.values() for r in split]
        assert records and all(r.path.is_file() and r.label in ("NORMAL", "PNEUMONIA") for r in records), "bad records"

    return _Seed("manifest.csv", ".csv", ("\r\n".join(lines) + "\r\n").encode(), run)


def _seeds(folder: Path) -> list[_Seed]:
    dicoms = sorted((DATA / "samples" / "dicom").glob("*.dcm"))
    png = DATA / "samples" / "other" / "nih_00000001_000.png"
    images = [sorted((DATA / "chest_xray" / "train" / "PNEUMONIA").glob("*.jpeg"))[0], png, *dicoms]
    seeds = [_Seed(p.name, p.suffix, p.read_bytes(), _image_runner(p.suffix)) for p in images]
    seeds.insert(2, _Seed(f"{png.name} (CRCs repaired)", ".png", png.read_bytes(), _image_runner(".png"), repair_png_crcs))
    return seeds + [_manifest_seed(folder)]


# --- configs (--target configs) -------------------------------------------------------------------

_HOSTILE_VALUES = (
    ".nan", ".inf", "-.inf", "-1", "0", "-0.0", "1e400", "1.0e+400", "9" * 5000, "0x" + "f" * 600, "1" + ":59" * 2000,
    "true", "false", "null", "~", "''", "[]", "{}", "[1, 2]", "{a: 1}", "2024-13-45", "2024-01-01", "0o17", "0123",
    "1_000", "4294967296", "-4294967297", "2.5", "1e-400", "youden", "shift", "nan", "inf", "!!binary aGVsbG8=",
    "!!set {a, b}", "!!python/object:os.system x", "!!float abc", "&a 3", "*a", "&a [*a, *a]", "[" * 50 + "]" * 50,
    "{" * 50, "'" + "x" * 5000 + "'", '"\\x00"', '"\\uD800"', "\u00e9", "\U0001F600", "'\t'", "|\n  multi\n  line",
    "? complex", "- a\n- b", "%YAML 1.1", "--- 3", "3\n---\n4", "<<: {epochs: 3}",
)  # fmt: skip
_KEY_EDITS = ("drop", "duplicate", "misspell", "nest", "anchor")


def mutate_config(data: bytes, rng: random.Random) -> bytes:
    """A YAML config after 1-3 edits of its values or keys, or (a third of the time) of its bytes."""
    if rng.random() < 1 / 3:
        return mutate(data, rng)
    lines = data.decode("utf-8").splitlines()
    for _ in range(rng.randint(1, 3)):
        lines = "\n".join(lines).splitlines()  # an edit may have added lines
        keyed = [k for k, line in enumerate(lines) if re.match(r"^\s*[a-z_]+:", line)]
        if not keyed:
            break
        at = rng.choice(keyed)
        indent, key, _, _ = re.match(r"^(\s*)([a-z_]+):(\s*)(.*)$", lines[at]).groups()  # type: ignore[union-attr]
        if rng.random() < 0.75:
            lines[at] = f"{indent}{key}: {rng.choice(_HOSTILE_VALUES)}"
            continue
        edit = rng.choice(_KEY_EDITS)
        if edit == "drop":
            del lines[at]
        elif edit == "duplicate":
            lines.insert(rng.randrange(len(lines) + 1), lines[at])
        elif edit == "misspell":
            cut = rng.randrange(len(key))
            lines[at] = lines[at].replace(key, key[:cut] + key[cut + 1 :] if rng.random() < 0.5 else key + "s", 1)
        elif edit == "nest":
            lines[at] = f"{indent}{key}:\n{indent}  {key}: 1"
        else:
            lines[at] = lines[at].replace(":", ": &x", 1) + f"\n{indent}{key}_copy: *x"
    text = "\n".join(lines) + "\n"
    if rng.random() < 0.05:
        return text.encode("utf-8") + b"\xff\xfe"
    return text.encode("utf-8")


def _check_config(load: Callable[[], object]) -> None:
    """A Config that loads again from its own dict, or a PneumoError of one short line."""
    try:
        cfg = load()
    except PneumoError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 1000, (
            f"error message of {len(message)} characters over {message.count(chr(10)) + 1} lines"
        )
        raise
    assert isinstance(cfg, Config), f"load_config returned {type(cfg).__name__}"
    assert config_from_dict(config_to_dict(cfg)) == cfg, "the loaded config does not load again from its own dict"


def _mutate_override(data: bytes, rng: random.Random) -> bytes:
    """`key=value` for a random key of the seed config, with a hostile or byte-damaged value."""
    key = rng.choice(data.decode().split())
    value = rng.choice(_HOSTILE_VALUES).encode() if rng.random() < 0.7 else mutate(rng.choice(_HOSTILE_VALUES).encode(), rng)
    return key.encode() + b"=" + value


def _config_seeds(folder: Path) -> list[_Seed]:
    """Every shipped YAML config, fed to load_config as a file; and overrides of each key of the seed recipe."""
    project = Path(__file__).resolve().parents[1]
    paths = sorted((project / "src" / "pneumo" / "configs").glob("*.yaml")) + sorted((project / "configs").glob("*.yaml"))
    target = folder / "fuzz.yaml"

    def run_file(data: bytes, i: int) -> None:
        target.write_bytes(data)
        _check_config(lambda: load_config(target))

    def run_override(data: bytes, i: int) -> None:
        _check_config(lambda: load_config("seed", [data.decode("utf-8", "surrogateescape")]))

    def replay_file(path: Path) -> str:
        return f"from pneumo.config import load_config; load_config({str(path)!r})"

    def replay_override(path: Path) -> str:
        return f"from pathlib import Path; from pneumo.config import load_config; load_config('seed', [Path({str(path)!r}).read_bytes().decode('utf-8', 'surrogateescape')])"

    seeds = [
        _Seed(str(p.relative_to(project)), ".yaml", p.read_bytes(), run_file, mutator=mutate_config, reproduce=replay_file) for p in paths
    ]
    keys = " ".join(
        [*(k for k in config_to_dict(Config()) if k != "augment"), *(f"augment.{k}" for k in config_to_dict(Config())["augment"])]
    )
    return seeds + [
        _Seed("overrides (set key=value)", ".override", keys.encode(), run_override, mutator=_mutate_override, reproduce=replay_override)
    ]


# --- model metadata (--target metadata) ------------------------------------------------------------

_DEEP = "\x00deep\x00"  # stands for an array nested deeper than Python's recursion limit, spliced in as text
_HOSTILE_JSON = (
    float("nan"), float("inf"), -float("inf"), 0, -0.0, 1, -1, 0.5, 1.0000001, 2, 3, 16, 15, 4097, 1e-320, 5e-324, 1e308, -1e308,
    2**31, 2**63, 2**64, -(2**63), 10**400, "", "x", "1", "0.5", "nan", "ensemble", "seed_cnn", "resnet18", "resnet18_half",
    "binary", "pathogen", "NORMAL", True, False, None, [], {}, [1, 2], {"a": 1}, ["NORMAL", "PNEUMONIA"], ["PNEUMONIA", "NORMAL"],
    ["NORMAL", "BACTERIA", "VIRUS"], ["NORMAL"], "0" * 64, "f" * 64, "F" * 64, "0" * 63, "x" * 100_000, "\u0000", "\ud800", "..",
    "/etc/passwd", "float16", "pixels", ["batch", 1, 224, 224], ["batch", 2], [{"architecture": "resnet18_half"}], _DEEP,
)  # fmt: skip


def _paths(value: object, rng: random.Random) -> list[object]:
    """A random path (keys and indices) into a JSON value: a walk from the top that stops early half the time."""
    path: list[object] = []
    while isinstance(value, (dict, list)) and value and (not path or rng.random() < 0.6):
        key = rng.choice(list(value)) if isinstance(value, dict) else rng.randrange(len(value))
        path.append(key)
        value = value[key]  # type: ignore[index]
    return path


def _leaves(value: object) -> list[object]:
    """Every scalar and container in a JSON value (to copy one elsewhere)."""
    out = [value]
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        out += _leaves(child)
    return out


def _edit(doc: object, rng: random.Random) -> object:
    """One edit at a random place: a hostile value, a deletion, an unknown key, a nudge, a copy, a type change."""
    path = _paths(doc, rng)
    if not path:
        return rng.choice(_HOSTILE_JSON) if rng.random() < 0.2 else doc
    parent = doc
    for key in path[:-1]:
        parent = parent[key]  # type: ignore[index]
    key, old = path[-1], parent[path[-1]]  # type: ignore[index]
    edit = rng.choice(("hostile", "hostile", "hostile", "delete", "add", "nudge", "copy", "string"))
    if edit == "delete":
        del parent[key]  # type: ignore[attr-defined]
    elif edit == "add":
        target = old if isinstance(old, (dict, list)) else parent
        if isinstance(target, dict):
            target[rng.choice(("extra", "threshold ", "Threshold", "meta_sha256", "weights_sha256", "__proto__"))] = rng.choice(
                _HOSTILE_JSON
            )
        else:
            target.append(rng.choice(_HOSTILE_JSON) if rng.random() < 0.5 else (target[0] if target else 1))  # type: ignore[union-attr]
    elif edit == "nudge" and isinstance(old, (int, float)) and not isinstance(old, bool):
        parent[key] = rng.choice(_nudges(old))  # type: ignore[index]
    elif edit == "copy":
        parent[key] = json.loads(json.dumps(rng.choice(_leaves(doc))))  # type: ignore[index]
    elif edit == "string":
        parent[key] = json.dumps(old)  # type: ignore[index]
    else:
        parent[key] = rng.choice(_HOSTILE_JSON)  # type: ignore[index]
    return doc


def _nudges(old: float) -> list[float]:
    """Numbers near `old` or of the other numeric type (1 -> 1.0, 2.0 -> 2); an int too large for a float keeps its int neighbours."""
    out: list[float] = [old + 1, old - 1, -old]
    try:
        out += [old * 1e6, old / 1e6, old * (1 + 1e-9), float(old) if isinstance(old, int) else int(old)]
    except (OverflowError, ValueError):  # a huge int, or a float that is NaN or infinite
        pass
    return out


def _dump(doc: object) -> bytes:
    """JSON as Python writes it (NaN and Infinity included), with `_DEEP` spliced in as a 10,000-deep array."""
    text = json.dumps(doc, indent=1)
    return text.replace(json.dumps(_DEEP), "[" * 10_000 + "]" * 10_000).encode("utf-8", "surrogatepass")


def mutate_json(data: bytes, rng: random.Random) -> bytes:
    """A JSON document after 1-3 edits of its values and keys (`_edit`), or (a third of the time) of its bytes."""
    if rng.random() < 1 / 3:
        return mutate(data, rng)
    doc = json.loads(data)
    for _ in range(rng.randint(1, 3)):
        doc = _edit(doc, rng)
    return _dump(doc)


def _reseal(data: bytes, export: bool) -> bytes:
    """The document with its checksums recomputed by the library's writer (`seal`): as a forger with
    pneumo would; an export's checkpoint record first, then the whole. Unchanged when it is not a JSON object."""
    from pneumo.models.meta import seal

    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return data
    if not isinstance(doc, dict):
        return data
    if export and isinstance(doc.get("checkpoint"), dict):
        doc["checkpoint"] = seal(doc["checkpoint"])
    try:
        return json.dumps(seal(doc), indent=1).encode("utf-8", "surrogatepass")
    except (ValueError, RecursionError, TypeError):
        return data


def _films() -> list[Path]:
    train = DATA / "chest_xray" / "train"
    return [min((train / "NORMAL").glob("*.jpeg")), min((train / "PNEUMONIA").glob("*.jpeg"))]


def _check_predictions(model: object) -> None:
    """Two real films through a model that loaded: finite probabilities in [0, 1] and a label each."""
    from pneumo.data.preprocess import load_image

    try:
        model = model.with_feature_check()  # type: ignore[attr-defined]
        images = np.stack([load_image(f, model.image_size) for f in _films()])
        probs, _ = model.probabilities_and_scores(images)
        p = model.pneumonia_probability(images)
        labels = [model.label(float(x)) for x in p]
    except PneumoError as exc:
        raise AssertionError(f"the model loaded, then predicting raised PneumoError: {exc}") from None
    assert probs.shape == (2, len(model.classes)), f"probabilities of shape {probs.shape} for {len(model.classes)} classes"
    assert np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all(), f"probabilities {probs.tolist()}"
    assert all(label in ("NORMAL", "PNEUMONIA") for label in labels), f"labels {labels}"


def _metadata_seeds(folder: Path) -> list[_Seed]:
    """meta.json in a copy of the bundled model's folder, and the export's JSON beside a copy of its graph; each as edited and resealed."""
    from pneumo.inference.predict import bundled_model_dir, load_model
    from pneumo.models.checkpoint import copy_checkpoint

    bundled = bundled_model_dir()
    model_dir = copy_checkpoint(bundled, folder / "model")
    export_dir = folder / "export"
    export_dir.mkdir()
    shutil.copy(bundled / "pneumo.onnx", export_dir / "pneumo.onnx")

    def run_meta(data: bytes, i: int) -> None:
        (model_dir / "meta.json").write_bytes(data)
        _check_predictions(load_model(model_dir))

    def run_export(data: bytes, i: int) -> None:
        (export_dir / "pneumo.json").write_bytes(data)
        _check_predictions(load_model(export_dir / "pneumo.onnx"))

    def replay_meta(path: Path) -> str:
        return (
            "import shutil, tempfile; from pathlib import Path; from pneumo.models.checkpoint import copy_checkpoint; "
            "from pneumo.inference.predict import bundled_model_dir, load_model; "
            f"f = copy_checkpoint(bundled_model_dir(), Path(tempfile.mkdtemp()) / 'm'); shutil.copy({str(path)!r}, f / 'meta.json'); load_model(f)"
        )

    def replay_export(path: Path) -> str:
        return (
            "import shutil, tempfile; from pathlib import Path; from pneumo.inference.predict import bundled_model_dir, load_model; "
            "f = Path(tempfile.mkdtemp()); shutil.copy(bundled_model_dir() / 'pneumo.onnx', f); "
            f"shutil.copy({str(path)!r}, f / 'pneumo.json'); load_model(f / 'pneumo.onnx')"
        )

    meta, export = (bundled / "meta.json").read_bytes(), (bundled / "pneumo.json").read_bytes()
    run_meta(meta, 0)  # the unedited files load and predict (and the imports are done before the clock starts)
    run_export(export, 0)
    return [
        _Seed("meta.json", ".json", meta, run_meta, mutator=mutate_json, reproduce=replay_meta),
        _Seed("meta.json (resealed)", ".json", meta, run_meta, lambda d: _reseal(d, False), mutate_json, replay_meta),
        _Seed("pneumo.json", ".json", export, run_export, mutator=mutate_json, reproduce=replay_export),
        _Seed("pneumo.json (resealed)", ".json", export, run_export, lambda d: _reseal(d, True), mutate_json, replay_export),
    ]


# --- uploads (--target multipart) -----------------------------------------------------------------

_UPLOAD_LIMIT, _SMALL_LIMIT = 25 * 2**20, 4096  # the service's default, and one a film exceeds
_HOSTILE_CONTENT_TYPES = (
    b"", b"multipart/form-data", b"multipart/form-data;", b"multipart/form-data; boundary=", b'multipart/form-data; boundary=""',
    b"multipart/form-data; boundary=" + b"b" * 70, b"multipart/form-data; boundary=" + b"b" * 71, b"multipart/form-data; boundary=" + b"b" * 5000,
    b"MULTIPART/FORM-DATA; BOUNDARY=XyZ", b"multipart/form-data; boundary=XyZ; boundary=Other", b"multipart/form-data; boundary=XyZ; charset=utf-8",
    b'multipart/form-data; boundary="XyZ', b"multipart/form-data; boundary=X y Z", b"multipart/form-data;;;;; boundary=XyZ",
    b"multipart/form-data; boundary*=utf-8''XyZ", b"multipart/mixed; boundary=XyZ", b"application/x-www-form-urlencoded", b"text/plain",
    b"image/jpeg", b"multipart/form-data; boundary=\xff\xfe", b"multipart/form-data; boundary=\x00", b"multipart/form-data; boundary=--",
    b";" * 2000, b"multipart/form-data; " + b"a=b; " * 300 + b"boundary=XyZ", b"multipart/form-data\x00; boundary=XyZ",
)  # fmt: skip
_HOSTILE_LENGTHS = (b"", b"0", b"-1", b"1", b"abc", b"99999999999999999999", b"1e3", b" 12", b"26214400", b"27000000", b"\xff")


def _split_request(data: bytes) -> tuple[dict[bytes, bytes], bytes]:
    """An input's two header lines and its body (the first blank line divides them)."""
    head, _, body = data.partition(b"\r\n\r\n")
    headers: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().replace(b"\r", b"").replace(b"\n", b"")
    return headers, body


def _join_request(headers: dict[bytes, bytes], body: bytes) -> bytes:
    return b"\r\n".join(k + b": " + v for k, v in headers.items()) + b"\r\n\r\n" + body


def _form(boundary: bytes, parts: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + h + b"\r\n\r\n" + d + b"\r\n" for h, d in parts)
    return body + b"--" + boundary + b"--\r\n"


def _body_edit(body: bytes, boundary: bytes, rng: random.Random) -> bytes:
    """One structural edit of a multipart body: parts and header lines dropped, repeated or flooded; line ends lost; the boundary changed."""
    delimiter = b"--" + boundary
    pieces = body.split(delimiter)
    edit = rng.choice(
        (
            "drop_part",
            "repeat_part",
            "many_parts",
            "header_flood",
            "long_header",
            "no_crlf",
            "boundary",
            "no_end",
            "file_twice",
            "filename",
            "preamble",
        )
    )
    if edit == "drop_part" and len(pieces) > 2:
        del pieces[rng.randrange(1, len(pieces) - 1)]
    elif edit == "repeat_part" and len(pieces) > 2:
        pieces.insert(rng.randrange(1, len(pieces)), pieces[rng.randrange(1, len(pieces) - 1)][:4096])
    elif edit == "many_parts":
        pieces[1:1] = [b'\r\nContent-Disposition: form-data; name="n"\r\n\r\nv\r\n'] * rng.choice((15, 16, 17, 1000))
    elif edit == "header_flood":
        n = rng.choice((7, 8, 9, 500))
        pieces[-2 if len(pieces) > 2 else 0] = b"\r\n" + b"X-A: b\r\n" * n + pieces[-2 if len(pieces) > 2 else 0].lstrip(b"\r\n")
    elif edit == "long_header":
        pieces[1 if len(pieces) > 1 else 0] = (
            b'\r\nContent-Disposition: form-data; name="file"; filename="'
            + b"a" * rng.choice((4000, 5000, 70000))
            + b'"'
            + pieces[1 if len(pieces) > 1 else 0]
        )
    elif edit == "no_crlf":
        return body.replace(b"\r\n", rng.choice((b"\n", b"\r", b"")), rng.randint(1, 6))
    elif edit == "boundary":
        return body.replace(
            delimiter,
            rng.choice((b"--" + boundary[:-1], b"-" + boundary, b"--" + boundary + b"x", b"--" + boundary.upper())),
            rng.randint(1, 3),
        )
    elif edit == "no_end":
        return body[: body.rfind(delimiter)] if delimiter in body else body[:-8]
    elif edit == "file_twice":
        return body + _form(boundary, [(b'Content-Disposition: form-data; name="file"; filename="b.png"', b"\x89PNG")])
    elif edit == "filename":
        name = rng.choice(
            (
                b"",
                b"/",
                b"..",
                b"../../etc/passwd",
                b"C:\\\\x\\\\",
                b"\xff\xfe",
                b"a\x00b",
                b"\xe2\x80\xae" + b"gpj.exe",
                b"x" * 300,
                b'"',
                b"%00",
            )
        )
        return (
            body.replace(b'filename="', b'filename="' + name, 1)
            if rng.random() < 0.5
            else body.replace(b'; filename="', b"; filename*=UTF-8''" + name + b'; x="', 1)
        )
    else:
        return rng.choice((b"preamble\r\n", b"\r\n" * 100, b"--\r\n", b"\x00" * 10)) + body
    return delimiter.join(pieces)


def mutate_multipart(data: bytes, rng: random.Random) -> bytes:
    """A request (`_split_request`) after 1-3 edits of its Content-Type, its Content-Length or its body."""
    headers, body = _split_request(data)
    boundary = _boundary_of(headers.get(b"content-type", b""))
    for _ in range(rng.randint(1, 3)):
        where = rng.random()
        if where < 0.2:
            headers[b"content-type"] = (
                rng.choice(_HOSTILE_CONTENT_TYPES) if rng.random() < 0.7 else mutate(headers.get(b"content-type", b""), rng)
            )
        elif where < 0.3:
            headers[b"content-length"] = rng.choice(_HOSTILE_LENGTHS)
        elif where < 0.65:
            body = _body_edit(body, boundary, rng)
        else:
            body = mutate(body, rng)
    if b"content-length" in headers and rng.random() < 0.5 and headers[b"content-length"].isdigit():
        headers[b"content-length"] = str(len(body)).encode()  # usually the honest length of the damaged body
    return _join_request(headers, body)


def _boundary_of(content_type: bytes) -> bytes:
    found = re.search(rb'boundary="?([^";]*)', content_type)
    return found.group(1) if found and found.group(1) else b"XyZ"


def _multipart_seeds() -> list[_Seed]:
    """Three forms around a real film, fed to read_upload as an ASGI request in chunks of random sizes."""
    from pneumo.service import upload

    async def inline(func, *args):  # the parser in this thread, where the alarm can stop it
        return func(*args)

    upload.run_in_threadpool = inline  # type: ignore[assignment]
    logging.getLogger("python_multipart").setLevel(logging.CRITICAL)
    film = _films()[0].read_bytes()
    plain = _form(b"XyZ", [(b'Content-Disposition: form-data; name="file"; filename="a.jpeg"\r\nContent-Type: image/jpeg', film)])
    two = _form(
        b"----pneumo7MA4YWxkTrZu0gW",
        [
            (b'Content-Disposition: form-data; name="note"', b"hello"),
            (b'Content-Disposition: form-data; name="file"; filename="C:\\\\films\\\\b.jpeg"', film),
        ],
    )
    seeds = [
        _join_request({b"content-type": b"multipart/form-data; boundary=XyZ", b"content-length": str(len(plain)).encode()}, plain),
        _join_request(
            {b"content-type": b'multipart/form-data; boundary="----pneumo7MA4YWxkTrZu0gW"', b"content-length": str(len(two)).encode()}, two
        ),
        _join_request({b"content-type": b"multipart/form-data; charset=utf-8; boundary=XyZ"}, plain),
    ]

    def run(data: bytes, i: int) -> None:
        headers, body = _split_request(data)
        limit = _SMALL_LIMIT if i % 3 == 2 else _UPLOAD_LIMIT
        rng = random.Random(i)
        chunks, at = [], 0
        while at < len(body):
            size = rng.choice((1, 7, 512, 4096, 65536, len(body)))
            chunks.append(body[at : at + size])
            at += size
        if rng.random() < 0.2:
            chunks.insert(rng.randrange(len(chunks) + 1), b"")
        messages = [{"type": "http.request", "body": c, "more_body": k < len(chunks) - 1} for k, c in enumerate(chunks)] or [
            {"type": "http.request", "body": b"", "more_body": False}
        ]

        async def receive() -> dict:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/predict",
            "query_string": b"",
            "headers": list(headers.items()),
            "http_version": "1.1",
        }
        try:
            name, got = asyncio.run(upload.read_upload(upload.Request(scope, receive), limit))
        except upload.ApiError as exc:
            assert 400 <= exc.status < 500 and "\n" not in exc.message and len(exc.message) < 1000, (
                f"ApiError {exc.status}: {exc.message[:200]!r}"
            )
            raise PneumoError(exc.message) from None  # counted as the expected refusal
        assert isinstance(name, str) and name and "/" not in name and "\\" not in name, f"file name {name!r}"
        assert isinstance(got, bytes) and len(got) <= limit, f"{len(got)} bytes under a limit of {limit}"

    def replay(path: Path) -> str:
        return (
            "import asyncio, sys; sys.path.insert(0, 'benchmarks'); import fuzz_inputs as f; "
            f"f._multipart_seeds()[0].run(open({str(path)!r}, 'rb').read(), 0)"
        )

    names = ("form with the file", "two parts, quoted boundary", "charset before boundary, no length")
    return [_Seed(n, ".http", s, run, mutator=mutate_multipart, reproduce=replay) for n, s in zip(names, seeds)]


_API_FUNCTIONS = (
    "predict",
    "evaluate",
    "calibrate",
    "export",
    "ensemble",
    "predict_archive",
    "train",
    "load_model",
    "discover",
    "serve",
    "load_config",
)


def _api_value(rng: random.Random, scratch: Path, depth: int = 0) -> object:
    """One random value of the kinds a notebook or a careless script hands over."""
    import torch
    from PIL import Image

    film = _films()[rng.randrange(2)]
    kind = rng.randrange(14 if depth < 2 else 11)
    if kind == 0:
        return rng.choice([None, True, False, 0, 1, -1, 2**63, -(2**70), 3.5, float("nan"), float("inf"), -0.0, 1e-300, 1e308])
    if kind == 1:
        return rng.choice(
            ["", "/dev/null", "x.jpeg", "\x00", "a" * 5000, str(scratch / "missing.jpeg"), str(scratch / "films"), "bundled", "cpu", "-1"]
        )
    if kind == 2:
        return rng.choice([Path(""), scratch / "missing", scratch / "films", scratch / "films" / film.name, Path("/dev/null"), scratch])
    if kind == 3:
        data = film.read_bytes()
        return rng.choice([data, data[: rng.randrange(1, len(data))], bytes(rng.getrandbits(8) for _ in range(64)), b"", bytearray(data)])
    if kind in (4, 5):
        dims = rng.randrange(0, 6)
        shape = tuple(rng.choice([0, 1, 2, 3, 4, 5, 64, 224, 300]) for _ in range(dims))
        if int(np.prod(shape, dtype=np.int64)) > 2_000_000:
            shape = shape[:2]
        dtype = rng.choice([np.uint8, np.uint16, np.int8, np.int64, np.float16, np.float32, np.float64, np.bool_, np.complex64])
        array = np.asarray(np.random.default_rng(rng.randrange(2**31)).random(shape) * rng.choice([1, 255, 65535, -3])).astype(dtype)
        if array.size and dtype in (np.float32, np.float64) and rng.random() < 0.3:
            array.flat[0] = rng.choice([np.nan, np.inf])
        return torch.from_numpy(array) if kind == 5 and dtype not in (np.uint16,) else array
    if kind == 6:
        mode = rng.choice(["L", "RGB", "RGBA", "LA", "P", "1", "I", "I;16", "F", "CMYK", "YCbCr", "HSV"])
        size = (rng.choice([1, 8, 64, 300]), rng.choice([1, 8, 64, 300]))
        try:
            return Image.new(mode, size, color=rng.randrange(256) if mode not in ("RGB", "RGBA", "CMYK", "YCbCr", "HSV") else None)
        except (ValueError, TypeError):
            return Image.new("L", size)
    if kind == 7:
        return rng.choice([object(), print, Exception("x"), Ellipsis, type, slice(1), complex(1, 2)])
    if kind in (8, 9, 10):
        return rng.choice([str(film), film, [film], [str(film), film], (film,), scratch / "films"])
    items = [_api_value(rng, scratch, depth + 1) for _ in range(rng.randrange(0, 4))]
    return rng.choice([items, tuple(items), {str(i): v for i, v in enumerate(items)}, iter(items), {"path": items[0] if items else None}])


def _api_seeds(folder: Path) -> list[_Seed]:
    """One seed per public function; an input is four random bytes that seed the values it is called with."""
    import inspect

    import pneumo

    (folder / "films").mkdir()
    for film in _films():
        shutil.copy(film, folder / "films" / film.name)
    logging.getLogger("pneumo").setLevel(logging.CRITICAL)

    def runner(name: str) -> Callable[[bytes, int], None]:
        function = getattr(pneumo, name)
        keywords = [p for p in inspect.signature(function).parameters.values() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

        def run(data: bytes, i: int) -> None:
            rng = random.Random(int.from_bytes(data[:8].ljust(8, b"\0"), "big"))
            scratch = Path(tempfile.mkdtemp(dir=folder))
            args = [_api_value(rng, folder)] if rng.random() < 0.9 else []
            kwargs = {p.name: _api_value(rng, folder) for p in keywords[1:] if rng.random() < 0.3}
            for key in ("out", "out_dir"):  # outputs go to a scratch folder of their own
                if any(p.name == key for p in keywords) and (key not in kwargs or rng.random() < 0.5):
                    kwargs[key] = scratch / "out"
            if name == "serve":
                kwargs["port"] = rng.choice([-1, 0.5, "8000", 70000, None])  # refused before listening
            if name == "train" and args and not isinstance(args[0], (str, Path)) and rng.random() < 0.5:
                kwargs["resume"] = True  # a resume with no run folder is refused before training
            try:
                function(*args, **kwargs)
            except TypeError as exc:
                # a keyword the function does not have, or a missing required one: Python's own message, the caller's mistake
                if "argument" not in str(exc) or "positional" not in str(exc) and "keyword" not in str(exc):
                    raise
                raise PneumoError(str(exc)) from None
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

        return run

    def replay(name: str) -> Callable[[Path], str]:
        return lambda path: (
            "import sys; sys.path.insert(0, 'benchmarks'); import fuzz_inputs as f, pathlib, tempfile; "
            f"s = f._api_seeds(pathlib.Path(tempfile.mkdtemp())); [x for x in s if x.name == {name!r}][0].run(open({str(path)!r}, 'rb').read(), 0)"
        )

    return [
        _Seed(
            f"pneumo.{name}",
            ".bin",
            b"\0" * 8,
            runner(name),
            mutator=lambda _d, r: r.getrandbits(64).to_bytes(8, "big"),
            reproduce=replay(f"pneumo.{name}"),
        )
        for name in _API_FUNCTIONS
    ]


def _save(out: Path, seed: _Seed, kind: str, data: bytes, detail: str) -> Path:
    """The input and a note on how to reproduce it; returns the input's path."""
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"{re.sub(r'[^A-Za-z0-9_-]+', '_', Path(seed.name).stem)}-{kind}"
    stem = f"{prefix}-{len(list(out.glob(f'{prefix}-*.txt')))}"
    path = out / f"{stem}{seed.suffix}"
    path.write_bytes(data)
    call = (
        seed.reproduce(path)
        if seed.reproduce is not None
        else f"from pneumo.data.layout import discover; discover({str(path)!r})"
        if seed.suffix == ".csv"
        else f"from pneumo.data.io import decode_image_with_info; decode_image_with_info(open({str(path)!r}, 'rb').read(), 'x{seed.suffix}')"
    )
    (out / f"{stem}.txt").write_text(f'seed {seed.name}, {kind}\n\npython -c "{call}"\n\n{detail}')
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0, help="stop after this long (default 300)")
    parser.add_argument("--iterations", type=int, default=0, help="stop after this many inputs instead")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the mutations")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"), help="folder for inputs that found a bug")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds an input may take before it counts as a hang (default 2; 15 for metadata, where a model is loaded and run)",
    )
    parser.add_argument(
        "--target",
        choices=("inputs", "configs", "metadata", "multipart", "api"),
        default="inputs",
        help="images and manifests (default), config files and --set overrides, model metadata (meta.json, the export JSON), upload bodies, or the Python API",
    )
    args = parser.parse_args()
    if args.budget is None:
        args.budget = 15.0 if args.target in ("metadata", "api") else 2.0

    rng = random.Random(args.seed)
    warnings.simplefilter("ignore")  # PIL and pydicom warn about damaged files; outcomes are what count here
    signal.signal(signal.SIGALRM, _on_alarm)
    bugs: dict[tuple[str, str], int] = {}  # (seed, kind of bug) -> inputs that showed it
    found: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        seeds = {"configs": _config_seeds, "metadata": _metadata_seeds, "multipart": lambda _f: _multipart_seeds(), "api": _api_seeds}.get(
            args.target, _seeds
        )(Path(folder))
        start, i = time.perf_counter(), 0
        while (i < args.iterations) if args.iterations else (time.perf_counter() - start < args.seconds):
            seed = seeds[i % len(seeds)]
            data = seed.mutator(seed.data, rng)
            if seed.repair is not None:
                data = seed.repair(data)
            began = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, args.budget)
            try:
                seed.run(data, i // len(seeds))
                outcome, detail = "ok", ""
            except PneumoError:
                outcome, detail = "PneumoError", ""
            except _Hang:
                outcome, detail = "hang", f"still running after {args.budget:g} s"
            except Exception as exc:  # the bugs this campaign looks for
                outcome, detail = "other", "".join(traceback.format_exception(exc))
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                kind = f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            elapsed = time.perf_counter() - began
            seed.outcomes[outcome] += 1
            seed.times.append(elapsed)
            if elapsed > seed.slowest[0]:
                seed.slowest = (elapsed, data)
            if outcome in ("other", "hang"):
                key = (seed.name, kind if outcome == "other" else "hang")
                bugs[key] = bugs.get(key, 0) + 1
                if bugs[key] <= _SAVED_PER_KIND:
                    found.append(f"{key[1]} on {seed.name}: {_save(args.out, seed, outcome, data, detail)}")
            i += 1
        seconds = time.perf_counter() - start

    rows = [
        (
            s.name,
            len(s.data),
            sum(s.outcomes.values()),
            s.outcomes["ok"],
            s.outcomes["PneumoError"],
            s.outcomes["other"],
            s.outcomes["hang"],
            round(1000 * statistics.median(s.times), 1),
            round(1000 * s.slowest[0]),
        )
        for s in seeds
        if s.times
    ]
    totals = [sum(r[k] for r in rows) for k in range(2, 7)]
    rows.append(("**all**", "", *totals, "", round(1000 * max(s.slowest[0] for s in seeds if s.times))))
    accepted = {"configs": "loaded", "metadata": "loaded and predicted", "multipart": "parsed", "api": "returned"}.get(
        args.target, "decoded / read"
    )
    refused = "ApiError (4xx)" if args.target == "multipart" else "PneumoError"
    columns = ["seed", "bytes", "inputs", accepted, refused, "other exception", f"hang (> {args.budget:g} s)", "median ms", "slowest ms"]
    what = {"configs": "the config reader", "metadata": "the model loaders", "multipart": "the upload reader", "api": "the Python API"}.get(
        args.target, "decoders and the manifest reader"
    )
    print(table(f"Fuzzing {what}: {i} mutated inputs in {seconds:.0f} s (seed {args.seed})", columns, rows))
    for (seed_name, kind), count in sorted(bugs.items()):
        print(f"- {count} inputs: {kind} on {seed_name}")
    for line in found[:10]:
        print(f"  saved: {line}")


if __name__ == "__main__":
    main()
