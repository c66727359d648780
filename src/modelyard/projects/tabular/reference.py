"""The tabular reference profile: training rows, described and predicted as the server logs them.

At most :data:`~modelyard.core.reference_profile.MAX_ROWS` rows of the prepared training split
(the rows the model was fitted on), drawn uniformly without replacement with the run's seed.
Each row is validated by the served request model and valued by the serving adapter's own
prediction path (:mod:`..export_adapter`), written as the prediction log writes it
(:func:`modelyard.serving.log_json.to_json`) and read back with :func:`.drift_features.log_rows`,
exactly as the monitor reads logged requests; the true target is added as the target column.
"""

import json
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from modelyard.core.errors import DataError
from modelyard.core.reference_profile import MAX_ROWS, ReferenceProfile, column_data
from modelyard.projects.tabular.drift_features import columns, log_rows, with_target
from modelyard.projects.tabular.schema import TableSchema
from modelyard.projects.tabular.serving import TabularServing
from modelyard.projects.tabular.table_io import feature_columns
from modelyard.serving.log_json import to_json

#: Rows valued per call: bounded memory, whatever the request limit.
_BATCH = 1000


def reference_profile(
    train: pd.DataFrame,
    schema: TableSchema,
    adapter: TabularServing,
    seed: int,
    rows: int = MAX_ROWS,
) -> ReferenceProfile:
    """The profile of ``rows`` rows drawn from the training split ``train``."""
    if train.empty:
        raise DataError("the training split has no rows to draw a reference profile from")
    chosen = np.sort(
        np.random.default_rng(seed).choice(len(train), size=min(rows, len(train)), replace=False)
    )
    sample = train.iloc[chosen]
    features = feature_columns(sample, schema)
    truth = sample[schema.target.name].to_numpy(dtype=np.float64)
    requests, targets = [], []
    for i in range(len(sample)):
        try:
            row = adapter.Row.model_validate({name: values[i] for name, values in features.items()})
        except ValidationError:
            continue  # a training row the API would refuse is no request the server logs
        requests.append(row.model_dump())
        targets.append(float(truth[i]))
    if not requests:
        raise DataError("no training row is a valid request for the served schema")
    predictions = [
        p
        for i in range(0, len(requests), _BATCH)
        for p in adapter.predict_rows(requests[i : i + _BATCH])
    ]
    # row by row: the log truncates a record's JSON beyond a size no valid request reaches
    drift = [
        row
        for request, prediction in zip(requests, predictions, strict=True)
        for row in log_rows(_logged([request]), _logged([prediction]))
    ]
    with_target(drift, schema.target.name, targets)
    specs = columns(schema)
    refused = len(sample) - len(requests)
    return ReferenceProfile(
        family="tabular",
        drawn=(
            f"{len(sample)} of the {len(train)} training rows drawn uniformly without "
            f"replacement (seed {seed})"
            + (f", {refused} of them refused by the request schema and left out" if refused else "")
            + "; predictions by the exported ONNX model through the serving adapter"
        ),
        seed=seed,
        columns=specs,
        data=column_data(drift, specs),
    )


def _logged(value: Any) -> Any:
    """``value`` as the prediction log stores it and the monitor reads it back."""
    return json.loads(to_json(value))
