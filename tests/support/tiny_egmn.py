"""A tiny EGMN trained on synthetic logs and exported: a whole build in seconds.

``python tests/support/tiny_egmn.py OUT_DIR [--progress]`` (with the repository on
``PYTHONPATH``) trains two epochs on 2,000 synthetic rows with a fixed seed, labelled
``egmn/1`` in its progress lines, and writes a model directory to ``OUT_DIR``. It runs in a
process of its own, as a build does: the progress test reads what it prints to a file, the
reproducibility test runs it twice and compares the graphs' sha256.
"""

from __future__ import annotations

import sys
from pathlib import Path

from model_export.data.features import fit_features
from model_export.data.prepared import encode
from model_export.data.synthetic import SYNTHETIC_FEATURES, generate
from model_export.export.model_dir import write_model_dir
from model_export.models.egmn import ServingEGMN
from model_export.training.config import TrainConfig
from model_export.training.egmn import train_egmn
from service.manifest import TrainingWindow

CONFIG = TrainConfig(
    n_gaussians=3,
    embedding_dim=4,
    hidden=(16,),
    dropout=0.0,
    batch_size=256,
    max_epochs=2,
    patience=5,
    num_threads=1,
)


def build(out_dir: Path, progress: bool) -> None:
    """Train and export; the same inputs and seed give the same bytes."""
    train, validation = generate(2_000, seed=1), generate(500, seed=2)
    fitted = fit_features(train.frame, SYNTHETIC_FEATURES)
    enc_train, enc_validation = encode(fitted, train.frame), encode(fitted, validation.frame)
    model, _ = train_egmn(
        enc_train,
        enc_validation,
        fitted.cardinalities,
        fitted.numeric_width,
        CONFIG,
        progress=progress,
        label="egmn/1",
    )
    write_model_dir(
        out_dir,
        ServingEGMN(model, None, CONFIG.label_scale).eval(),
        fitted,
        name="tiny",
        version="1",
        window=TrainingWindow(train_dates=[20220425], rows_train=len(train.frame)),
        evaluation=None,
        extras={"train_config": repr(CONFIG.as_dict())},
    )


if __name__ == "__main__":
    build(Path(sys.argv[1]), progress="--progress" in sys.argv[2:])
