"""How the input check's probe trades false alarms on children for adult films caught, by strength and limit.

    python benchmarks/probe_sweep.py [--model DIR]

For the bundled model (or DIR, trained with split_seed 0), one pass over its training and
validation films and the adult films in ood/adult_other_hospitals, then for each inverse L2
strength C and limit quantile q: the share of validation children flagged (limit fitted on one
half, counted on the other), the share of training children flagged, and the share of adult
films caught by a probe fitted without their source (5 folds). This is how PROBE_C and the
probe quantile in pneumo.inference.features were chosen.
"""
from __future__ import annotations

import argparse

import numpy as np
from common import DATA, table

from pneumo.config import config_from_dict
from pneumo.data.cache import cached_images
from pneumo.inference import features as F
from pneumo.inference.checks import mahalanobis_distance
from pneumo.inference.predict import bundled_model_dir, load_model
from pneumo.training.data import outlier_films, split_training_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    model = load_model(args.model or bundled_model_dir())
    config = config_from_dict({"data": str(DATA), "split_seed": 0, "image_size": model.image_size})
    train, val = split_training_records(config)
    x_train, _ = cached_images(train, model.image_size, progress=False)
    x_val, _ = cached_images(val, model.image_size, progress=False)
    outliers = outlier_films(config, False, print)
    tr, va, ad = (F.feature_rows(model, x)[1] for x in (x_train, x_val, outliers.images))
    w = F.feature_width(model.net)
    mean, precision = F._gaussian(tr[:, :w])
    limit = np.quantile(F._out_of_fold_distances(tr[:, :w], 5), 0.995)
    far = {k: mahalanobis_distance(x[:, :w], mean, precision) > limit for k, x in (("tr", tr), ("va", va), ("ad", ad))}
    half = np.random.default_rng(0).permutation(len(va)) < len(va) // 2
    folds = F._source_folds(outliers.sources, 5, 0)
    rows = []
    for c in (3e-4, 1e-3, 3e-3, 1e-2):
        F.PROBE_C = c
        probe = F._probe(tr[:, w:], ad[:, w:])
        s_va, s_tr = F._probe_scores(va[:, w:], *probe), F._probe_scores(tr[:, w:], *probe)
        held_probes = [F._probe(tr[:, w:], ad[~h, w:]) for h in folds]
        for q in (0.99, 0.993, 0.995):
            false_alarms = sum(int((far["va"][~h] | (s_va[~h] > np.quantile(s_va[h], q))).sum()) for h in (half, ~half))
            caught = sum(
                int((far["ad"][h] | (F._probe_scores(ad[h, w:], *p) > np.quantile(F._probe_scores(va[:, w:], *p), q))).sum())
                for h, p in zip(folds, held_probes)
            )
            rows.append((f"{c:g}", q, f"{false_alarms / len(va):.2%}", f"{np.mean(far['tr'] | (s_tr > np.quantile(s_va, q))):.2%}", f"{caught / len(ad):.1%}"))
    print(table(f"Probe strength and limit ({len(va)} validation children, {len(tr)} training children, {len(ad)} adult films from "
                f"{len(set(outliers.sources))} sources)", ["C", "limit quantile", "validation flagged", "training flagged",
                "adult caught (unseen sources)"], rows))


if __name__ == "__main__":
    main()
