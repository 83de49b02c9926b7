"""The model repository: finds every ``<root>/<name>/<version>/`` and indexes what loads.

Loading, checking and warming up a version are the model's own
(:meth:`~service.runtime.model.ModelRuntime.load`); a version that is refused gets one log
line. What follows is the caller's policy: with ``strict`` (the service's default,
``WATCHTIME_STRICT_MODELS``) any refusal stops start-up, as Triton's ``--exit-on-error``
does, so that a broken version is never served around in silence; without it the other
models serve and the repository keeps the refusals (``failures``) for readiness and metrics.

The index changes while the service runs (:class:`ModelControl` loads and unloads versions,
for the control modes of ``WATCHTIME_MODEL_CONTROL``): every change builds a new
``name -> version -> model`` mapping and publishes it with one assignment, so a reader sees
the index before or after a change, never half of one, and a request that has resolved its
model keeps that object (and its batcher) to the end whatever is published meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import metrics
from service.errors import ModelLoadError, UnknownModelError
from service.runtime.model import ModelRuntime, SessionConfig
from service.versions import highest_version_dir, version_dirs, version_key

log = logging.getLogger("watchtime.repository")

#: The model ``/v1/predict`` serves when WATCHTIME_DEFAULT_MODEL is unset and it is loaded:
#: baselines served beside it must not take over the bare route by name order.
PREFERRED_DEFAULT = "egmn"


@dataclass(frozen=True)
class LoadFailure:
    """A model directory that was found but refused; ``reason`` is the one-line cause."""

    name: str
    version: str
    reason: str

    @property
    def label(self) -> str:
        return f"{self.name}/{self.version}"


Index = dict[str, dict[str, ModelRuntime]]


class ModelRepository:
    """The loaded models by name and version; the highest version serves a bare name.

    ``failures`` lists the model directories that were found but refused and are not served
    (only ever non-empty when start-up is not strict, or after a refused reload).
    """

    def __init__(
        self,
        models: list[ModelRuntime],
        default: str | None = None,
        failures: list[LoadFailure] | None = None,
    ) -> None:
        self._lock = threading.Lock()  # writers only: readers take the published mapping
        self._failures: dict[tuple[str, str], LoadFailure] = {
            (f.name, f.version): f for f in failures or []
        }
        index: Index = {}
        for model in models:
            index.setdefault(model.name, {})[model.version] = model
        self._models: Index = index
        self._configured_default: str | None = None
        self.default_name: str | None = None
        self.set_default(default)

    def set_default(self, default: str | None, require_loaded: bool = True) -> None:
        """The model of ``/v1/predict`` (None: the implicit rule); UnknownModelError if a named
        one is not loaded (with ``require_loaded``; else it is 404 until it loads)."""
        if default is not None and require_loaded and default not in self._models:
            raise UnknownModelError(default)
        self._configured_default = default
        self.default_name = default if default is not None else self._implicit_default()

    def _implicit_default(self) -> str | None:
        """The headline model when it is loaded, else the first name (stable across restarts)."""
        if PREFERRED_DEFAULT in self._models:
            return PREFERRED_DEFAULT
        return next(iter(sorted(self._models)), None)

    def __len__(self) -> int:
        return sum(len(v) for v in self._models.values())

    def __iter__(self) -> Iterator[ModelRuntime]:
        index = self._models
        for name in sorted(index):
            versions = index[name]
            for version in sorted(versions, key=version_key):
                yield versions[version]

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[str]:
        versions = self._models.get(name)
        if versions is None:
            raise UnknownModelError(name)
        return sorted(versions, key=version_key)

    def get(self, name: str, version: str | None = None) -> ModelRuntime:
        """The model ``name`` at ``version`` (the highest when None); UnknownModelError else."""
        versions = self._models.get(name)
        if versions is None:
            raise UnknownModelError(name)
        if version is None:
            return versions[max(versions, key=version_key)]
        if version not in versions:
            raise UnknownModelError(name, version)
        return versions[version]

    def find(self, name: str, version: str) -> ModelRuntime | None:
        """The loaded model ``name/version``, or None."""
        return self._models.get(name, {}).get(version)

    def default(self) -> ModelRuntime:
        """The model that ``/v1/predict`` serves."""
        if self.default_name is None:
            raise UnknownModelError("(default)")
        return self.get(self.default_name)

    # ----------------------------------------------------------------- changes

    def publish(
        self,
        add: Iterable[ModelRuntime] = (),
        remove: Iterable[tuple[str, str]] = (),
    ) -> list[ModelRuntime]:
        """Serve ``add`` and stop serving the ``(name, version)`` pairs of ``remove``, in one
        step; the models taken out of the index (replaced or removed) are returned."""
        with self._lock:
            index: Index = {name: dict(versions) for name, versions in self._models.items()}
            gone: list[ModelRuntime] = []
            for name, version in remove:
                versions = index.get(name, {})
                old = versions.pop(version, None)
                if old is not None:
                    gone.append(old)
                if not versions:
                    index.pop(name, None)
            for model in add:
                versions = index.setdefault(model.name, {})
                old = versions.get(model.version)
                if old is not None and old is not model:
                    gone.append(old)
                versions[model.version] = model
                self._failures.pop((model.name, model.version), None)
            self._models = index  # the one step every reader sees
            if self._configured_default is None:
                self.default_name = self._implicit_default()
        return gone

    @property
    def failures(self) -> list[LoadFailure]:
        """The versions found but refused, and not served."""
        return sorted(self._failures.values(), key=lambda f: (f.name, version_key(f.version)))

    def record_failure(self, failure: LoadFailure) -> None:
        with self._lock:
            self._failures[(failure.name, failure.version)] = failure

    def clear_failure(self, name: str, version: str) -> bool:
        """Forget a refusal (its directory is gone); whether there was one."""
        with self._lock:
            return self._failures.pop((name, version), None) is not None

    def load_status(self) -> list[tuple[str, str, bool]]:
        """``(name, version, failed)`` of every model directory loaded or refused."""
        status = [(m.name, m.version, False) for m in self]
        status += [(f.name, f.version, True) for f in self.failures]
        return sorted(status)


def discover(root: Path) -> list[Path]:
    """Candidate model directories ``root/<name>/<version>/`` with a numeric version."""
    if not root.is_dir():
        return []
    return [
        v
        for name_dir in sorted(p for p in root.iterdir() if p.is_dir())
        for v in version_dirs(name_dir)
    ]


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
    control = ModelControl(root, config, warmup_rows)
    control.load_initial(None, strict=strict, require_one=True)
    control.repository.set_default(default)
    return control.repository


# --------------------------------------------------------------------------- live changes

#: Index states, as Triton's repository index names them.
READY, UNAVAILABLE, LOADING = "READY", "UNAVAILABLE", "LOADING"

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(model_dir: Path) -> Fingerprint:
    """Every file under ``model_dir`` with its size and modification time: a version whose
    fingerprint changed was rewritten (or was still being written when it was last seen)."""
    entries = []
    for path in sorted(model_dir.rglob("*")):
        try:
            stat = path.stat()
        except OSError:  # removed while listed
            continue
        if path.is_file():
            entries.append((str(path.relative_to(model_dir)), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


@dataclass
class SyncResult:
    """What one pass over the repository changed."""

    loaded: list[str] = field(default_factory=list)
    refused: list[LoadFailure] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: the models taken out of the index: their batchers finish what they hold, then stop
    retired: list[ModelRuntime] = field(default_factory=list)
    #: seconds each loaded version took to load, check and warm up (off the serving path)
    load_s: dict[str, float] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.loaded or self.removed or self.retired)


class ModelControl:
    """Loads, reloads and unloads versions of the repository under ``root`` while it serves.

    Every method blocks (onnxruntime sessions are built and warmed up here) and must run off
    the event loop; they run one at a time. A version is published only once it has loaded
    and warmed up, so the serving path never waits for a load. A version that is refused is
    logged, counted (``watchtime_model_load_failures_total``), kept out of the index, and the
    version it would have replaced keeps serving; it is tried again once its files change
    (a copy that was still being written) or on an explicit load.
    """

    def __init__(
        self,
        root: Path,
        config: SessionConfig,
        warmup_rows: int = 64,
        repository: ModelRepository | None = None,
    ) -> None:
        self.root = root
        self.config = config
        self.warmup_rows = warmup_rows
        self.repository = repository if repository is not None else ModelRepository([])
        self._lock = threading.Lock()  # one change at a time
        self._state_lock = threading.Lock()  # the bookkeeping below, read by the index
        self._loaded_fp: dict[tuple[str, str], Fingerprint] = {
            (m.name, m.version): fingerprint(m.path) for m in self.repository
        }
        self._refused_fp: dict[tuple[str, str], Fingerprint] = {}
        self._loading: set[tuple[str, str]] = set()
        self._unloaded: set[tuple[str, str]] = set()
        self._retired: list[ModelRuntime] = []

    def take_retired(self) -> list[ModelRuntime]:
        """The models taken out of the index since the last call (their batchers retire)."""
        with self._state_lock:
            retired, self._retired = self._retired, []
        return retired

    # ----------------------------------------------------------------- the directory

    def found(self, names: set[str] | None = None) -> dict[tuple[str, str], Path]:
        """The version directories on disk (of ``names`` only, when given)."""
        return {
            (d.parent.name, d.name): d
            for d in discover(self.root)
            if names is None or d.parent.name in names
        }

    # ----------------------------------------------------------------- changes

    def load_initial(self, names: set[str] | None, *, strict: bool, require_one: bool) -> None:
        """Start-up: load every version (of ``names``), with the start-up rules.

        ModelLoadError when nothing can be served (with ``require_one``), or with ``strict``
        when any version was refused (after trying them all).
        """
        result = self.sync(names)
        if require_one and not len(self.repository):
            raise ModelLoadError(f"no servable model under {self.root}")
        if strict and result.refused:
            refused = ", ".join(f.label for f in result.refused)
            raise ModelLoadError(
                f"strict start-up: {len(result.refused)} model version(s) failed to load "
                f"({refused})"
            )

    def sync(self, names: set[str] | None = None, *, retry: bool = False) -> SyncResult:
        """Bring the index in line with the disk: load the versions that are new or whose
        files changed, unload those whose directory is gone; all published in one step.

        ``names`` limits the pass to those models; ``retry`` tries refused versions again
        even when their files did not change. A version that fails keeps its predecessor.
        """
        with self._lock:
            return self._sync(names, retry)

    def _sync(self, names: set[str] | None, retry: bool) -> SyncResult:
        if not self.root.is_dir():  # unmounted, renamed: not a reason to unload everything
            raise ModelLoadError(f"the model repository {self.root} is not a directory")
        result = SyncResult()
        found = self.found(names)
        fresh: list[ModelRuntime] = []
        for key, path in found.items():
            seen = fingerprint(path)
            loaded = self.repository.find(*key) is not None
            if loaded and self._loaded_fp.get(key) == seen:
                continue
            if not retry and self._refused_fp.get(key) == seen:
                continue  # refused as it is now: tried again once its files change
            model = self._load(key, path, seen, result)
            if model is not None:
                fresh.append(model)
        gone = [
            (m.name, m.version)
            for m in self.repository
            if (names is None or m.name in names) and (m.name, m.version) not in found
        ]
        for name, version in list(self._refused_fp):
            if (names is None or name in names) and (name, version) not in found:
                self._forget_refusal(name, version)
        result.retired = self.repository.publish(fresh, gone)
        with self._state_lock:
            self._retired += result.retired
            for key in gone:
                self._loaded_fp.pop(key, None)
                self._unloaded.discard(key)
        for model in fresh:
            log.debug("serving model %s/%s", model.name, model.version)
        for name, version in gone:
            result.removed.append(f"{name}/{version}")
            log.info("unloaded model %s/%s: its directory is gone", name, version)
        self._update_info(fresh, result.retired)
        return result

    def _load(
        self, key: tuple[str, str], path: Path, seen: Fingerprint, result: SyncResult
    ) -> ModelRuntime | None:
        """One version loaded, checked and warmed up; None (logged, counted) if refused."""
        label = f"{key[0]}/{key[1]}"
        with self._state_lock:
            self._loading.add(key)
        started = time.perf_counter()
        try:
            model = ModelRuntime.load(path, self.config)
            model.warm_up(self.warmup_rows)
        except ModelLoadError as exc:
            log.error("refusing model %s: %s", label, exc)
            failure = LoadFailure(key[0], key[1], str(exc))
            result.refused.append(failure)
            metrics.MODEL_LOAD_FAILURES.labels(*key).inc()
            metrics.MODEL_REFUSED.labels(*key).set(0 if self.repository.find(*key) else 1)
            with self._state_lock:
                self._refused_fp[key] = seen
            if self.repository.find(*key) is None:
                self.repository.record_failure(failure)
            return None
        finally:
            with self._state_lock:
                self._loading.discard(key)
        elapsed = time.perf_counter() - started
        log.info(
            "loaded model %s (family %s, %d input columns) in %.2f s",
            label,
            model.manifest.family,
            len(model.sources),
            elapsed,
        )
        result.loaded.append(label)
        result.load_s[label] = elapsed
        metrics.MODEL_REFUSED.labels(*key).set(0)
        with self._state_lock:
            self._loaded_fp[key] = seen
            self._refused_fp.pop(key, None)
            self._unloaded.discard(key)
        return model

    def _forget_refusal(self, name: str, version: str) -> None:
        with self._state_lock:
            self._refused_fp.pop((name, version), None)
        self.repository.clear_failure(name, version)
        metrics.MODEL_REFUSED.labels(name, version).set(0)

    def load(self, name: str) -> SyncResult:
        """Load (or reload) every version of ``name`` on disk; versions whose directory is
        gone are unloaded. UnknownModelError when the repository holds no such model;
        ModelLoadError (after publishing the versions that did load) when one is refused."""
        with self._lock:
            if not self.found({name}):
                raise UnknownModelError(name)
            result = self._sync({name}, retry=True)
        if result.refused:
            reasons = "; ".join(f"{f.label}: {f.reason}" for f in result.refused)
            raise ModelLoadError(f"failed to load {reasons}")
        return result

    def unload(self, name: str) -> SyncResult:
        """Stop serving every version of ``name``; UnknownModelError when it is neither
        loaded nor in the repository."""
        with self._lock:
            loaded = [(m.name, m.version) for m in self.repository if m.name == name]
            if not loaded and not self.found({name}):
                raise UnknownModelError(name)
            result = SyncResult(retired=self.repository.publish((), loaded))
            with self._state_lock:
                self._retired += result.retired
                for key in loaded:
                    self._loaded_fp.pop(key, None)
                    self._unloaded.add(key)
            for key in list(self._refused_fp):
                if key[0] == name:
                    self._forget_refusal(*key)
            result.removed = [f"{n}/{v}" for n, v in loaded]
            for label in result.removed:
                log.info("unloaded model %s on request", label)
            self._update_info([], result.retired)
        return result

    @staticmethod
    def _update_info(fresh: list[ModelRuntime], retired: list[ModelRuntime]) -> None:
        """``watchtime_model_info``: 1 for each version served, 0 once it is not."""
        served = {(m.name, m.version, m.manifest.family) for m in fresh}
        for m in retired:
            labels = (m.name, m.version, m.manifest.family)
            if labels not in served:
                metrics.MODEL_INFO.labels(*labels).set(0)
        metrics.register_models(served)

    # ----------------------------------------------------------------- the index

    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Every version loaded or on disk, with Triton's state (READY, UNAVAILABLE,
        LOADING) and the reason for a version that does not serve."""
        with self._state_lock:
            loading = set(self._loading)
            unloaded = set(self._unloaded)
        failures = {(f.name, f.version): f.reason for f in self.repository.failures}
        entries: dict[tuple[str, str], tuple[str, str]] = {}
        for key in self.found():
            if key in loading:
                entries[key] = (LOADING, "")
            elif key in failures:
                entries[key] = (UNAVAILABLE, failures[key])
            elif key in unloaded:
                entries[key] = (UNAVAILABLE, "unloaded")
            else:
                entries[key] = (UNAVAILABLE, "not loaded")
        for model in self.repository:
            entries[(model.name, model.version)] = (READY, "")
        rows = [
            {"name": name, "version": version, "state": state, "reason": reason}
            for (name, version), (state, reason) in entries.items()
            if state == READY or not ready_only
        ]
        return sorted(rows, key=lambda r: (r["name"], version_key(r["version"])))
