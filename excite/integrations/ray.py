"""Batch inference over large image sets on Ray Data: `ExcitePredictor` for ``Dataset.map_batches``, and the
pipeline behind ``excite predict SOURCE --ray DIR_OR_GLOB --out predictions.parquet``.

    import ray
    from excite.integrations.ray import ExcitePredictor

    ds = ray.data.from_items([{"path": p} for p in paths])          # or ray.data.read_images(root, include_paths=True)
    predictions = ds.map_batches(ExcitePredictor, fn_constructor_kwargs={"model": "best.pth"},
                                 concurrency=4, batch_size=32)

Each Ray worker loads the model once (an excite or PyTorch checkpoint path, or a registry name with
``weights=``), prepares images with the model's own preprocessing (that of its weights or training run)
and runs it compiled (`excite.compile`). A row whose image cannot be read gets an ``error`` and no
prediction; the job goes on. The results equal `excite predict`'s for the same files.
"""
import glob
import os

import numpy as np

from ..errors import ExciteError, InvalidArgumentError

INSTALL_HINT = 'pip install "excite[ray]"'
COLUMNS = ("class", "class_index", "probability", "topk_classes", "topk_indices", "topk_probabilities", "error")


def parquet_schema():
    """The columns of the predictions file (a batch where every row failed must not decide them)."""
    import pyarrow as pa

    return pa.schema([("path", pa.string()), ("class", pa.string()), ("class_index", pa.int64()),
                      ("probability", pa.float64()), ("topk_classes", pa.list_(pa.string())),
                      ("topk_indices", pa.list_(pa.int64())), ("topk_probabilities", pa.list_(pa.float64())),
                      ("error", pa.string())])


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ExciteError(f"batch inference on Ray needs Ray Data: {INSTALL_HINT}") from None
    return ray


class ExcitePredictor:
    """A callable class for ``ray.data.Dataset.map_batches``: top-k classes of each row's image.

    ``model`` is a checkpoint path or a registered model name (then ``weights``, e.g. ``"DEFAULT"``);
    ``model_name`` names the architecture of a bare PyTorch state_dict; ``image_size`` / ``resize_size``
    override the preprocessing. A batch holds a ``path`` column (image files, read here) or an ``image``
    column (decoded [H, W, C] or [H, W] uint8 arrays, as ``ray.data.read_images`` gives; its ``path``
    column, if any, is kept). Returned columns: ``path`` (when given), ``class``, ``class_index``,
    ``probability`` (the top-1), ``topk_classes``, ``topk_indices``, ``topk_probabilities`` (most probable
    first) and ``error`` (None, or why the row's image could not be read: then the others are empty).
    """

    def __init__(self, model, weights=None, topk=5, model_name=None, image_size=None, resize_size=None):
        from ..app.predict import load_inference_model, runner

        if isinstance(topk, bool) or int(topk) != topk or topk < 1:
            raise InvalidArgumentError(f"topk must be a positive integer, got {topk!r}")
        self.loaded = load_inference_model(model, model=model_name, weights=weights, image_size=image_size,
                                           resize_size=resize_size)
        self.transform = self.loaded.preprocessing.transform()
        self.topk = min(int(topk), len(self.loaded.class_names))
        self._runner = runner(self.loaded)  # compiled once per worker, planned once per batch shape
        self._run = self._runner.__enter__()

    def _image(self, batch, i):
        from PIL import Image

        from ..app.predict import open_image

        if "image" not in batch:
            return open_image(str(batch["path"][i]))
        array = np.asarray(batch["image"][i])
        if array.dtype != np.uint8 or array.ndim not in (2, 3):
            raise InvalidArgumentError(f"expected a [H, W, C] uint8 image, got dtype {array.dtype} and "
                                       f"{array.ndim} dims")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        return Image.fromarray(array).convert("RGB")

    def __call__(self, batch):
        import pandas as pd

        from ..app.predict import softmax

        if "path" not in batch and "image" not in batch:
            raise InvalidArgumentError(f"ExcitePredictor needs a 'path' or an 'image' column, got {sorted(batch)}")
        n = len(batch["image"] if "image" in batch else batch["path"])
        errors, inputs, good = [None] * n, [], []
        for i in range(n):
            try:
                inputs.append(np.asarray(self.transform(self._image(batch, i)).data, dtype=np.float32))
                good.append(i)
            except (ExciteError, OSError, ValueError, SyntaxError) as e:  # a bad image is a row, not a dead job
                errors[i] = str(e)
        rows = {name: [None] * n for name in COLUMNS}
        rows["error"] = errors
        if good:
            probs = softmax(self._run(np.stack(inputs)))
            names = self.loaded.class_names
            for i, row in zip(good, probs):
                order = np.argsort(-row, kind="stable")[:self.topk]
                rows["topk_indices"][i] = [int(k) for k in order]
                rows["topk_classes"][i] = [names[k] for k in order]
                rows["topk_probabilities"][i] = [float(row[k]) for k in order]
                rows["class_index"][i], rows["class"][i] = int(order[0]), names[order[0]]
                rows["probability"][i] = float(row[order[0]])
        frame = pd.DataFrame(rows, columns=list(COLUMNS))
        frame["class_index"] = frame["class_index"].astype("Int64")
        frame["probability"] = frame["probability"].astype("Float64")
        if "path" in batch:
            frame.insert(0, "path", [str(p) for p in batch["path"]])
        return frame


