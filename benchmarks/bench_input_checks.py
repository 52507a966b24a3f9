"""Input checks: fit a checkpoint's feature statistics, then measure how often each check fires.

    python benchmarks/bench_input_checks.py [--model RUN_DIR] [--save] [--synthetic 40]

The statistics are fitted on the training part of the checkpoint's own validation split
(seed, fraction and method from its config; the bundled model: seed 0, 20%, patient), so the
validation images are ones the model never saw. With --save they are written beside the
weights as features.safetensors. Flag rates are then measured on those training images, the
held-out validation images, every file in samples/ (adult films and a non-chest DICOM), and
synthetic inputs written to files and read back as any user file would be.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
from common import DATA, table
from PIL import Image, ImageDraw
from sklearn.datasets import load_sample_images

from pneumo.data.cache import cached_images
from pneumo.data.io import ImageInfo, read_image_with_info
from pneumo.data.layout import discover
from pneumo.data.preprocess import resize_image
from pneumo.data.split import split_records
from pneumo.inference.checks import check_inputs, rule_warnings
from pneumo.inference.features import feature_distance, fit_feature_stats, out_of_distribution, probabilities_and_distance, save_feature_stats
from pneumo.inference.predict import bundled_model_dir, load_model
from pneumo.models.checkpoint import resolve_checkpoint


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="run or checkpoint folder (default: the bundled model)")
    parser.add_argument("--save", action="store_true", help="write features.safetensors into the checkpoint folder")
    parser.add_argument("--quantile", type=float, default=0.995)
    parser.add_argument("--synthetic", type=int, default=40, help="images of each synthetic kind")
    args = parser.parse_args()

    folder = resolve_checkpoint(args.model or bundled_model_dir())
    model = load_model(folder)
    size, cfg = model.image_size, model.meta.config
    records = discover(DATA / "chest_xray").split(cfg.get("train_split", "train"))
    train, val = split_records(records, cfg.get("val_fraction", 0.2), cfg.get("seed", 0), cfg.get("split", "patient"), model.task)
    images, fingerprint = cached_images(train + val, size, progress=False)
    same = fingerprint == model.meta.data_fingerprint
    print(f"{len(train)} train / {len(val)} val images; same images and split as the checkpoint's training: {same}")
    x_train, x_val = images[: len(train)], images[len(train) :]

    start = time.perf_counter()
    stats = fit_feature_stats(model, x_train, args.quantile)
    print(f"fitted {stats['mean'].numel()} features in {time.perf_counter() - start:.0f} s; threshold {float(stats['threshold']):.2f}")
    if args.save:
        path = save_feature_stats(stats, folder)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")

    def infos_of(recs: list) -> list[ImageInfo]:
        return [read_image_with_info(r.path, size_hint=size)[1] for r in recs]

    sets: list[tuple[str, np.ndarray, list[ImageInfo]]] = [
        ("training part of the split (fitted)", x_train, infos_of(train)),
        ("validation part (held out)", x_val, infos_of(val)),
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
        distances = feature_distance(model, stats, x)
        by_rule = np.array([bool(rule_warnings(info)) for info in infos])
        by_feature = out_of_distribution(distances, stats)
        rows.append((name, len(x), f"{by_rule.mean():.1%}", f"{by_feature.mean():.1%}", f"{(by_rule | by_feature).mean():.1%}", round(float(np.median(distances)), 1)))
    print(table(
        f"Input checks on {model.meta.architecture}: share of images flagged (feature threshold {float(stats['threshold']):.1f}"
        f" = {args.quantile:.1%} quantile of out-of-fold training distances)",
        ["images", "n", "rule checks", "feature distance", "either", "median distance"],
        rows,
    ))

    files = sorted(p for p in (DATA / "samples").rglob("*") if p.is_file())
    decoded = [read_image_with_info(p, size_hint=size) for p in files]
    x = np.stack([resize_image(pixels, size) for pixels, _ in decoded])
    infos = [info for _, info in decoded]
    probs, distances = probabilities_and_distance(model, stats, x)
    warnings = check_inputs(infos, distances, float(stats["threshold"]))
    rows = [
        (
            p.relative_to(DATA / "samples").as_posix(),
            " ".join(filter(None, (info.format, info.modality, info.body_part, info.view_position, f"{info.width}x{info.height}"))),
            round(float(1 - prob[0]), 3),
            round(float(d), 1),
            "; ".join(map(_short, w)) or "none",
        )
        for p, info, prob, d, w in zip(files, infos, probs, distances, warnings)
    ]
    print(table("Input checks per file in samples/ (adult films from other hospitals, one non-chest DICOM)",
                ["file", "what the file says", "P(pneumonia)", "distance", "checks fired"], rows))

    batch = x_val[:256]
    model.class_probabilities(batch[:8])  # warm-up
    costs = []
    for name, run in (("class_probabilities", lambda: model.class_probabilities(batch)),
                      ("probabilities_and_distance", lambda: probabilities_and_distance(model, stats, batch))):
        start = time.perf_counter()
        for _ in range(3):
            run()
        costs.append((name, len(batch), round(len(batch) * 3 / (time.perf_counter() - start), 1)))
    print(table("Cost of the feature check (CPU, one forward pass either way)", ["call", "batch", "images/s"], costs))


if __name__ == "__main__":
    main()
