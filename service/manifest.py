"""The manifest: the one contract between the offline exporter and the service.

Every model directory holds ``model.onnx`` and ``manifest.json``. The exporter writes the
manifest through :class:`Manifest` and the service reads it back through the same class, so a
field renamed on one side cannot silently drift from the other. Every model is strict
(``extra="forbid"``): a manifest written by a newer exporter with fields this service does not
know is refused rather than half-understood, and ``schema_version`` lets a service name the
versions it can honour in its refusal.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA_VERSION = 1
"""The manifest layout this code reads and writes; bump it on any incompatible change."""

MISSING_INDEX = 0
"""Categorical index of a missing value (null, NaN or a declared sentinel)."""

OOV_INDEX = 1
"""Categorical index of a value outside the vocabulary (unseen or too rare in training)."""

FIRST_VOCAB_INDEX = 2
"""Index of ``vocabulary[0]``; vocabulary entry ``i`` maps to ``FIRST_VOCAB_INDEX + i``."""


class _Strict(BaseModel):
    """Base for every manifest block: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


CategoricalTransform = Literal["identity", "hour_of_day", "weekday"]
"""How a raw column becomes the category value before the vocabulary lookup.

- ``identity``: the raw value itself.
- ``hour_of_day``: ``hourmin // 100`` from an ``hhmm`` integer; values outside 0-23 are unknown.
- ``weekday``: ISO weekday minus one (Monday 0 .. Sunday 6) of a ``yyyymmdd`` integer date;
  an impossible date is unknown.
"""


class CategoricalFeature(_Strict):
    """A categorical input: one int64 index column of the ``categorical`` tensor.

    Index layout: ``MISSING_INDEX`` (0) for a missing value, ``OOV_INDEX`` (1) for a value not
    in ``vocabulary`` (unseen at training time or seen fewer than ``min_count`` times, so the
    OOV embedding is trained on rare values and an unseen id at serving time is never an
    error), and ``FIRST_VOCAB_INDEX + i`` for ``vocabulary[i]``. ``vocabulary`` is sorted so
    that the lookup is a binary search.
    """

    kind: Literal["categorical"] = "categorical"
    name: str = Field(description="feature name (the model's column), unique in the manifest")
    source: str = Field(description="raw request column the feature is computed from")
    dtype: Literal["int64", "string"] = Field(
        description="type of the raw values: int64 ids/codes or strings"
    )
    transform: CategoricalTransform = "identity"
    vocabulary: list[int] | list[str] = Field(description="sorted distinct known values")
    min_count: int = Field(
        ge=1, description="training occurrences a value needed to get its own index"
    )
    missing_values: list[int] | list[str] = Field(
        default_factory=list,
        description="raw sentinel values treated as missing (e.g. -124 in the user table)",
    )
    cardinality: int = Field(description="rows of the embedding table: 2 + len(vocabulary)")
    missing: Literal["missing_index"] = Field(
        default="missing_index", description="null/NaN/sentinel -> index 0"
    )
    unknown: Literal["oov_index"] = Field(
        default="oov_index", description="value outside the vocabulary -> index 1"
    )

    @model_validator(mode="after")
    def _check_vocabulary(self) -> CategoricalFeature:
        vocab: list[int | str] = list(self.vocabulary)
        ordered = all(a < b for a, b in itertools.pairwise(vocab))  # type: ignore[operator]
        if not ordered:
            raise ValueError(f"feature {self.name!r}: vocabulary must be sorted and distinct")
        want = str if self.dtype == "string" else int
        if any(type(v) is not want for v in vocab):
            raise ValueError(f"feature {self.name!r}: vocabulary entries must be {want.__name__}")
        if any(type(v) is not want for v in self.missing_values):
            raise ValueError(f"feature {self.name!r}: missing_values must be {want.__name__}")
        if self.cardinality != FIRST_VOCAB_INDEX + len(vocab):
            raise ValueError(f"feature {self.name!r}: cardinality must be 2 + len(vocabulary)")
        return self


class NumericFeature(_Strict):
    """A numeric input: one float32 column of the ``numeric`` tensor (two with an indicator).

    Pipeline, in this order: a value is missing when it is null, NaN, +-inf or one of
    ``missing_values``; otherwise ``log1p(max(x, 0))`` when ``log1p`` is set; then
    ``(x - mean) / std`` with constants fitted on the training days. A missing value becomes
    ``fill`` (0.0 is the training mean) and, with ``missing_indicator``, the extra column
    ``<name>__missing`` is 1.0 (else 0.0) so that the model can tell "unknown" from "average".
    """

    kind: Literal["numeric"] = "numeric"
    name: str
    source: str
    dtype: Literal["float64"] = "float64"
    missing_values: list[float] = Field(default_factory=list)
    log1p: bool = False
    mean: float
    std: float = Field(gt=0.0)
    fill: float = 0.0
    missing_indicator: bool = False

    @property
    def indicator_name(self) -> str:
        """Column name of the missing-value indicator in the numeric tensor."""
        return f"{self.name}__missing"


