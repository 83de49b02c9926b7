"""Scoring an exported model directory through the service's own runtime: no torch involved.

:class:`service.runtime.model.ModelRuntime` loads and verifies the directory as the service
does (manifest, sha256, family, graph signature, the ``<name>/<version>`` layout), encodes
raw request columns, runs onnxruntime and builds the manifest's family. ``evaluate``, the
report and the tuning score through it, so an offline figure is what the service answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from service.distributions import Distribution
from service.runtime.model import ModelRuntime, SessionConfig

EVALUATION_SESSION = SessionConfig(intra_op_threads=2)
"""Both cores of the build machine for one onnxruntime run over a whole day of rows."""


def load_served(model_dir: Path, config: SessionConfig = EVALUATION_SESSION) -> ModelRuntime:
    """A model directory loaded as the service loads it; ModelLoadError when unservable."""
    return ModelRuntime.load(model_dir, config)


def served_params(model: ModelRuntime, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Family parameters (float64, seconds) for raw request columns: encode, then run."""
    return model.run(model.encode(columns))


def served_distribution(model: ModelRuntime, columns: Mapping[str, np.ndarray]) -> Distribution:
    """The served distribution of each row, in the manifest's family."""
    return model.distribution(served_params(model, columns))
