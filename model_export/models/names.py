"""The models' names, in one place and without torch: the command line's ``--help``, the
report's order and the registry of heads all read them here."""

from __future__ import annotations

SERVED = (
    "vr",
    "wlr",
    "ziln",
    "softmax",
    "cread",
    "d2q",
    "huber",
    "huberpp",
    "am",
    "distill_softmax",
    "tpm",
    "d2co",
    "cwm",
    "lda",
    "gr",
)
"""Baselines exported to ``models/<name>/1`` and served by their family."""

OFFLINE: tuple[str, ...] = ()
"""Baselines with no density of their own: point metrics only, not exported."""

ALL = (*SERVED, *OFFLINE)
"""Every baseline."""

TRAINABLE = ("egmn", *ALL)
"""What ``train --model`` accepts."""
