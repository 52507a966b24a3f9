"""Input checks: how often each check of a checkpoint fires, on children's films and on what it must not judge.

    python benchmarks/bench_input_checks.py [--model RUN_DIR] [--synthetic 40]

The checkpoint's own input check is used as it was fitted (by `pneumo train` or `pneumo
ensemble`: the distance on its training films, the probe against the outlier films with its
limit on validation). Flag rates are measured on its training films, its held-out validation
films (drawn again from its config), the adult films in ood/adult_other_hospitals (the probe
was fitted on them: the honest rate is the source-held-out one in the checkpoint's
val_report.json, printed above the table), every file in samples/, and synthetic inputs written
to files and read back as any user file would be.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from common import DATA, table
from PIL import Image, ImageDraw
from sklearn.datasets import load_sample_images

from pneumo.config import Config, config_from_dict
from pneumo.data.cache import cached_images
from pneumo.data.io import read_image_with_info
from pneumo.data.pixels import ImageInfo
from pneumo.data.preprocess import resize_image
from pneumo.inference.checks import check_inputs, rule_warnings
from pneumo.inference.predict import bundled_model_dir, load_model
from pneumo.models.checkpoint import resolve_checkpoint
from pneumo.training.data import split_training_records
from pneumo.utils.walk import image_files


def _files_read_back(arrays: list[np.ndarray], folder: Path, name: str, fmt: str, size: int) -> tuple[np.ndarray, list[ImageInfo]]:
    """Write arrays as image files and read them back through the same decoder users' files take."""
    images, infos = [], []
    for i, array in enumerate(arrays):
        path = folder / f"{name}-{i}.{fmt.lower()}"
        Image.fromarray(array).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        pixels, info = read_image_with_info(path, size_hint=size)
        images.append(resize_image(pixels, size))
        infos.append(info)
    return np.stack(images), infos


def _photo_like(rng: np.random.Generator) -> np.ndarray:
    """Smooth random colour fields with grain, 480x640: the statistics of a photograph, not its content."""
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((640, 480), Image.Resampling.BICUBIC), dtype=np.float64)
    return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)


def _document(rng: np.random.Generator) -> np.ndarray:
    """A white letter-size page (850x1100) with a title and lines of black text."""
    page = Image.new("L", (850, 1100), 255)
    draw = ImageDraw.Draw(page)
    draw.text((80, 60), "Discharge summary", fill=0, font_size=36)
    letters = "abcdefghijklmnopqrstuvwxyz"
    for y in range(140, 1020, 26):
        words = ["".join(rng.choice(list(letters), rng.integers(2, 10))) for _ in range(rng.integers(6, 12))]
        draw.text((80, y), " ".join(words), fill=0, font_size=18)
    return np.asarray(page)


def _tinted(xray: np.ndarray) -> np.ndarray:
    """A film with a mild sepia cast, as a scanner or a phone might give: should pass every check."""
    return np.clip(xray[..., None].astype(np.float64) * np.array([1.0, 0.95, 0.85]), 0, 255).astype(np.uint8)


def _short(warning: str) -> str:
    return warning.rsplit(":", 1)[0]


def _split_config(model: Any) -> Config:
    """The config that drew the model's split: its own, its first member's (an ensemble's members share
    one split), or, when that member's run folder is not here, the default recipe's split (split_seed 0)."""
    if model.meta.config and "members" not in model.meta.config:
        return config_from_dict({**model.meta.config, "data": str(DATA)})
    first = Path(model.meta.members[0]["source"]) if model.meta.members else None
    if first is not None and first.exists():
        return config_from_dict({**load_model(first).meta.config, "data": str(DATA)})
    return config_from_dict({"data": str(DATA), "split_seed": 0})


