"""One servable model version: load, encode, run, post-process, warm up, describe.

In the manner of MLServer's ``MLModel`` and KServe's ``Model``: every step of a prediction is
a method of the model it belongs to, and each step is whole-batch numpy (or one onnxruntime
run), so the batcher can cut a batch between any two of them. ``predict`` chains them for
one block of rows; the batcher calls them one by one, and offline evaluation scores through
the same methods, so an offline figure is exactly what the service answers.

A model directory is served only when its manifest validates, its ``model.onnx`` has the
sha256 the manifest names, its distribution family is known, the ONNX graph has exactly
the inputs and outputs the manifest declares, and its history tables (when its features
read any) have the sha256, shapes and finite values the manifest declares.
:meth:`ModelRuntime.load` refuses anything less with a ModelLoadError whose message is one
line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from service.distributions import Distribution, ParameterError, get_family
from service.distributions.points import with_point
from service.errors import FeatureError, InvalidInput, ModelLoadError
from service.manifest import CategoricalFeature, LookupFeature, Manifest, verify_onnx_sha256
from service.runtime.features import encode_features, required_columns
from service.runtime.lookup import LookupTables, ModelTables
from service.runtime.postprocess import (
    NO_DISTRIBUTION,
    Params,
    first_bad_row,
    summarize,
    summarize_blocks,
)
from service.runtime.prediction import Prediction, PredictOptions

ROW_BLOCK = 8
"""Runs are padded to a multiple of this many rows.

onnxruntime's CPU GEMM (MLAS) computes rows in blocks of four, and a row in the ragged last
block can differ in the last float32 bit from the same row in a full block; padding every
run (by repeating its last row) makes a row's output bit-identical whatever batch, or
offline evaluation chunk, it lands in."""

PUBLIC_VOCABULARY_LIMIT = 1000
"""Above this many entries a vocabulary holds ids (users, videos, authors): never shown."""

_ORT_DTYPES = {"int64": "tensor(int64)", "float32": "tensor(float)"}


@dataclass(frozen=True)
class SessionConfig:
    """onnxruntime threading; 0 lets onnxruntime choose (one thread per physical core)."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0

    def session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        # Idle pool threads spin-wait by default: that burns CPU which the other uvicorn
        # workers and this worker's own decoding and post-processing need (the model's own
        # share of a request is small), so they sleep instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        # onnxruntime's CPU arena keeps, per session, the largest batch's buffers for good:
        # with 16 model versions each run once at 2048 rows a worker grew from 131 to 471 MB,
        # against 199 MB without it, at the same speed from 64 rows up (about 20 us more
        # on a 1-row run).
        options.enable_cpu_mem_arena = False
        return options


