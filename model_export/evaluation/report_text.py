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
- **egmn**: the served model (`models/egmn/3`): point mass at 0 + exponential + 10 truncated
  Gaussians, the last one centred within 10 % of the video's duration; loss NLL + 0.1
  sum(w log w) + 0.5 L1 of a separate point head (the paper's with a halved L1 weight, moved
  off the mixture), calibrated on the validation day. Point: the served distribution's
  median. `models/egmn/2` (the paper's point `w0/lambda + sum w_k mu_k`, the same loss on it)
  and `models/egmn/1` (the paper's weights) stay reachable by version.
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
The EGMN row is the served `models/egmn/3`: version 2's loss, the last Gaussian anchored at
the video's duration, the L1 term on a separate point head, and the distribution's median as
point_s, each chosen on the validation day by a rule fixed before it was trained
(`reports/tuning.md`). On this test day version 2 (`models/egmn/2`) scored MAE 18.966 s,
XAUC 0.6694, NLL y>0 3.716 and CRPS 14.160 s, and version 1 (the paper's settings) 18.997 s,
0.6688, 3.740 and 14.213 s: version 3 is better than both on each of those columns.

Every model was trained three times (seeds 0, 1 and 2; seed 0 is the served directory), and
the verdicts above call a difference inside the seeds' ranges a tie. The seeds move the
figures more than some gaps between models: the MAE of a model whose point is a mean moves
by up to ±0.9 s (gr), ±0.5 s (softmax, ziln, tpm, vr), against ±0.02 s for EGMN and ±0.06 s
for D2Q, whose points are medians; so the order of the mean-point baselines in the papers'
table below is mostly noise. Coverage moves by up to ±0.023 and NLL y>0 by up to ±0.05
(D2Q).

- **EGMN is ahead beyond the spread on NLL y>0** (3.566 ±0.002 against softmax's 3.576
  ±0.004) and on the 10 % coverage. It has the best MAE of point_s (18.909 ±0.023, tied
  with D2Q's 18.989 ±0.055) and the best CRPS (13.980 ±0.025, tied with softmax's 14.002
  ±0.016); its XAUC (0.6709 ±0.0012) ties with D2Q's 0.6721 ±0.0004.
- **The anchor is where the likelihood came from.** By watch time, EGMN now beats softmax
  above 30 s (5.275 against 5.516 nats at 30-100 s, 6.772 against 7.249 above 100 s), where
  the full views' peak at the video's duration sits, and still trails it between 0.5 and
  10 s (1.922 against 1.800, 3.445 against 3.280): the short views, whose mode the bound on
  the Gaussians' means leaves to the exponential (tuning.md, "What limits NLL y>0").
- **The softmax on soft labels (`distill_softmax`) wins the MAE of the median and the skip
  Brier score beyond the spread** (18.849 ±0.008 against 18.909 ±0.023 s; 0.1945 against
  0.1986). Skip AUC is a tie among eight models, GR's 0.7352 ±0.0044 on top and EGMN's
  0.7332 ±0.0022 inside.
- **GR** (generative regression) is a good distribution (NLL y>0 3.645, skip AUC tied for
  best) with a poor point (soft-argmax MAE 23.8 ±0.9 s), and its graph is the slowest by
  far (a tenth of the others' ONNX rows/s, costs.md): it runs the decoder's second step once for
  each of the 16 first tokens of every row.
- The point regressors (`huber`, `huberpp`, `am`) and the debiasing and exit models
  (`d2co`, `cwm`) trail EGMN on the distribution columns; `lda`'s anchors reach NLL y>0
  3.630 and CRPS 14.157 s. `reports/methods/` says what each implements and what it
  substitutes.

What was tried, within the rules (no test-day tuning, no baseline weakened):

- The likelihood column was checked for fairness before reading anything into it: NLL y>0
  scores every family by a density on the same rows, and the breakdown by watch time above
  shows where each family gains and loses.
- First round on the validation day (`reports/tuning.md`): L1 weight 0.5, entropy weight
  0.01, 16 Gaussians, and the three together; beta 0.5 won and became version 2.
- Second round, one lever at a time against version 2's configuration, seed 0, with the
  seed range of version 2 as the tie margin: point-in-time history features of the user,
  video and author (three variants), DCN-v2 cross layers (with and without wider id
  embeddings and a duration product), a separate point head, a CRPS term, free means, the
  duration anchor, and combinations. History features made the validation figures worse
  (MAE up 1.2 to 2.1 %), the trunk levers lowered neither CRPS nor NLL y>0 beyond the noise
  (DCN-v2 with the wider embeddings raised both); only the anchor with the point head
  lowered both NLL y>0 and CRPS beyond the noise with the point kept, and its point rule
  then chose the median (validation MAE 17.630 against the head's 17.740). Every baseline
  keeps the same inputs and trunk as the served EGMN: none of the shipped models reads the
  history features or the cross layers.
- EGMN's calibration (fitted on the validation day) trades likelihood for coverage:
  refitted with the likelihood alone it scores 0.055 nats lower on NLL y>0 of the
  validation day's second half, and misses the coverage by up to 0.076 (tuning.md, "What
  coverage costs").
- Early stopping watches each model's own loss on the validation day: the baselines' best
  epochs are the 1st to the 3rd (their validation loss rises after that), EGMN's the 4th
  to the 6th.
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
