"""Fuzz the image decoders and the manifest reader with damaged real files.

    python benchmarks/fuzz_inputs.py [--seconds 300 | --iterations 20000] [--seed 0] [--out fuzz-findings] [--budget 2]

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

from pneumo.data.io import ImageInfo, decode_image_with_info
from pneumo.data.layout import discover
from pneumo.errors import PneumoError

__all__ = ["mutate", "repair_png_crcs", "main"]

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


def _save(out: Path, seed: _Seed, kind: str, data: bytes, detail: str) -> Path:
    """The input and a note on how to reproduce it; returns the input's path."""
    out.mkdir(parents=True, exist_ok=True)
    prefix = f"{re.sub(r'[^A-Za-z0-9_-]+', '_', Path(seed.name).stem)}-{kind}"
    stem = f"{prefix}-{len(list(out.glob(f'{prefix}-*.txt')))}"
    path = out / f"{stem}{seed.suffix}"
    path.write_bytes(data)
    call = (
        f"from pneumo.data.layout import discover; discover({str(path)!r})"
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
    args = parser.parse_args()

    rng = random.Random(args.seed)
    warnings.simplefilter("ignore")  # PIL and pydicom warn about damaged files; outcomes are what count here
    signal.signal(signal.SIGALRM, _on_alarm)
    bugs: dict[tuple[str, str], int] = {}  # (seed, kind of bug) -> inputs that showed it
    found: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        seeds = _seeds(Path(folder))
        start, i = time.perf_counter(), 0
        while (i < args.iterations) if args.iterations else (time.perf_counter() - start < args.seconds):
            seed = seeds[i % len(seeds)]
            data = mutate(seed.data, rng)
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
    columns = ["seed", "bytes", "inputs", "decoded / read", "PneumoError", "other exception", f"hang (> {args.budget:g} s)", "median ms", "slowest ms"]
    print(table(f"Fuzzing decoders and the manifest reader: {i} mutated inputs in {seconds:.0f} s (seed {args.seed})", columns, rows))
    for (seed_name, kind), count in sorted(bugs.items()):
        print(f"- {count} inputs: {kind} on {seed_name}")
    for line in found[:10]:
        print(f"  saved: {line}")


if __name__ == "__main__":
    main()