def _report_line(folder: Path) -> str:
    """The check's own measurements, from the report written beside the model (run folder or model folder)."""
    for candidate in (folder / "val_report.json", folder.parent / "val_report.json"):
        if candidate.is_file():
            check = json.loads(candidate.read_text()).get("input_check") or {}
            if "val_false_alarm_rate" in check:
                lo, hi = check["val_false_alarm_ci95"]
                clo, chi = check["outlier_catch_ci95"]
                return (
                    f"measured while fitting: {check['val_false_alarm_rate']:.1%} of {check['n_val']} validation children flagged "
                    f"(95% CI {lo:.1%}-{hi:.1%}); {check['outlier_catch_rate']:.1%} of {check['n_outliers']} outlier films caught from "
                    f"sources the probe never saw (95% CI {clo:.1%}-{chi:.1%})"
                )
    return "no measurements recorded beside this model (its val_report.json has no input_check)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="run or checkpoint folder (default: the bundled model)")
    parser.add_argument("--synthetic", type=int, default=40, help="images of each synthetic kind")
    args = parser.parse_args()

    folder = resolve_checkpoint(args.model or bundled_model_dir())
    model = load_model(folder).with_feature_check()
    check = model.feature_check
    if check is None:
        raise SystemExit(f"{folder} has no input check (features.safetensors); train or assemble it with pneumo")
    size = model.image_size
    config = _split_config(model)
    train, val = split_training_records(config)
    images, fingerprint = cached_images(train + val, size, progress=False)
    print(
        f"{len(train)} train / {len(val)} val images; same images as the checkpoint's training: {fingerprint == model.meta.data_fingerprint}"
    )
    print(_report_line(folder))
    x_train, x_val = images[: len(train)], images[len(train) :]

    def infos_of(recs: list) -> list[ImageInfo]:
        return [read_image_with_info(r.path, size_hint=size)[1] for r in recs]

    adult_files = image_files(DATA / "ood" / "adult_other_hospitals")
    adult = [read_image_with_info(p, size_hint=size) for p in adult_files]
    sets: list[tuple[str, np.ndarray, list[ImageInfo]]] = [
        ("training part of the split", x_train, infos_of(train)),
        ("validation part (held out)", x_val, infos_of(val)),
        (
            "ood/adult_other_hospitals (the probe was fitted on them)",
            np.stack([resize_image(px, size) for px, _ in adult]),
            [i for _, i in adult],
        ),
    ]
    rng = np.random.default_rng(0)
    n = min(args.synthetic, len(x_val))
    picks = x_val[rng.choice(len(x_val), n, replace=False)]
    photos = [np.asarray(Image.fromarray(p).convert("RGB")) for p in load_sample_images().images]
    synthetic: list[tuple[str, str, Callable[[], list[np.ndarray]]]] = [
        ("colour photo-like random fields (JPEG)", "JPEG", lambda: [_photo_like(rng) for _ in range(n)]),
        ("colour photographs (sklearn china, flower; JPEG)", "JPEG", lambda: photos),
        ("document page, black text on white (PNG)", "PNG", lambda: [_document(rng) for _ in range(n)]),
        ("inverted X-ray, 255 - image (PNG)", "PNG", lambda: list(255 - picks)),
        ("X-ray rotated 90° (PNG)", "PNG", lambda: list(np.rot90(picks, axes=(1, 2)))),
        ("uniform noise (PNG)", "PNG", lambda: list(rng.integers(0, 256, (n, size, size), dtype=np.uint8))),
        ("control: sepia-tinted X-ray (JPEG)", "JPEG", lambda: [_tinted(x) for x in picks]),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, fmt, make) in enumerate(synthetic):
            sets.append((name, *_files_read_back(make(), Path(tmp), f"s{i}", fmt, size)))

    rows = []
    for name, x, infos in sets:
        scores = model.probabilities_and_scores(x)[1]
        by_rule = np.array([bool(rule_warnings(info)) for info in infos])
        by_distance, by_probe = scores[:, 0] > check.distance_limit, scores[:, 1] > check.probe_limit
        rows.append(
            (
                name,
                len(x),
                f"{by_rule.mean():.1%}",
                f"{by_distance.mean():.1%}",
                f"{by_probe.mean():.1%}",
                f"{(by_rule | check.flags(scores)).mean():.1%}",
            )
        )
    print(
        table(
            f"Input checks on {model.meta.architecture}: share of films flagged, so no verdict (distance limit {check.distance_limit:.1f}, "
            f"probe limit {check.probe_limit:.2f})",
            ["films", "n", "rule checks", "feature distance", "probe", "any: no verdict"],
            rows,
        )
    )

    files = sorted(p for p in (DATA / "samples").rglob("*") if p.is_file())
    decoded = [read_image_with_info(p, size_hint=size) for p in files]
    x = np.stack([resize_image(pixels, size) for pixels, _ in decoded])
    infos = [info for _, info in decoded]
    probs, scores = model.probabilities_and_scores(x)
    warnings = check_inputs(infos, scores, check)
    rows = [
        (
            p.relative_to(DATA / "samples").as_posix(),
            " ".join(filter(None, (info.format, info.modality, info.body_part, info.view_position, f"{info.width}x{info.height}"))),
            round(float(1 - prob[0]), 3),
            round(float(d[0]), 1),
            round(float(d[1]), 2),
            "; ".join(map(_short, w)) or "none",
        )
        for p, info, prob, d, w in zip(files, infos, probs, scores, warnings)
    ]
    print(
        table(
            "Input checks per file in samples/ (adult films from other hospitals, one non-chest DICOM)",
            ["file", "what the file says", "P(pneumonia)", "distance", "probe", "checks fired"],
            rows,
        )
    )

    batch = x_val[:256]
    model.class_probabilities(batch[:8])  # warm-up
    costs = []
    for name, run in (
        ("class_probabilities", lambda: model.class_probabilities(batch)),
        ("probabilities_and_scores", lambda: model.probabilities_and_scores(batch)),
    ):
        start = time.perf_counter()
        for _ in range(3):
            run()
        costs.append((name, len(batch), round(len(batch) * 3 / (time.perf_counter() - start), 1)))
    print(table("Cost of the input check (CPU, one forward pass either way)", ["call", "batch", "images/s"], costs))


if __name__ == "__main__":
    main()
