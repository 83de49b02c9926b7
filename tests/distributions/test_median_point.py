"""A median point (``"point": "median"`` in a manifest): against scipy, through the batch's
narrowed rows, the post-processor's shortcut and the manifest."""

from __future__ import annotations

import json

import numpy as np
import pydantic
import pytest

from service.distributions import EGM, Histogram, get_family
from service.distributions.points import with_point
from service.manifest import Manifest
from service.runtime.postprocess import summarize
from service.runtime.prediction import PredictOptions
from tests.distributions.test_egm import Reference, random_params
from tests.support import MODELS


@pytest.mark.parametrize("atom", [False, True], ids=["no-atom", "atom"])
def test_median_point_is_scipys_median(atom: bool) -> None:
    params = random_params(12, seed=11, p0=atom)
    if atom:
        # the atom alone holds the median, or nearly; the other masses scaled to match
        p0 = params["p0"]
        new = np.array([0.5, 0.7, 0.49])
        params["weights"][:3] *= ((1.0 - new) / (1.0 - p0[:3]))[:, None]
        p0[:3] = new
    dist = with_point(EGM, "median").from_params(params)
    want = [Reference(params, i).ppf(0.5) for i in range(12)]
    np.testing.assert_allclose(dist.point(), want, rtol=1e-9, atol=1e-12)
    # the median, not the family's own point nor the mean
    plain = EGM.from_params(params)
    assert not np.allclose(dist.point(), plain.point())
    assert not np.allclose(dist.point(), plain.mean())


def test_the_rule_is_kept_by_narrowed_rows_and_leaves_the_rest_alone() -> None:
    params = random_params(9, seed=3, p0=True)
    median = with_point(EGM, "median")
    dist = median.from_params(params)
    part = dist.take(np.array([7, 2, 2]))
    assert type(part) is median
    np.testing.assert_array_equal(part.point(), dist.point()[[7, 2, 2]])
    plain = EGM.from_params(params)
    for name in ("mean", "stddev", "params"):
        got, want = getattr(dist, name)(), getattr(plain, name)()
        if isinstance(want, dict):
            assert got.keys() == want.keys()
            for key in want:
                np.testing.assert_array_equal(got[key], want[key])
        else:
            np.testing.assert_array_equal(got, want)
    # one class per family, and "model" is the family itself
    assert with_point(EGM, "median") is median
    assert with_point(EGM, "model") is EGM
    assert with_point(Histogram, "median") is not median
    assert median.family == "egm" and get_family("egm") is EGM


@pytest.mark.parametrize("levels", [None, [0.5], [0.1, 0.5, 0.9], [0.25, 0.75]])
def test_a_requested_median_answers_the_point_to_the_bit(levels: list[float] | None) -> None:
    """The point is read off the request's own 0.5 quantile when it asks for one (one
    search, not two); the answer is the same bits as the point's own search."""
    params = random_params(40, seed=5, p0=True)
    dist = with_point(EGM, "median").from_params(params)
    searches = []
    family_icdf = EGM.icdf

    def counted(self: EGM, levels: object) -> np.ndarray:
        searches.append(levels)
        return family_icdf(self, levels)

    options = PredictOptions.create(quantiles=levels)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EGM, "icdf", counted)
        got = summarize(dist, options, 3.0)
    assert len(searches) == (2 if levels is not None and 0.5 not in levels else 1)
    own = with_point(EGM, "median").from_params(params).point()
    np.testing.assert_array_equal(got.point, own)
    if levels is not None and 0.5 in levels:
        assert got.quantiles is not None
        np.testing.assert_array_equal(got.point, got.quantiles[:, levels.index(0.5)])


def _manifest_doc(version: str) -> dict[str, object]:
    return json.loads((MODELS / "egmn" / version / "manifest.json").read_text())


def test_manifest_point_defaults_to_the_model_and_is_left_out_then() -> None:
    doc = _manifest_doc("2")
    assert "point" not in doc
    manifest = Manifest.model_validate(doc)
    assert manifest.point == "model"
    assert "point" not in json.loads(manifest.to_json())
    median = Manifest.model_validate({**doc, "point": "median"})
    assert json.loads(median.to_json())["point"] == "median"
    with pytest.raises(pydantic.ValidationError, match="point"):
        Manifest.model_validate({**doc, "point": "mode"})
