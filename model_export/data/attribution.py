"""Licence and credit of the KuaiRand data, written beside every model trained on it."""

from __future__ import annotations

from service.manifest import Attribution

KUAIRAND = Attribution(
    dataset="KuaiRand-Pure (standard logs 2022-04-25 to 2022-05-04, with user and video tables)",
    license="CC BY-SA 4.0",
    license_url="https://creativecommons.org/licenses/by-sa/4.0/",
    source_url="https://kuairand.com/",
    citation=(
        "Chongming Gao, Shijun Li, Yuan Zhang, Jiawei Chen, Biao Li, Wenqiang Lei, Peng Jiang "
        "and Xiangnan He. KuaiRand: An Unbiased Sequential Recommendation Dataset with "
        "Randomly Exposed Videos. CIKM 2022."
    ),
    notice=(
        "This model's parameters (embeddings, vocabularies, fitted constants and metrics) are "
        "derived from the KuaiRand dataset and are shared under the same licence, CC BY-SA "
        "4.0. Changes: the logs were filtered to the days above, joined, and used to train "
        "the model; no rows are redistributed in this directory."
    ),
)

LICENSE_TEXT = f"""Data attribution and licence of this model
============================================

The parameters of this model were learnt from, and its manifest contains vocabularies and
statistics derived from, the KuaiRand dataset:

  {KUAIRAND.citation}
  {KUAIRAND.source_url}

Dataset: {KUAIRAND.dataset}

Licence: {KUAIRAND.license} ({KUAIRAND.license_url}).
{KUAIRAND.notice}

You may share and adapt this model, including commercially, provided you give the credit
above, indicate changes, and distribute your contributions under the same licence. The full
licence text is at {KUAIRAND.license_url} and in data/kuairand/LICENSE of this project.
"""