class LookupFeature(_Strict):
    """A numeric input looked up by id in a table shipped beside the model: one float32
    column of the ``numeric`` tensor (two with the unseen indicator).

    The history features: a statistic of the views of the same user (video, author) on the
    days up to the manifest's ``history.cutoff_date``, read from the table ``table`` of the
    file ``history.file`` by the id in the request column ``source``, so that a client sends
    nothing beyond the ids it already sends. Pipeline: the id's row of the table (binary search
    in its sorted ids); an id not in the table, or a missing id (null, NaN), gets ``default``
    (the statistic of an id with no views: the global value the table's statistics are
    smoothed towards, 0 for the count) and, with ``unseen_indicator``, 1.0 in the extra column
    ``<name>__unseen``; then ``log1p(max(x, 0))`` when ``log1p``; then ``(x - mean) / std``.
    A value that is not finite (offline only: rows of a day with no earlier day) becomes
    ``fill``. Ids of the wrong type are errors, as for a categorical id.
    """

    kind: Literal["lookup"] = "lookup"
    name: str
    source: str = Field(description="raw request column holding the id")
    table: str = Field(description="table of the history file, keyed by the source's ids")
    statistic: str = Field(description="column of that table")
    default: float = Field(allow_inf_nan=False, description="raw value of an unseen or missing id")
    log1p: bool = False
    mean: float
    std: float = Field(gt=0.0)
    fill: float = 0.0
    unseen_indicator: bool = False

    @property
    def indicator_name(self) -> str:
        """Column name of the unseen-id indicator in the numeric tensor."""
        return f"{self.name}__unseen"


FeatureSpec = Annotated[
    CategoricalFeature | NumericFeature | LookupFeature, Field(discriminator="kind")
]


class LookupTable(_Strict):
    """One table of the history file: its row count and its statistic columns."""

    rows: int = Field(ge=0)
    statistics: list[str]


class HistoryTables(_Strict):
    """The id-keyed tables the lookup features read, frozen at export.

    ``file`` (in the model directory, an ``.npz`` of plain arrays) holds for each table
    ``<table>.ids`` (sorted distinct int64 ids) and ``<table>.<statistic>`` (float32, one per
    id: the numeric tensor is float32, so more digits would buy nothing and double the file).
    ``cutoff_date`` is the last day (yyyymmdd) whose views the tables hold: requests are
    answered with the history as of the end of that day.
    """

    file: str = Field(pattern=r"^[A-Za-z0-9_\-]+\.npz$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    cutoff_date: int
    prior_views: float = Field(
        ge=0.0, description="pseudo-views at the global value each statistic is smoothed with"
    )
    tables: dict[str, LookupTable]


class InputTensor(_Strict):
    """One ONNX input: its name, element type and the feature column in each position."""

    name: str
    dtype: Literal["int64", "float32"]
    columns: list[str] = Field(description="feature (or indicator) name of each column, in order")


class TrainingWindow(_Strict):
    """Which days of the logs fitted, selected and evaluated the model (dates as yyyymmdd)."""

    train_dates: list[int]
    validation_date: int | None = None
    test_date: int | None = None
    rows_train: int = Field(ge=0)
    rows_validation: int = Field(default=0, ge=0)
    rows_test: int = Field(default=0, ge=0)


class Evaluation(_Strict):
    """Offline metrics of the served model, and of reference points, on the test day."""

    split: str = "test"
    date: int | None = None
    rows: int = Field(ge=0)
    metrics: dict[str, float] = Field(description="metric name -> value for this model")
    references: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="other estimators on the same rows (baselines, uncalibrated, ...)",
    )
    notes: dict[str, str] = Field(default_factory=dict, description="how metrics are defined")


class Attribution(_Strict):
    """Licence and credit of the data the model was trained on (CC BY-SA needs both)."""

    dataset: str
    license: str
    license_url: str
    source_url: str
    citation: str
    notice: str