# ----- the `excite predict --ray` pipeline ---------------------------------------------------------------
def _image_suffixes():
    from PIL import Image

    Image.init()
    return tuple(suffix.lower() for suffix in Image.registered_extensions())


def list_images(source):
    """The image files (by a suffix Pillow knows) under directory ``source``, recursively, or matching the
    glob ``source``; sorted. Unreadable ones are included: they become error rows."""
    suffixes = _image_suffixes()
    if os.path.isdir(source):
        found = [os.path.join(folder, name) for folder, _, names in os.walk(source) for name in names]
    else:
        found = [p for p in glob.glob(source, recursive=True) if os.path.isfile(p)]
        if not found and not glob.has_magic(source):
            raise InvalidArgumentError(f"no such directory or file: {source}")
    paths = sorted(os.path.abspath(p) for p in found if p.lower().endswith(suffixes))
    if not paths:
        raise InvalidArgumentError(f"no image files in {source} (looked for {', '.join(suffixes[:6])}, ...)")
    return paths


def predict_files(source, images, out, weights=None, topk=5, model_name=None, image_size=None, resize_size=None,
                  batch_size=32, concurrency=None, progress=True):
    """Classify every image under ``images`` (a folder, recursively, or a glob) on Ray Data, writing one row per
    file to the Parquet file ``out``; returns (rows, rows with an error).

    Runs on the Ray cluster of ``RAY_ADDRESS`` if set (or one already initialised), else on a local one.
    ``concurrency`` workers each load the model once (default: one per CPU of the cluster).
    """
    ray = _ray()
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    if not out.lower().endswith(".parquet"):
        raise InvalidArgumentError(f"--out must end in .parquet, got {out}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise InvalidArgumentError(f"no such directory: {os.path.dirname(out)} (for {out})")
    paths = list_images(images)
    # load once here: a bad checkpoint or name fails now, with its own message, not inside every worker
    ExcitePredictor(source, weights=weights, topk=topk, model_name=model_name, image_size=image_size,
                    resize_size=resize_size)
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
    if not progress:
        ray.data.DataContext.get_current().enable_progress_bars = False
    if concurrency is None:
        concurrency = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ds = ray.data.from_items([{"path": p} for p in paths])
    ds = ds.map_batches(ExcitePredictor, batch_size=batch_size, concurrency=concurrency, batch_format="numpy",
                        fn_constructor_kwargs=dict(model=source, weights=weights, topk=topk, model_name=model_name,
                                                   image_size=image_size, resize_size=resize_size))
    tmp, schema = f"{out}.{os.getpid()}.tmp", parquet_schema()
    writer, rows, failed = None, 0, 0
    try:
        with tqdm(total=len(paths), unit="img", desc="predict", disable=not progress or None, dynamic_ncols=True,
                  mininterval=0.5) as bar:
            for frame in ds.iter_batches(batch_format="pandas", batch_size=None):
                table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, schema)
                writer.write_table(table)
                rows += len(frame)
                failed += int(frame["error"].notna().sum())
                bar.update(len(frame))
        writer.close()
        writer = None
        os.replace(tmp, out)
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    return rows, failed
