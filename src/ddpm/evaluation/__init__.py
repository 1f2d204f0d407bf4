"""Evaluation of trained runs: features (Inception, domain classifier), FID/KID/IS and classifier score, reports.

features.py    Inception pool features / probabilities, preprocessing, batched extraction
refcache.py    cached features of the real reference images
metrics.py     FID, KID, Inception Score / classifier score, per-class accuracy (torchmetrics, float64)
classifier.py  the small domain classifier (train, save, load) behind per-class accuracy and classifier score
evaluate.py    `ddpm eval` as a library call: sample, extract, measure, time
report.py      eval.json, samples.png, report.md
"""
