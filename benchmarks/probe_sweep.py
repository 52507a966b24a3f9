"""How the input check's probe trades false alarms on children, plain and shifted, for adult films caught.

    python benchmarks/probe_sweep.py [--model DIR]

For the bundled model (or DIR, trained with split_seed 0): one pass over a sample of its training
films (as `pneumo train` fits the check on: `_check_sample`), their augmented and shifted copies
(`inlier_views`), its validation films and their 14 shifted copies, and the adult films in
ood/adult_other_hospitals. Then for each inverse L2 strength C, each inlier side (the training
films alone, or with their copies) and each limit rule: the share of validation children flagged
(limit fitted on one half, counted on the other), the mean and the largest share of a shifted copy
flagged, and the share of adult films caught by a probe fitted without their source (5 folds).
The distance limit is the one `fit_feature_check` draws (at most 1% of every copy beyond it).
This is how PROBE_C, the probe's inlier side and its limit in pneumo.inference.fitting were chosen.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
from common import DATA, table

from pneumo.config import config_from_dict, config_to_dict, load_config
from pneumo.data.cache import cached_images
from pneumo.evaluation.robustness import SHIFTS, apply_shift
from pneumo.inference import features
from pneumo.inference import fitting as F
from pneumo.inference.checks import mahalanobis_distance
from pneumo.inference.predict import bundled_model_dir, load_model
from pneumo.training.data import outlier_films, split_training_records
from pneumo.training.report import _check_sample, inlier_views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    model = load_model(args.model or bundled_model_dir())
    recipe = {k: v for k, v in model.meta.config.items() if k != "members"} or config_to_dict(load_config("default"))
    config = config_from_dict({**recipe, "data": str(DATA)})
    train, val = split_training_records(config)
    x_train, _ = cached_images(train, model.image_size, progress=False)
    x_val, _ = cached_images(val, model.image_size, progress=False)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the skipped outlier films, as a line each
    outliers = outlier_films(config, False)
    w = features.feature_width(model.net)
    sample = np.asarray(_check_sample(x_train, w))
    tr = features.feature_rows(model, sample)[1]
    views = features.feature_rows(model, inlier_views(sample, config.augment))[1]
    va, ad = features.feature_rows(model, x_val)[1], features.feature_rows(model, outliers.images)[1]
    shifted = {name: features.feature_rows(model, apply_shift(x_val, name))[1] for name in SHIFTS}
    mean, precision = F._gaussian(tr[:, :w])
    limit = F._distance_limit(tr[:, :w], [va[:, :w], *(s[:, :w] for s in shifted.values())], mean, precision, 0.995, 5)
    far = {k: mahalanobis_distance(x[:, :w], mean, precision) > limit for k, x in (("va", va), ("ad", ad))} | {
        name: mahalanobis_distance(s[:, :w], mean, precision) > limit for name, s in shifted.items()
    }
    half = np.random.default_rng(0).permutation(len(va)) < len(va) // 2
    folds = F._source_folds(outliers.sources, 5, 0)
    rows = []
    for side, inliers in (("training films", tr[:, w:]), ("+ augmented and shifted copies", np.vstack([tr[:, w:], views[:, w:]]))):
        for c in (3e-3, 1e-2, 3e-2, 1e-1):
            probes = [F._probe(inliers, ad[:, w:], c)] + [F._probe(inliers, ad[~h, w:], c) for h in folds]

            def cut(p: tuple, rule: str, pool: np.ndarray | None = None) -> float:
                scores = F._probe_scores(va[:, w:] if pool is None else pool, *p)
                if rule == "0.995 of validation":
                    return float(np.quantile(scores, 0.995))
                return max(float(np.quantile(F._probe_scores(s[:, w:], *p), 0.99)) for s in [va, *shifted.values()])

            for rule in ("0.995 of validation", "0.99 of every copy"):
                s_va = F._probe_scores(va[:, w:], *probes[0])
                if rule == "0.995 of validation":
                    alarms = sum(int((far["va"][~h] | (s_va[~h] > np.quantile(s_va[h], 0.995))).sum()) for h in (half, ~half)) / len(va)
                else:
                    alarms = float((far["va"] | (s_va > cut(probes[0], rule))).mean())
                whole = cut(probes[0], rule)
                copies = [float((far[name] | (F._probe_scores(s[:, w:], *probes[0]) > whole)).mean()) for name, s in shifted.items()]
                caught = sum(int((far["ad"][h] | (F._probe_scores(ad[h, w:], *p) > cut(p, rule))).sum()) for h, p in zip(folds, probes[1:]))
                rows.append(
                    (side, f"{c:g}", rule, f"{alarms:.2%}", f"{np.mean(copies):.2%}", f"{max(copies):.2%}", f"{caught / len(ad):.1%}")
                )
    print(
        table(
            f"Probe strength, inlier side and limit ({len(va)} validation children and 14 shifted copies, {len(tr)} training films, "
            f"{len(ad)} adult films from {len(set(outliers.sources))} sources; distance limit {limit:.1f})",
            [
                "probe inliers",
                "C",
                "limit",
                "validation flagged",
                "shifted copies flagged (mean)",
                "(largest)",
                "adult caught (unseen sources)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