def pad_rows(tensors: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Tensors padded to a multiple of ROW_BLOCK rows by repeating the last row."""
    target = -(-n // ROW_BLOCK) * ROW_BLOCK
    if target == n or n == 0:
        return dict(tensors)
    index = np.minimum(np.arange(target), n - 1)
    return {name: np.take(t, index, axis=0) for name, t in tensors.items()}


def _source_kinds(manifest: Manifest) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for spec in manifest.features:
        text = isinstance(spec, CategoricalFeature) and spec.dtype == "string"
        kind = "string" if text else "number"
        kinds[spec.source] = "number" if kinds.get(spec.source) == "number" else kind
    return kinds


def _read_manifest(model_dir: Path) -> Manifest:
    for required in (model_dir / "manifest.json", model_dir / "model.onnx"):
        if not required.is_file():
            raise ModelLoadError(f"{required.name} is missing")
    try:
        manifest = Manifest.read(model_dir / "manifest.json")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise ModelLoadError(
            f"manifest.json is invalid ({exc.error_count()} error(s); first: {where}: "
            f"{first['msg']})"
        ) from None
    except ValueError as exc:
        raise ModelLoadError(f"manifest.json is unreadable: {exc}") from None
    if (manifest.name, manifest.version) != (model_dir.parent.name, model_dir.name):
        raise ModelLoadError(
            f"manifest names {manifest.name}/{manifest.version}, directory is "
            f"{model_dir.parent.name}/{model_dir.name}"
        )
    return manifest


def _family(manifest: Manifest) -> type[Distribution]:
    try:
        family = get_family(manifest.family)
    except KeyError as exc:
        raise ModelLoadError(str(exc.args[0])) from None
    unknown = sorted(set(manifest.outputs) - set(family.required_params + family.optional_params))
    absent = sorted(set(family.required_params) - set(manifest.outputs))
    if unknown or absent:
        raise ModelLoadError(
            f"outputs do not fit family {family.family!r}: unknown {unknown}, missing {absent}"
        )
    return with_point(family, manifest.point)


def _check_graph(session: ort.InferenceSession, manifest: Manifest) -> None:
    """The graph's signature must be the manifest's, or every request would fail later."""
    graph_inputs = {i.name: i for i in session.get_inputs()}
    want_inputs = {t.name: t for t in manifest.inputs}
    if set(graph_inputs) != set(want_inputs):
        raise ModelLoadError(
            f"graph inputs {sorted(graph_inputs)} differ from manifest {sorted(want_inputs)}"
        )
    for name, tensor in want_inputs.items():
        got = graph_inputs[name]
        if got.type != _ORT_DTYPES[tensor.dtype]:
            raise ModelLoadError(f"input {name!r} is {got.type}, manifest says {tensor.dtype}")
        width = got.shape[-1] if got.shape else None
        if len(got.shape) != 2 or (isinstance(width, int) and width != len(tensor.columns)):
            raise ModelLoadError(
                f"input {name!r} has shape {got.shape}, manifest has {len(tensor.columns)} columns"
            )
    graph_outputs = {o.name for o in session.get_outputs()}
    missing = sorted(set(manifest.outputs.values()) - graph_outputs)
    if missing:
        raise ModelLoadError(f"graph lacks the output(s) {missing} the manifest names")


class ModelRuntime:
    """A loaded model version and every step of its predictions."""

    def __init__(
        self,
        manifest: Manifest,
        path: Path,
        session: ort.InferenceSession,
        family: type[Distribution],
        lookups: LookupTables | None = None,
    ) -> None:
        self.manifest = manifest
        #: the history tables frozen at export, which the lookup features read
        self.lookups = lookups
        self.model_tables = ModelTables.of(manifest, lookups)
        self.path = path
        self.session = session
        self.family = family
        #: raw request columns the features read, in manifest order
        self.sources: list[str] = required_columns(manifest.features)
        #: per source column: "string" when every feature reads it as text, else "number"
        self.source_kinds: dict[str, str] = _source_kinds(manifest)
        #: ONNX output names in the order of ``manifest.outputs``
        self.output_names: list[str] = list(manifest.outputs.values())

    @classmethod
    def load(cls, model_dir: Path, config: SessionConfig | None = None) -> ModelRuntime:
        """Load and verify one ``<name>/<version>/`` directory; ModelLoadError if unservable."""
        manifest = _read_manifest(model_dir)
        family = _family(manifest)
        model_path = model_dir / "model.onnx"
        if not verify_onnx_sha256(manifest, model_path):
            raise ModelLoadError("model.onnx does not have the sha256 the manifest names")
        options = (config or SessionConfig()).session_options()
        try:
            session = ort.InferenceSession(
                str(model_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"onnxruntime cannot load model.onnx: {exc}") from None
        _check_graph(session, manifest)
        lookups = LookupTables.load(model_dir, manifest)
        return cls(manifest, model_dir, session, family, lookups)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def quick_skip_threshold_s(self) -> float:
        return self.manifest.quick_skip_threshold_s

    # ----------------------------------------------------------------- the steps

    def encode(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Model input tensors; FeatureError names a missing or malformed column (and row)."""
        tensors = encode_features(self.manifest, columns, self.lookups)
        for spec in self.manifest.inputs:
            tensor = tensors[spec.name]
            if tensor.dtype.kind == "f":
                bad = ~np.isfinite(tensor)
                if bad.any():
                    row, col = (int(i) for i in np.argwhere(bad)[0])
                    feature = spec.columns[col]
                    source = next(
                        (f.source for f in self.manifest.features if f.name == feature), feature
                    )
                    raise FeatureError(source, "value is out of the range the model accepts", row)
        return tensors

    def run(self, tensors: Mapping[str, np.ndarray]) -> Params:
        """Family parameters (float64), keyed by parameter name: one onnxruntime run.

        The rows are padded to a multiple of :data:`ROW_BLOCK` and cut back.
        """
        rows = len(next(iter(tensors.values()))) if tensors else 0
        outs = self.session.run(self.output_names, pad_rows(tensors, rows))
        return {
            param: np.asarray(out[:rows], dtype=np.float64)
            for param, out in zip(self.manifest.outputs, outs, strict=True)
        }

    def distribution(self, params: Params) -> Distribution:
        """The model's family over ``params``; FeatureError when they are no distribution."""
        try:
            return self.family.from_params(params)
        except ParameterError as exc:
            raise FeatureError(None, f"the model output is not a distribution: {exc}") from None

    def postprocess(self, params: Params, options: PredictOptions) -> Prediction:
        """The served numbers of one block of rows, from the family parameters."""
        bad_row = first_bad_row(params)
        if bad_row is not None:
            raise FeatureError(None, NO_DISTRIBUTION, bad_row)
        return summarize(self.distribution(params), options, self.quick_skip_threshold_s)

    def postprocess_batch(
        self, params: Params, requests: Sequence[tuple[int, PredictOptions]]
    ) -> list[Prediction | FeatureError]:
        """The Predictions of a batch's consecutive row blocks (each block's row count and
        options, in row order); a block whose rows hold no distribution fails alone."""
        return summarize_blocks(params, requests, self.distribution, self.quick_skip_threshold_s)

    def predict(self, columns: Mapping[str, np.ndarray], options: PredictOptions) -> Prediction:
        """Everything ``options`` asks for, for raw request columns of equal length.

        Raises FeatureError (a column the manifest cannot encode, or a row the model cannot
        answer for), naming the column and the row.
        """
        return self.postprocess(self.run(self.encode(columns)), options)

    def warm_up(self, rows: int) -> None:
        """Run the whole path once per batch shape, so the first real request is not slow.

        onnxruntime allocates and plans lazily on the first run of a shape; the
        post-processor's root search and numpy's kernels also pay a first-call cost. A
        failure here means the model cannot serve, so it is reported as a load error.
        """
        options = PredictOptions.create(
            quantiles=[0.1, 0.5, 0.9], intervals=[(0.0, 3.0), (3.0, None)], return_params=True
        )
        try:
            for n in sorted({1, rows}):
                result = self.predict(self.example_columns(n), options)
                if not np.all(np.isfinite(result.mean)):
                    raise ModelLoadError("warm-up gave a non-finite expected watch time")
        except (InvalidInput, ValueError) as exc:
            raise ModelLoadError(f"warm-up failed: {exc}") from None

    # ----------------------------------------------------------------- description

    def metadata(self) -> dict[str, Any]:
        """What a client needs to call the model, independent of any protocol.

        ``inputs`` holds each raw column with its kind (``string``, ``integer`` or
        ``number``): the protocols map these to their own data types.
        """
        manifest = self.manifest
        numeric = {f.source for f in manifest.features if f.kind == "numeric"}
        inputs = []
        for source in self.sources:
            if self.source_kinds[source] == "string":
                kind = "string"
            else:
                kind = "number" if source in numeric else "integer"
            inputs.append({"name": source, "kind": kind})
        return {
            "name": self.name,
            "version": self.version,
            "platform": "onnxruntime_onnx",
            "family": manifest.family,
            "description": manifest.description,
            "quick_skip_threshold_s": manifest.quick_skip_threshold_s,
            "params": list(manifest.outputs),
            "inputs": inputs,
        }

    def example_columns(self, n: int, public: bool = False) -> dict[str, np.ndarray]:
        """Plausible raw columns for ``n`` rows (known vocabulary values, mean-ish numbers).

        Used for the warm-up runs and for the OpenAPI examples: a request built from the
        manifest alone, so it exercises every lookup and transform the real traffic will.
        ``public`` (the OpenAPI examples) shows no value of an id vocabulary (one over
        PUBLIC_VOCABULARY_LIMIT entries): those columns hold -1, an unknown id.
        """
        columns: dict[str, np.ndarray] = {}
        for spec in self.manifest.features:
            if spec.source in columns:
                continue
            if isinstance(spec, LookupFeature):
                ids = np.arange(n, dtype=np.int64)
                if self.lookups is not None and not public:
                    known = self.lookups.table(spec.table).ids
                    ids = known[np.arange(n) % known.size] if known.size else ids
                columns[spec.source] = ids if not public else np.full(n, -1, dtype=np.int64)
                continue
            if isinstance(spec, CategoricalFeature):
                vocab = np.asarray(spec.vocabulary)
                identity = spec.transform == "identity"
                if public and vocab.size > PUBLIC_VOCABULARY_LIMIT and identity:
                    vocab = np.array([-1] if spec.dtype == "int64" else ["unknown"])
                if spec.transform == "hour_of_day" and vocab.size:
                    vocab = vocab * 100 + 30
                elif spec.transform == "weekday":
                    vocab = np.array([20220502 + int(d) for d in (vocab if vocab.size else [0])])
                if vocab.size == 0:
                    vocab = np.array([0] if spec.dtype == "int64" else ["unknown"])
                columns[spec.source] = vocab[np.arange(n) % vocab.size]
            else:
                center = float(np.expm1(min(spec.mean, 700.0))) if spec.log1p else spec.mean
                columns[spec.source] = np.full(n, center, dtype=np.float64)
        return columns
