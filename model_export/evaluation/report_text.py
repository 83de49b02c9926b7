"""The prose of ``reports/evaluation.md``: how the comparison is kept fair, the models, the
metrics, what was tried, and the plots' captions."""

from __future__ import annotations

FAIRNESS = """\
- Same rows and split for every model: training days {train}, validation day {val} (early
  stopping, and the few constants fitted after training), test day {test} (scored once, for
  this report and the manifests; no decision was taken on it).
- Same inputs: the feature schema fitted on the training days (ids seen < 5 times -> OOV,
  log duration with a missing indicator, user and video table columns), encoded by the
  service's own encoder; the exported graphs read exactly those tensors.
- Same network: 16-dim embeddings and EGMN's MLP backbone (256, 128, 64, BatchNorm, ReLU,
  dropout 0.2) for every model; only the head and the loss differ. Labels in units of 10 s.
- Same optimisation budget: Adam, lr 2e-3, batch 2048, at most 12 epochs, early stopping on
  the validation value of each model's own loss (patience 2, best epoch restored), embedding
  L2 1e-6; seed 0 for the shipped models, seeds 1 and 2 for the spread beside each figure
  (`seeds.json`), every other setting unchanged.
- Same tuning budget: none on the test day for anyone. EGMN: the paper's settings plus four
  configurations on the validation day (`tuning.md`); each baseline got one configuration, the
  paper's default where the paper gives one (bucket count, split points, loss weights), set
  before any test figure was seen. Post-hoc fitting on the validation day: EGMN's calibration
  (its report) and VR's spread; the other baselines are served as trained.
"""

MODELS_TEXT = """\
- **egmn**: the served model (`models/egmn/2`): point mass at 0 + exponential + 10 truncated
  Gaussians, loss NLL + 0.1 sum(w log w) + 0.5 L1 (the paper's with a halved L1 weight, chosen
  on the validation day), calibrated on the validation day. Point: the paper's
  `w0/lambda + sum w_k mu_k`. `models/egmn/1` (the paper's weights) stays reachable by version.
- **vr** (value regression): MSE on the label; served as a `normal` censored at 0 whose one
  spread is the maximum-likelihood value on the validation day. Point: `max(loc, 0)`.
- **wlr** (weighted logistic regression): each impression a positive weighted by its watch
  time and a unit-weight negative; odds = expected watch time; served as an `exponential`
  with rate 1/odds. Point: the odds.
- **ziln** (zero-inflated lognormal): BCE on `y > 0` + lognormal NLL of the positive labels;
  served as `ziln`. Point: the mean.
- **softmax** (bucket classification): cross-entropy over 20 buckets with edges
  `[0, geomspace(0.5 s, 800 s, 20)]` (each bucket 1.47x wider than the last; the top one open);
  served as `histogram`. Point: the bucket-midpoint mean.
- **cread**: one classifier `P(T > t_m)` per split point, the points at training-label
  quantiles `F^-1(gamma(m/31))`, `gamma(x) = (1 - e^(-2x)) / (1 - e^(-2))`, m = 1..30 (points at
  0 s and closer than 0.1 s dropped); loss = sum of BCE + monotonicity penalty + Huber
  (delta 10 s) on the restored mean; served as `survival` (running minimum, plus a 0.1%
  floor so that no segment holds zero mass). Point: the restored mean.
- **d2q** (duration-deconfounded quantile): 30 equal-frequency duration groups of the
  training days (+ one for unknown durations); target = the label's mid-rank level among its
  group's training labels; 19 heads predict its quantiles at levels 0.05..0.95 (pinball
  loss; rising by construction: cumulated softplus increments of the logits), each mapped
  back through the group's training quantile function (tabulated at 1,001 levels, in the
  graph); served as `quantile`. Point: the group's quantile at the predicted median level.
- **huber**, **huberpp**, **am** (point regressors: Huber, relative-error Huber, asymmetric
  squared loss on log(1 + y)), each served with a spread fitted on the validation day;
  **distill_softmax** (softmax buckets on mean-preserving soft labels) and **tpm** (a tree of
  classifiers over 16 quantile leaves), both `histogram`; **d2co** (duration-debiased,
  noise-corrected interest mapped back to seconds, `normal`); **cwm** (the counterfactual
  watch model's exit time, `survival`); **lda** (label-distribution anchors, `histogram` with
  the regressor's point); **gr** (generative regression: three tokens over 256 quantile
  leaves decoded by a 2-layer Transformer, served as the 64-bucket histogram of its first two
  steps with the windowed soft-argmax as the point). What each implements and substitutes:
  `methods/<name>.md`.
"""

METRICS_TEXT = """\
- MAE / XAUC point: of each model's own point prediction (`point_s` in the API). XAUC: share
  of test pairs with different labels that the prediction orders correctly (ties 1/2).
- MAE median: of the served distribution's median.
- **NLL y>0** (main likelihood column): mean `-log density` at the label, per second, over the
  test rows whose label is above 0 s. One label in ten is exactly 0 s: families with an atom
  at 0 (EGMN's p0, the censored normal, ZILN) score such a row by `-log P(T = 0)`, a
  probability, while purely continuous ones (exponential, histogram, survival) score it by
  a density; the two are not comparable, so the all-row NLL is in `evaluation.json` only.
  On y > 0 every family is scored by a density in 1/s.
- CRPS: `integral (F(t) - 1{t >= y})^2 dt` in seconds; proper for every family, atoms included.
- cov q: share of test labels at or below the predicted q-quantile (ideal: q).
- skip AUC / Brier: `P(T <= 3 s)` against `y <= 3 s`.
- ONNX MB: the size of `model.onnx`. Training times and ONNX rows/s depend on the machine:
  they are in [costs.md](costs.md).
"""


