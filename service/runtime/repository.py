"""The model repository: finds every ``<root>/<name>/<version>/`` and indexes what loads.

Loading, checking and warming up a version are the model's own
(:meth:`~service.runtime.model.ModelRuntime.load`); a version that is refused gets one log
line. What follows is the caller's policy: with ``strict`` (the service's default,
``WATCHTIME_STRICT_MODELS``) any refusal stops start-up, as Triton's ``--exit-on-error``
does, so that a broken version is never served around in silence; without it the other
models serve and the repository keeps the refusals (``failures``) for readiness and metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


class ModelRepository:
    """The loaded models by name and version; the highest version serves a bare name.

    ``failures`` lists the model directories that were found but refused at load time (only
    ever non-empty when start-up is not strict), so that readiness and metrics can say so.
    """

    def __init__(
        self,
        models: list[ModelRuntime],
        default: str | None = None,
        failures: list[LoadFailure] | None = None,
    ) -> None:
        self.failures: list[LoadFailure] = list(failures or [])
        self._models: dict[str, dict[str, ModelRuntime]] = {}
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

    def __iter__(self) -> Iterator[ModelRuntime]:
        for name in sorted(self._models):
            versions = self._models[name]
            for version in sorted(versions, key=version_key):
                yield versions[version]

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[str]:
        if name not in self._models:
            raise UnknownModelError(name)
        return sorted(self._models[name], key=version_key)

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

    def default(self) -> ModelRuntime:
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
    models: list[ModelRuntime] = []
    failures: list[LoadFailure] = []
    for model_dir in discover(root):
        label = f"{model_dir.parent.name}/{model_dir.name}"
        try:
            model = ModelRuntime.load(model_dir, config)
            model.warm_up(warmup_rows)
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
