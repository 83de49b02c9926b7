"""The model repository: every ``<root>/<name>/<version>/`` loaded, checked and warmed up.

A model directory is served only when its manifest validates, its ``model.onnx`` has the
sha256 the manifest names, its distribution family is known and the ONNX graph has exactly
the inputs and outputs the manifest declares. Anything less is refused with one log line.
What follows is the caller's policy: with ``strict`` (the service's default,
``WATCHTIME_STRICT_MODELS``) any refusal stops start-up, as Triton's ``--exit-on-error``
does, so that a broken version is never served around in silence; without it the other
models serve and the repository keeps the refusals (``failures``) for readiness and metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from service.distributions import Distribution, get_family
from service.manifest import CategoricalFeature, Manifest, verify_onnx_sha256
from service.runtime.features import required_columns
from service.versions import highest_version_dir

log = logging.getLogger("watchtime.repository")

#: The model ``/v1/predict`` serves when WATCHTIME_DEFAULT_MODEL is unset and it is loaded:
#: baselines served beside it must not take over the bare route by name order.
PREFERRED_DEFAULT = "egmn"

_ORT_DTYPES = {"int64": "tensor(int64)", "float32": "tensor(float)"}


class ModelLoadError(Exception):
    """A model directory that cannot be served; the message says why, in one line."""


class UnknownModelError(LookupError):
    """A model name (or name and version) the repository does not serve."""

    def __init__(self, name: str, version: str | None = None) -> None:
        self.name = name
        self.version = version
        what = f"{name!r}" if version is None else f"{name!r} version {version!r}"
        super().__init__(f"model {what} is not served")


@dataclass(frozen=True)
class SessionConfig:
    """onnxruntime threading; 0 lets onnxruntime choose (one thread per physical core)."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0


@dataclass(eq=False)
class LoadedModel:
    """One servable model: manifest, onnxruntime session and what decoding needs."""

    manifest: Manifest
    path: Path
    session: ort.InferenceSession
    family: type[Distribution]
    #: raw request columns the features read, in manifest order
    sources: list[str]
    #: per source column: "string" when every feature reads it as text, else "number"
    source_kinds: dict[str, str]
    #: ONNX output names in the order of ``manifest.outputs``
    output_names: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version


def _source_kinds(manifest: Manifest) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for spec in manifest.features:
        text = isinstance(spec, CategoricalFeature) and spec.dtype == "string"
        kind = "string" if text else "number"
        kinds[spec.source] = "number" if kinds.get(spec.source) == "number" else kind
    return kinds