NOTES = """\
The quality bar asked of EGMN (best on NLL and CRPS, at least as good as every baseline on
MAE and XAUC, not worse than the best baseline on quick-skip AUC) is **not met** on this
test day, and the table says where. The EGMN row is the served `models/egmn/2` (the paper's
loss with a halved L1 weight, chosen on the validation day: `reports/tuning.md`); the
paper's settings (`models/egmn/1`) scored MAE 18.997 s, XAUC 0.6688, NLL y>0 3.740, CRPS
14.213 s and skip AUC 0.7324 here, so version 2 is better on every one of those columns.

Every model was trained three times (seeds 0, 1 and 2; seed 0 is the served directory), and
the verdicts above call a difference inside the seeds' ranges a tie. The seeds move the
figures more than some gaps between models: the MAE of a model whose point is a mean moves
by up to ±0.9 s (gr), ±0.5 s (softmax, ziln, tpm, vr), against ±0.04 s for EGMN and ±0.06 s
for D2Q, whose points are median-like; so the order of the mean-point baselines in the
papers' table below is mostly noise. Coverage moves by up to ±0.023 and NLL y>0 by up to
±0.05 (D2Q).

- **EGMN is ahead beyond the spread on nothing but calibration**: its 10/50/90% quantiles
  cover 9.8/49.2/90.0% of the labels (10% level: no other model within its spread). Its
  point MAE is the best figure but ties with D2Q (18.989 ±0.055) and Huber (19.200
  ±0.119), and its XAUC (0.6694 ±0.0020) ties with D2Q's (0.6721 ±0.0004) and AM's.
- **Softmax (20 log-spaced buckets) wins NLL y>0 and CRPS beyond the spread** (3.576 ±0.004
  vs 3.716 ±0.022; 14.002 ±0.016 vs 14.160 ±0.012 s), in every duration group on NLL y>0.
  It is not an artefact of the atom: on labels in (0, 0.5 s], where a histogram's first
  bucket could borrow the mass of the 0 s labels, softmax is worse than EGMN; it wins in
  every range above 0.5 s. The distribution plot shows why: the full-view peak at the
  video's duration is sharp, and 20 buckets 1.47x wide follow it more closely than EGMN's
  truncated Gaussians do.
- **The softmax on soft labels (`distill_softmax`) wins the MAE of the median and the skip
  Brier score beyond the spread** (18.849 ±0.008 vs 18.922 ±0.074 s; 0.1945 vs 0.1987).
  Skip AUC is a tie among eight models, GR's 0.7352 ±0.0044 on top and EGMN's 0.7343 inside.
- **GR** (generative regression) is a good distribution (NLL y>0 3.645, skip AUC tied for
  best) with a poor point (soft-argmax MAE 23.8 ±0.9 s), and its graph is the slowest by
  far (a tenth of the others' ONNX rows/s, costs.md): it runs the decoder's second step once for
  each of the 16 first tokens of every row.
- The point regressors (`huber`, `huberpp`, `am`) and the debiasing and exit models
  (`d2co`, `cwm`) trail EGMN on the distribution columns; `lda`'s anchors reach NLL y>0
  3.630 and CRPS 14.157 s, between softmax and EGMN. `reports/methods/` says what each
  implements and what it substitutes.

What was tried, within the rules (no test-day tuning, no baseline weakened):

- The likelihood column was checked for fairness before reading anything into it: NLL y>0
  scores every family by a density on the same rows, and the breakdown by watch time above
  shows the baselines' lead does not come from the labels near 0 s.
- A diagnostic on the **validation day** only: EGMN retrained without its L1 point term
  (beta = 0, uncalibrated) reaches NLL y>0 3.634 and CRPS 13.54 s there, against 3.675 /
  13.79 s with the paper's beta = 1 and 3.570 / 13.49 s for softmax, but its point gets much
  worse (validation MAE 19.96 vs 18.54 s).
- Four EGMN configurations tuned on the validation day (`reports/tuning.md`): L1 weight 0.5,
  entropy weight 0.01, 16 Gaussians, and the three together, with a selection rule fixed
  before any figure was seen (lowest CRPS among those within 1% of the shipped MAE, shipped
  only if CRPS and NLL y>0 both improve). Beta 0.5 won and is served as version 2; none of
  the four reached softmax's validation NLL y>0 or CRPS. The baselines got no search.
- EGMN's calibration (fitted on the validation day) trades likelihood for coverage: on the
  validation day's second half every tuned network scores a better NLL y>0 uncalibrated.
- Early stopping watches each model's own loss on the validation day: the baselines' best
  epochs are the 1st to the 3rd (their validation loss rises after that), EGMN's the 6th.

Closing the rest of the gap would mean changing EGMN's shape (narrower components near the
duration peak, an atom-aware calibration), not its loss weights.
"""


PLOT_CAPTIONS = {
    "evaluation_distributions.png": "Observed vs predicted watch-time distribution per "
    "duration group: mass per decade of watch time on a log axis, the prediction being the "
    "average over the group's rows of each model's mass in each bin. The first bin, "
    "[0, 0.25 s), holds the labels at exactly 0 s and is left out of the axis; each "
    "title gives its observed share.",
    "evaluation_reliability.png": "Reliability of the quantiles: for q = 0.05..0.95, the "
    "share of test labels at or below the predicted q-quantile.",
    "evaluation_egmn_mixture.png": "EGMN's mixture masses over video duration: the atom, "
    "the exponential, and the Gaussians pooled by where their mean sits relative to the "
    "video's duration.",
}
