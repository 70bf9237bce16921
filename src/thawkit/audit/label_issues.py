"""Likely label errors: confident learning (cleanlab) on a cross-validated linear probe.

Every image gets class probabilities from a logistic regression on the frozen features that did
not see it (out-of-fold, stratified K-fold over all splits together), and cleanlab's
`find_label_issues` flags the images whose given label disagrees confidently with them (by its
default rule, or as the lowest self-confidences), ranked by self-confidence (the probability of
the given label), lowest first. What this assumes is in docs/audit.md: the probe's probabilities
are good enough, and label noise depends on the true class only (not on the image), which is
confident learning's assumption.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
from cleanlab.filter import find_label_issues
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from thawkit.audit.findings import Entry

log = logging.getLogger(__name__)

# Inverse L2 strength of the probe on unit-length (centred) features. Measured with
# benchmarks/audit.py on rsscn7 and dtd10 (docs/audit.md): standardised features at C = 0.1 found
# as many flipped labels but took 3-4x longer to fit.
PROBE_C = 1.0


def out_of_fold_probabilities(
    features: np.ndarray, labels: np.ndarray, num_classes: int, folds: int, seed: int
) -> np.ndarray:
    """(N, num_classes) probabilities, each row from a probe fitted without that image.

    The folds are at most the smallest class's count (at least 2); a class absent from a
    fold's training part gets probability 0 there.
    """
    counts = np.bincount(labels, minlength=num_classes)
    k = max(2, min(folds, int(counts[counts > 0].min())))
    probe = LogisticRegression(C=PROBE_C, max_iter=2000)
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Tiny classes: sklearn warns that a class has fewer members than folds; said once here.
        warnings.simplefilter("ignore", UserWarning)
        probs = cross_val_predict(probe, features, labels, cv=cv, method="predict_proba")
    present = np.flatnonzero(counts)
    full = np.zeros((len(labels), num_classes))
    full[:, present] = probs
    return full


def label_issues(
    features: np.ndarray,
    label_ids: np.ndarray,
    paths: Sequence[str],
    splits: Sequence[str],
    class_names: Sequence[str],
    folds: int = 5,
    seed: int = 0,
) -> tuple[list[Entry], np.ndarray]:
    """The likely label errors, most likely first, and the out-of-fold probabilities.

    `features`: one row per image, unit length (the audit's centred, normalised features).
    """
    if len(set(label_ids.tolist())) < 2 or len(label_ids) < 4:
        return [], np.zeros((len(label_ids), len(class_names)))
    probs = out_of_fold_probabilities(features, label_ids, len(class_names), folds, seed)
    present = np.flatnonzero(np.bincount(label_ids, minlength=len(class_names)))
    # cleanlab wants labels 0..K-1 of the classes present, and rows that sum to 1.
    remap = {int(c): i for i, c in enumerate(present)}
    sub = probs[:, present]
    sub = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1e-12)
    given = np.array([remap[int(y)] for y in label_ids])
    # Listed: what either of confident learning's two usual rules flags, cleanlab's default
    # (prune by the estimated noise rate of each pair of classes) or as many images of lowest
    # self-confidence as the confident joint estimates are mislabelled; ranked by
    # self-confidence. Either rule alone missed flips on some shared photo set (docs/audit.md).
    flagged = find_label_issues(given, sub) | find_label_issues(
        given, sub, filter_by="low_self_confidence"
    )
    quality = sub[np.arange(len(given)), given]
    ranked = sorted(np.flatnonzero(flagged), key=lambda i: (quality[i], i))
    found = []
    for i in ranked:
        y, best = int(label_ids[i]), int(probs[i].argmax())
        found.append(
            {
                "files": [{"path": paths[i], "split": splits[i], "label": class_names[y]}],
                "score": round(float(probs[i, y]), 4),
                "given": class_names[y],
                "suggested": class_names[best],
                "suggested_p": round(float(probs[i, best]), 4),
                "action": f"relabel as {class_names[best]} if it is one (or remove it)",
                "exclude": [paths[i]],
            }
        )
    return found, probs
