"""A training run you can read: per-epoch metrics as CSV and JSON next to the checkpoints, and a plot of the curves."""
import csv
import json
import math
import os

from ..io._files import atomic_write

CSV_NAME = "metrics.csv"
JSON_NAME = "metrics.json"
PLOT_NAME = "curves.png"
COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds", "precise_bn")
PLOT_HINT = "install matplotlib to get it: pip install 'excite[plot]'"


def _atomic_text(path, write):
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        write(f)


def _plain(value):
    # JSON has no NaN/inf: an epoch cut short reports null
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_metrics(out, history):
    """Write ``metrics.csv`` and ``metrics.json`` (one row per epoch) into ``out``; returns their paths."""
    csv_path, json_path = os.path.join(out, CSV_NAME), os.path.join(out, JSON_NAME)

    def write_csv(f):
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in COLUMNS})

    _atomic_text(csv_path, write_csv)
    _atomic_text(json_path, lambda f: json.dump([{k: _plain(v) for k, v in row.items()} for row in history], f,
                                                indent=1))
    return csv_path, json_path


def read_metrics_csv(path):
    """The rows of a ``metrics.csv`` with numbers as floats (ints for ``epoch``)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key, value in row.items():
            if key == "epoch":
                row[key] = int(value)
            elif key == "precise_bn":
                row[key] = value == "True"
            else:
                row[key] = float(value) if value not in ("", None) else None
    return rows


def matplotlib_available():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_curves(out, history, title=""):
    """Draw loss and accuracy (train vs val) per epoch into ``out/curves.png``; None without matplotlib."""
    if not history or not matplotlib_available():
        return None
    from matplotlib.figure import Figure  # not pyplot: no display, no global figure state

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(9, 3.6), dpi=100)
    loss_ax, acc_ax = figure.subplots(1, 2)
    for ax, key, label in ((loss_ax, "loss", "loss"), (acc_ax, "accuracy", "accuracy (%)")):
        scale = 100 if key == "accuracy" else 1
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [row[f"{split}_{key}"] for row in history]
            ax.plot(epochs, [scale * v if v is not None else math.nan for v in values], style, markersize=3,
                    label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = os.path.join(out, PLOT_NAME)
    _atomic_binary(path, figure)
    return path


def _atomic_binary(path, figure):
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp.png")
    try:
        figure.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
