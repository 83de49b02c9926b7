"""The data layer: the KuaiRand slice, its time split, the feature schema and synthetic logs.

The loading API is re-exported here because the load generator and the API tests read the
test day through ``model_export.data`` in environments without torch: this package's
``__init__`` imports numpy and pandas only (the torch tensors live in
``model_export.data.prepared``, imported by name where training needs them).
"""

from model_export.data.kuairand import (
    DEFAULT_DATA_DIR,
    LABEL,
    Split,
    labels,
    load_joined,
    raw_columns,
    split_by_day,
)

__all__ = [
    "DEFAULT_DATA_DIR",
    "LABEL",
    "Split",
    "labels",
    "load_joined",
    "raw_columns",
    "split_by_day",
]
