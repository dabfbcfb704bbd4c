"""Spectrum results as plain JSON records: what the monitor and the command
line write, and what the plots read.

A record is a dict, written as one JSON file (no NumPy archives):

    {"epoch": 5,                      # 1-based; absent for a saved model
     "seconds": 12.3,                 # time to compute the record
     "layers": {
        "all": {                      # "all", a layer name, or names joined by "+"
           "curvature": "hessian", "size": 271098, "samples": 1024,
           "eigenvalues": [...], "residuals": [...], "iterations": 31,
           "converged": true,
           "trace": {"value": ..., "standard_error": ..., "probes": 99,
                     "method": "hutch++"},
           "density": {"grid": [...], "density": [...], "sigma": ...,
                       "steps": 80, "probes": 1, "products": 80,
                       "nodes": [[...]], "weights": [[...]]}}}}

A part that was not computed is absent. Non-finite numbers are `null`.
"""

import json
import math
import os
import re

import numpy as np

_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.json$")


def spectrum_record(results, **fields):
    """The record of `results` (a dict: layer -> `HessianSpectrumResult`).

    Args:
        results: Dict mapping the measured weights' name to a
            `HessianSpectrumResult`.
        **fields: Other top-level entries (`epoch`, `seconds`, ...).
    """
    layers = {}
    for name, result in results.items():
        entry = {}
        parts = [p for p in (result.eigenvalues, result.trace, result.density)
                 if p is not None]
        if parts:
            entry.update(curvature=parts[0].curvature, size=parts[0].size,
                         samples=parts[0].samples)
        if result.eigenvalues is not None:
            eig = result.eigenvalues
            entry.update(eigenvalues=eig.values, residuals=eig.residuals,
                         iterations=eig.iterations, converged=eig.converged)
        if result.trace is not None:
            trace = result.trace
            entry["trace"] = {"value": trace.value,
                              "standard_error": trace.standard_error,
                              "probes": trace.probes, "method": trace.method}
        if result.density is not None:
            density = result.density
            entry["density"] = {
                "grid": density.grid, "density": density.density,
                "sigma": density.sigma, "steps": density.steps,
                "probes": density.probes, "products": density.products,
                "nodes": list(density.nodes), "weights": list(density.weights)}
        layers[name] = entry
    return dict(fields, layers=layers)


def plain(value):
    """JSON-ready: arrays to lists, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_spectrum_record(path, record):
    """Writes `record` to `path` as JSON, atomically (a rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(plain(record), f, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def epoch_record_path(directory, epoch):
    """`directory/epoch_0005.json` for (1-based) epoch 5."""
    return os.path.join(os.fspath(directory), f"epoch_{int(epoch):04d}.json")


def record_epochs(directory):
    """The epochs (1-based, sorted) of the records in `directory`."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(m.group(1)) for m in map(_EPOCH_FILE.match,
                                               os.listdir(directory)) if m)


def load_spectrum_records(directory):
    """The records a `HessianSpectrumMonitor` wrote to `directory`, by epoch.

    Returns:
        A list of record dicts, sorted by `epoch`.

    Raises:
        ValueError: when a record file cannot be read.
    """
    records = []
    for epoch in record_epochs(directory):
        path = epoch_record_path(directory, epoch)
        try:
            with open(path) as f:
                records.append(json.load(f))
        except (OSError, ValueError) as error:
            raise ValueError(
                f"Argument `directory` holds a spectrum record that cannot be "
                f"read: {path} ({error}). Received: directory={directory!r}"
            ) from None
    return records


def eigenvalue_trajectories(records):
    """Per layer, the epochs and the top eigenvalues of each record.

    Returns:
        Dict: layer -> `(epochs, values)`, `values` a float array
        (records, k) padded with NaN.
    """
    out = {}
    for record in records:
        for layer, entry in record.get("layers", {}).items():
            if "eigenvalues" in entry:
                out.setdefault(layer, []).append(
                    (record.get("epoch"), entry["eigenvalues"]))
    trajectories = {}
    for layer, rows in out.items():
        width = max(len(values) for _, values in rows)
        values = np.full((len(rows), width), np.nan)
        for i, (_, row) in enumerate(rows):
            values[i, :len(row)] = [np.nan if v is None else v for v in row]
        trajectories[layer] = (np.array([e for e, _ in rows], dtype=float),
                               values)
    return trajectories
