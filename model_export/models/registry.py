"""Which baseline heads exist, by name, and which of them are served."""

from __future__ import annotations

from model_export.models.baseline import BaselineModel
from model_export.models.cread import CREAD
from model_export.models.cwm import CWM
from model_export.models.d2co import D2Co
from model_export.models.d2q import DurationQuantile
from model_export.models.distill import DistilledBucketSoftmax
from model_export.models.point import (
    AsymmetricLogRegression,
    HuberRegression,
    RelativeHuberRegression,
)
from model_export.models.gr import GenerativeRegression
from model_export.models.lda import LabelDistributionAnchors
from model_export.models.names import ALL, OFFLINE, SERVED
from model_export.models.softmax import BucketSoftmax
from model_export.models.tpm import TreeProgressive
from model_export.models.vr import ValueRegression
from model_export.models.wlr import WeightedLogistic
from model_export.models.ziln import ZeroInflatedLognormal

BASELINES: dict[str, type[BaselineModel]] = {
    cls.name: cls
    for cls in (
        ValueRegression,
        WeightedLogistic,
        ZeroInflatedLognormal,
        BucketSoftmax,
        CREAD,
        DurationQuantile,
        HuberRegression,
        RelativeHuberRegression,
        AsymmetricLogRegression,
        DistilledBucketSoftmax,
        TreeProgressive,
        D2Co,
        CWM,
        LabelDistributionAnchors,
        GenerativeRegression,
    )
}
"""Each baseline's head class, by name."""

__all__ = ["ALL", "BASELINES", "OFFLINE", "SERVED"]
