"""Fuzz the image decoders and the manifest reader with damaged real files.

    python benchmarks/fuzz_inputs.py [--target inputs|configs] [--seconds 300 | --iterations 20000] [--seed 0] [--out fuzz-findings] [--budget 2]

Seeds: a training JPEG, a sample PNG, every sample DICOM and a small manifest of real films.
Each input is a seed after 1-4 mutations (bytes flipped or overwritten with boundary values,
the file cut short, bytes inserted, a chunk of the file repeated elsewhere); half of them land
in the first 2 KB, where the headers a parser trusts are. The PNG is fed twice: as damaged,
and with its chunk checksums repaired after the damage, which gets past PIL's CRC check into
the decoder itself. Images go to `decode_image_with_info`,
alternating the command line's full decode and the service's reduced decode with its pixel
limit; manifests go to `discover`. Every input must decode to a sane image (or records) or
raise PneumoError. Anything else is a bug: the first few of each kind are saved under --out with
a reproducer. An input still running after --budget seconds is interrupted (SIGALRM, between
Python bytecodes) and saved as a hang; the slowest input of each seed is reported.

`--target configs` fuzzes the config reader instead (issue 17): the shipped YAML recipes
(src/pneumo/configs and configs/), damaged as bytes as above or with one to three values
swapped for hostile ones (NaN, infinities, huge and negative numbers, bools, lists, anchors
and aliases, deep nesting, repeated or misspelt keys, a non-UTF-8 byte), are fed to
`load_config` as files; the hostile values also go in as `--set key=value` overrides. Each
must give a Config that loads again unchanged from its own dict (what a checkpoint stores)
or raise PneumoError.
"""
from __future__ import annotations

import argparse
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
from pneumo.data.io import ImageInfo, decode_image_with_info
from pneumo.data.layout import discover
from pneumo.errors import PneumoError

__all__ = ["main", "mutate", "mutate_config", "repair_png_crcs"]

_HEADER_BYTES = 2048
_BOUNDARY_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
_SERVICE_MAX_PIXELS = 50_000_000  # pneumo.serve.app.DEFAULT_MAX_PIXELS
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
        assert "\n" not in message and len(message) < 1000, f"error message of {len(message)} characters over {message.count(chr(10)) + 1} lines"
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
    keys = " ".join([*(k for k in config_to_dict(Config()) if k != "augment"), *(f"augment.{k}" for k in config_to_dict(Config())["augment"])])
    return seeds + [_Seed("overrides (set key=value)", ".override", keys.encode(), run_override, mutator=_mutate_override, reproduce=replay_override)]


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
    (out / f"{stem}.txt").write_text(f"seed {seed.name}, {kind}\n\npython -c \"{call}\"\n\n{detail}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300.0, help="stop after this long (default 300)")
    parser.add_argument("--iterations", type=int, default=0, help="stop after this many inputs instead")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the mutations")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"), help="folder for inputs that found a bug")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds an input may take before it counts as a hang")
    parser.add_argument("--target", choices=("inputs", "configs"), default="inputs", help="images and manifests (default), or config files and --set overrides")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    warnings.simplefilter("ignore")  # PIL and pydicom warn about damaged files; outcomes are what count here
    signal.signal(signal.SIGALRM, _on_alarm)
    bugs: dict[tuple[str, str], int] = {}  # (seed, kind of bug) -> inputs that showed it
    found: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        seeds = _config_seeds(Path(folder)) if args.target == "configs" else _seeds(Path(folder))
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
            s.name, len(s.data), sum(s.outcomes.values()), s.outcomes["ok"], s.outcomes["PneumoError"], s.outcomes["other"],
            s.outcomes["hang"], round(1000 * statistics.median(s.times), 1), round(1000 * s.slowest[0]),
        )
        for s in seeds if s.times
    ]
    totals = [sum(r[k] for r in rows) for k in range(2, 7)]
    rows.append(("**all**", "", *totals, "", round(1000 * max(s.slowest[0] for s in seeds if s.times))))
    columns = ["seed", "bytes", "inputs", "loaded" if args.target == "configs" else "decoded / read", "PneumoError", "other exception", f"hang (> {args.budget:g} s)", "median ms", "slowest ms"]
    what = "the config reader" if args.target == "configs" else "decoders and the manifest reader"
    print(table(f"Fuzzing {what}: {i} mutated inputs in {seconds:.0f} s (seed {args.seed})", columns, rows))
    for (seed_name, kind), count in sorted(bugs.items()):
        print(f"- {count} inputs: {kind} on {seed_name}")
    for line in found[:10]:
        print(f"  saved: {line}")


if __name__ == "__main__":
    main()