def _session_options(config: SessionConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = config.inter_op_threads
    # Idle pool threads spin-wait by default: that burns CPU which the other uvicorn workers
    # and this worker's own decoding and post-processing need (the model's own share of a
    # request is small), so they sleep instead.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


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


def load_model(model_dir: Path, config: SessionConfig) -> LoadedModel:
    """Load and verify one ``<name>/<version>/`` directory; ModelLoadError when unservable."""
    manifest_path = model_dir / "manifest.json"
    model_path = model_dir / "model.onnx"
    for required in (manifest_path, model_path):
        if not required.is_file():
            raise ModelLoadError(f"{required.name} is missing")
    try:
        manifest = Manifest.read(manifest_path)
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
    if not verify_onnx_sha256(manifest, model_path):
        raise ModelLoadError("model.onnx does not have the sha256 the manifest names")
    try:
        session = ort.InferenceSession(
            str(model_path), _session_options(config), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"onnxruntime cannot load model.onnx: {exc}") from None
    _check_graph(session, manifest)
    return LoadedModel(
        manifest=manifest,
        path=model_dir,
        session=session,
        family=family,
        sources=required_columns(manifest.features),
        source_kinds=_source_kinds(manifest),
        output_names=list(manifest.outputs.values()),
    )


def _version_key(version: str) -> int:
    return int(version)


@dataclass(frozen=True)
class LoadFailure:
    """A model directory that was found but refused; ``reason`` is the one-line cause."""

    name: str
    version: str
    reason: str

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


class ModelRepository:
    """The loaded models by name and version; the highest version serves a bare name.

    ``failures`` lists the model directories that were found but refused at load time (only
    ever non-empty when start-up is not strict), so that readiness and metrics can say so.
    """

    def __init__(
        self,
        models: list[LoadedModel],
        default: str | None = None,
        failures: list[LoadFailure] | None = None,
    ) -> None:
        self.failures: list[LoadFailure] = list(failures or [])
        self._models: dict[str, dict[str, LoadedModel]] = {}
        for model in models:
            self._models.setdefault(model.name, {})[model.version] = model
        if default is not None and default not in self._models:
            raise UnknownModelError(default)
        self.default_name: str | None = default if default is not None else self._implicit_default()

    def _implicit_default(self) -> str | None:
        """The headline model when it is loaded, else the first name (stable across restarts)."""
        if PREFERRED_DEFAULT in self._models:
            return PREFERRED_DEFAULT
        return next(iter(sorted(self._models)), None)

    def __len__(self) -> int:
        return sum(len(v) for v in self._models.values())

    def __iter__(self) -> Iterator[LoadedModel]:
        for name in sorted(self._models):
            versions = self._models[name]
            for version in sorted(versions, key=_version_key):
                yield versions[version]

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[str]:
        if name not in self._models:
            raise UnknownModelError(name)
        return sorted(self._models[name], key=_version_key)

    def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The model ``name`` at ``version`` (the highest when None); UnknownModelError else."""
        versions = self._models.get(name)
        if versions is None:
            raise UnknownModelError(name)
        if version is None:
            return versions[max(versions, key=_version_key)]
        if version not in versions:
            raise UnknownModelError(name, version)
        return versions[version]

    def default(self) -> LoadedModel:
        """The model that ``/v1/predict`` serves."""
        if self.default_name is None:
            raise UnknownModelError("(default)")
        return self.get(self.default_name)

    def load_status(self) -> list[tuple[str, str, bool]]:
        """``(name, version, failed)`` of every model directory found at start-up."""
        status = [(m.name, m.version, False) for m in self]
        status += [(f.name, f.version, True) for f in self.failures]
        return sorted(status)


def discover(root: Path) -> list[Path]:
    """Candidate model directories ``root/<name>/<version>/`` with a numeric version."""
    found = []
    for name_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for version_dir in sorted(p for p in name_dir.iterdir() if p.is_dir()):
            if version_dir.name.isdigit():
                found.append(version_dir)
    return found


def latest_version_dir(root: Path, name: str) -> Path:
    """``root/<name>/<highest numeric version>/``: the version served when none is named."""
    found = highest_version_dir(root / name)
    if found is None:
        raise UnknownModelError(name)
    return found


def load_repository(
    root: Path,
    config: SessionConfig,
    default: str | None = None,
    warmup_rows: int = 64,
    strict: bool = False,
) -> ModelRepository:
    """Load every model under ``root``, refusing broken ones with a log line, and warm up.

    Raises ModelLoadError when nothing at all can be served, or, when ``strict``, when any
    model directory was refused (after trying them all, so the log names every one); and
    UnknownModelError when the configured default model is not among the loaded ones.
    """
    from service.runtime.inference import warm_up  # inference imports this module

    models: list[LoadedModel] = []
    failures: list[LoadFailure] = []
    for model_dir in discover(root):
        label = f"{model_dir.parent.name}/{model_dir.name}"
        try:
            model = load_model(model_dir, config)
            warm_up(model, warmup_rows)
        except ModelLoadError as exc:
            log.error("refusing model %s: %s", label, exc)
            failures.append(LoadFailure(model_dir.parent.name, model_dir.name, str(exc)))
            continue
        log.info(
            "loaded model %s (family %s, %d input columns)",
            label,
            model.manifest.family,
            len(model.sources),
        )
        models.append(model)
    if not models:
        raise ModelLoadError(f"no servable model under {root}")
    if strict and failures:
        refused = ", ".join(f.label for f in failures)
        raise ModelLoadError(
            f"strict start-up: {len(failures)} model version(s) failed to load ({refused})"
        )
    return ModelRepository(models, default, failures)


PUBLIC_VOCABULARY_LIMIT = 1000
"""Above this many entries a vocabulary holds ids (users, videos, authors): never shown."""


def example_columns(model: LoadedModel, n: int, public: bool = False) -> dict[str, np.ndarray]:
    """Plausible raw columns for ``n`` rows (known vocabulary values, mean-ish numbers).

    Used for the warm-up runs and for the OpenAPI examples: a request built from the
    manifest alone, so it exercises every lookup and transform the real traffic will.
    ``public`` (the OpenAPI examples) shows no value of an id vocabulary (one over
    PUBLIC_VOCABULARY_LIMIT entries): those columns hold -1, an unknown id.
    """
    columns: dict[str, np.ndarray] = {}
    for spec in model.manifest.features:
        if spec.source in columns:
            continue
        if isinstance(spec, CategoricalFeature):
            vocab = np.asarray(spec.vocabulary)
            if public and vocab.size > PUBLIC_VOCABULARY_LIMIT and spec.transform == "identity":
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