class Manifest(_Strict):
    """Everything the service needs to load, feed and interpret one exported model."""

    schema_version: Literal[1] = 1
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    version: str = Field(pattern=r"^[0-9]+$")
    family: str = Field(description="distribution family of the outputs, e.g. 'egm'")
    description: str = ""
    outputs: dict[str, str] = Field(description="family parameter -> ONNX output tensor name")
    output_units: Literal["seconds"] = "seconds"
    inputs: list[InputTensor]
    features: list[FeatureSpec]
    quick_skip_threshold_s: float = Field(default=3.0, gt=0.0)
    training_window: TrainingWindow
    evaluation: Evaluation | None = None
    extras: dict[str, float | str | list[float]] = Field(
        default_factory=dict,
        description="informational constants (label scale, calibration fitted, ...)",
    )
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    attribution: Attribution
    history: HistoryTables | None = Field(
        default=None, description="the tables the lookup features read (absent without them)"
    )
    point: Literal["model", "median"] = Field(
        default="model",
        description="what point_s is: the family's own point ('model') or the served "
        "distribution's median ('median'); absent means 'model'",
    )

    @model_validator(mode="after")
    def _check_columns(self) -> Manifest:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        produced: dict[str, str] = {}
        for f in self.features:
            if isinstance(f, CategoricalFeature):
                produced[f.name] = "int64"
            elif isinstance(f, NumericFeature):
                produced[f.name] = "float32"
                if f.missing_indicator:
                    produced[f.indicator_name] = "float32"
            else:
                self._check_lookup(f)
                produced[f.name] = "float32"
                if f.unseen_indicator:
                    produced[f.indicator_name] = "float32"
        used: list[str] = []
        for tensor in self.inputs:
            for column in tensor.columns:
                if produced.get(column) != tensor.dtype:
                    raise ValueError(
                        f"input {tensor.name!r}: column {column!r} is not a {tensor.dtype} feature"
                    )
                used.append(column)
        if sorted(used) != sorted(produced):
            raise ValueError("every feature column must feed exactly one input tensor position")
        return self

    def _check_lookup(self, feature: LookupFeature) -> None:
        """A lookup feature must name a table and a statistic the history block declares."""
        if self.history is None:
            raise ValueError(f"feature {feature.name!r} reads history tables the manifest lacks")
        table = self.history.tables.get(feature.table)
        if table is None or feature.statistic not in table.statistics:
            raise ValueError(
                f"feature {feature.name!r}: no statistic {feature.statistic!r} in table "
                f"{feature.table!r} of {self.history.file}"
            )

    def source_columns(self) -> list[str]:
        """Raw request columns the model needs, in first-use order, without duplicates."""
        return list(dict.fromkeys(f.source for f in self.features))

    def document(self) -> dict[str, Any]:
        """The JSON document of the manifest. Without history tables the block is left out,
        and so is ``point`` at its default, so a model without them has the very manifest it
        had before they existed (on disk and as ``GET /v1/models/{m}`` publishes it)."""
        exclude = set() if self.history is not None else {"history"}
        if self.point == "model":
            exclude.add("point")
        return self.model_dump(mode="json", exclude=exclude or None)

    def to_json(self) -> str:
        """Serialise deterministically (stable key order, newline at the end) for diffs."""
        return json.dumps(self.document(), indent=1, ensure_ascii=False) + "\n"

    def write(self, path: Path) -> None:
        """Write ``manifest.json`` through this class, so only valid manifests reach disk."""
        Manifest.model_validate_json(self.to_json())
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Parse and validate a ``manifest.json``; raises ``pydantic.ValidationError``."""
        return cls.model_validate_json(path.read_text(encoding="utf-8"))


def vocabulary_sha256(vocabulary: list[int] | list[str]) -> str:
    """Hex sha256 of a vocabulary as compact JSON (``[1,2,3]``, ``["a","b"]``, UTF-8).

    The service publishes this instead of the vocabulary itself; the offline side computes
    it from its own manifest to check that both hold the same values.
    """
    text = json.dumps(list(vocabulary), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed so a large model does not sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_onnx_sha256(manifest: Manifest, model_path: Path) -> bool:
    """True when ``model_path`` is the exact file the manifest was written for."""
    return sha256_file(model_path) == manifest.onnx_sha256


_T = TypeVar("_T")

DERIVED_CACHE_SIZE = 4096
"""Entries one cache of :func:`derived_once` holds before it is cleared."""


def derived_once(
    cache: dict[int, tuple[object, _T]],
    owner: object,
    build: Callable[[], _T],
    size: int = DERIVED_CACHE_SIZE,
) -> _T:
    """``build()`` made once per ``owner``: a manifest, or a feature spec or list of one.

    Manifests are immutable, so what the service derives from them (arrays, lookup tables,
    the published document) is kept per object; the entry holds the owner, so its id cannot
    be reused meanwhile. A cache is bounded by clearing it once it holds ``size`` entries.
    """
    hit = cache.get(id(owner))
    if hit is not None and hit[0] is owner:
        return hit[1]
    value = build()
    if len(cache) >= size:
        cache.clear()
    cache[id(owner)] = (owner, value)
    return value
