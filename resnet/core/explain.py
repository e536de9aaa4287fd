"""Explaining a prediction: Grad-CAM heatmaps, penultimate features, nearest training images, the feature map.

Plain functions over a Keras model (the ResNets of ``resnet/core/model.py``, any depth, any precision) and NumPy
arrays; nothing here draws or reads the run cache (``RunStore`` keeps the files: ``map-NNNN.npz`` per
epoch and ``features-NNNN.npz`` beside the checkpoint, see ``resnet/store/runs.py``).

- **Where did the model look?** ``grad_cam`` (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from
  Deep Networks via Gradient-based Localization"): the gradient of a class's logit with respect to a
  stage's feature map, averaged over the map, weights that map's channels; the ReLU of the weighted sum
  is where evidence *for* that class lies. ``overlay`` draws it over the image.
- **Which training images does it find alike?** ``penultimate_features`` (the global-average-pooled
  vector that the last Dense layer reads), ``normalise_rows`` and ``nearest_neighbours`` (cosine
  similarity), worded by ``neighbour_summary``.
- **Where does the image sit among the others?** ``project_2d``: PCA of the evaluation images'
  penultimate features to two dimensions (``feature_map_arrays`` adds the predictions). The trainer
  records one such map per epoch, from the evaluation's own forward pass (``predict_with_features``).

Sub-models (and their compiled ``tf.function`` s) are built once per model and stage and cached beside the
model (a ``WeakKeyDictionary``: they go when the model goes), so every heatmap after the first costs one
forward and backward pass.

Why PCA and not UMAP or t-SNE: see docs/benchmarks.md, section 10. In short, PCA of 10,000 x 2,048
features takes about 2 s on the project's loaded 2-core machine (randomized, seeded), is deterministic
and linear (distances along its axes are honest), and needs nothing beyond NumPy; UMAP took 40-48 s per
fit there (7 minutes for the first, numba compiling) and t-SNE 167 s, with about 500 MB of dependencies
(numba, llvmlite, SciPy, scikit-learn), for a non-linear picture whose cluster sizes and distances
mean nothing.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from data.fashion_mnist import IMAGE_SIZE

LOGITS_LAYER = "logits"  # the last Dense layer, before the softmax
FEATURES_LAYER = "avg_pool"  # global average pooling: the penultimate features
DEFAULT_STAGE = "conv3"
STAGE_HELP = (
    "Grad-CAM needs a feature map with some spatial resolution. At 28x28 pixels the last stage, conv5, "
    "is 1x1, so a heatmap there could not say where anything is; conv4 is 2x2, too coarse to point at a "
    "part of a garment. conv3, at 4x4 (each cell about 7x7 pixels), is the deepest map that still "
    "localises, and deep maps are the class-specific ones. conv2, at 7x7, is finer but its features are "
    "closer to edges and textures, so its heatmaps say less about the class."
)
EPSILON = 1e-12
PROJECTION_SEED = 0
EXACT_PCA_MAX_SIDE = 512  # exact SVD when the data matrix has a side this small, else a randomized solver
PCA_OVERSAMPLING = 10
PCA_POWER_ITERATIONS = 3  # enough: on ResNet-50 features, 2 already match 6 to a correlation of 1 - 1e-10


# --- stages -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    """A stage whose output map Grad-CAM can use: its name (``conv3``), output layer and map side."""

    name: str
    layer: str  # e.g. "conv3_block4_out" (resnet.core.model.stage_outputs)
    size: int  # side of its square map for 28x28 inputs


def _stage_layers(model) -> dict[str, str]:
    """Stage name -> its output layer (the last block's ``_out``), for the model's depth."""
    from resnet.core.model import depth_of, stage_outputs  # imports Keras, which a model to explain has loaded

    return stage_outputs(depth_of(model))


def spatial_stages(model) -> list[Stage]:
    """The stages whose map is larger than 1x1 (at 28x28: conv2 7x7, conv3 4x4, conv4 2x2), shallow first."""
    stages = []
    for name, layer in _stage_layers(model).items():
        size = int(model.get_layer(layer).output.shape[1])
        if size > 1:
            stages.append(Stage(name, layer, size))
    return stages


def _stage(model, stage: str) -> Stage:
    stages = {item.name: item for item in spatial_stages(model)}
    if stage not in stages:
        raise ValueError(f"Grad-CAM needs a stage with a spatial map: one of {', '.join(stages)}, not {stage!r}")
    return stages[stage]


# --- cached sub-models --------------------------------------------------------------------------------------
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {key: built object}
_CACHE_LOCK = threading.Lock()


def _cached(model, key, build):
    """``build()`` once per (model, key); kept as long as the model lives."""
    with _CACHE_LOCK:
        entries = _CACHE.setdefault(model, {})
        if key not in entries:
            entries[key] = build()
        return entries[key]


def _sub_model(model, outputs: list):
    """A model sharing ``model``'s layers and weights, with the outputs of the named layers (or tensors)."""
    import keras  # here: listing and showing runs never import Keras

    tensors = [model.get_layer(output).output if isinstance(output, str) else output for output in outputs]
    with model.distribute_strategy.scope():  # a model trained on several devices predicts on all of them
        return keras.Model(model.inputs, tensors)


def _as_images(images, *, batch: bool) -> np.ndarray:
    """Raw pixels as float32 (n, 28, 28, 1); ``batch`` False: one image (28, 28) or (28, 28, 1)."""
    array = np.asarray(images)
    if not batch:
        array = array[np.newaxis]
    if array.ndim == 3:
        array = array[..., np.newaxis]
    if array.ndim != 4 or array.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1):
        expected = "(28, 28) or (28, 28, 1)" if not batch else "(n, 28, 28) or (n, 28, 28, 1)"
        shape = np.asarray(images).shape
        raise ValueError(f"expected {'an image' if not batch else 'images'} of shape {expected}, got {shape}")
    return array.astype(np.float32)


# --- Grad-CAM -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Heatmap:
    """Grad-CAM for one class: where the stage's map holds evidence for it (max 1; zeros without any)."""

    class_index: int
    probability: float  # the model's softmax probability of this class for the image
    heat: np.ndarray  # (size, size) float32 in [0, 1]
    has_evidence: bool  # False: no positive evidence anywhere (heat is all zeros)
    stage: str


def _score_scale(model) -> float:
    # float16 gradients underflow below 6e-5; the heat is normalised, so scaling the score changes nothing
    # else (bfloat16 has float32's range and needs no scaling).
    return 256.0 if str(getattr(model.dtype_policy, "compute_dtype", "float32")) == "float16" else 1.0


def _grad_cam_function(model, stage: Stage):
    import tensorflow as tf  # here: only explaining needs it

    sub_model = _sub_model(model, [stage.layer, LOGITS_LAYER])
    scale = _score_scale(model)

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE, 1), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ],
        reduce_retracing=True,
    )
    def cam(images, class_indices):
        # One row per class, all of the same image: each row's score depends on its row alone (batch norm
        # in inference mode), so one backward pass gives every class's gradient.
        with tf.GradientTape() as tape:
            maps, logits = sub_model(images, training=False)
            logits = tf.cast(logits, tf.float32)
            scores = tf.gather(logits, class_indices, axis=1, batch_dims=1)
            total = tf.reduce_sum(scores) * scale
        gradients = tape.gradient(total, maps)
        maps = tf.cast(maps, tf.float32)
        gradients = tf.cast(gradients, tf.float32)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # (k, 1, 1, channels)
        cams = tf.reduce_sum(weights * maps, axis=-1)  # (k, size, size)
        return cams, logits

    return cam


def grad_cam(model, image, class_indices: int | Sequence[int], stage: str = DEFAULT_STAGE) -> list[Heatmap]:
    """Grad-CAM heatmaps of ``image`` (raw pixels 0-255, (28, 28) or (28, 28, 1)) for each class asked.

    One forward and one backward pass for all the classes; the logits (before the softmax) are the
    class scores. A class with no positive evidence anywhere gets ``has_evidence`` False and zeros.
    """
    stage_info = _stage(model, stage)
    classes = np.atleast_1d(np.asarray(class_indices, dtype=np.int64))
    units = int(model.get_layer(LOGITS_LAYER).output.shape[-1])
    if classes.ndim != 1 or len(classes) == 0 or classes.min() < 0 or classes.max() >= units:
        raise ValueError(f"class indices must be between 0 and {units - 1}, got {np.asarray(class_indices)!r}")
    function = _cached(model, ("grad_cam", stage_info.layer), lambda: _grad_cam_function(model, stage_info))
    pixels = np.repeat(_as_images(image, batch=False), len(classes), axis=0)
    cams, logits = function(pixels, classes.astype(np.int32))
    cams, logits = np.asarray(cams, dtype=np.float32), np.asarray(logits[0], dtype=np.float64)
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    heatmaps = []
    for row, klass in enumerate(classes):
        heat, evidence = _normalised_heat(cams[row])
        heatmaps.append(
            Heatmap(int(klass), float(probabilities[klass]), heat, evidence, stage_info.name),
        )
    return heatmaps


def _normalised_heat(cam: np.ndarray) -> tuple[np.ndarray, bool]:
    """ReLU, then scaled to max 1; zeros (and False) when nothing is positive or the values are not finite."""
    cam = np.nan_to_num(cam.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    positive = np.maximum(cam, 0.0)
    peak = float(positive.max()) if positive.size else 0.0
    # Relative to the map's own scale: rounding noise on an all-negative map is no evidence.
    if peak <= EPSILON or peak <= 1e-6 * float(np.abs(cam).max()):
        return np.zeros_like(positive, dtype=np.float32), False
    return (positive / peak).astype(np.float32), True


# --- drawing ------------------------------------------------------------------------------------------------
def upsample(heat: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """Bilinear resize of a square map to ``size`` x ``size`` (pixel centres aligned, as ``tf.image.resize``)."""
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"a heatmap is 2-dimensional, got shape {heat.shape}")

    def axis_weights(source: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        position = np.clip((np.arange(size) + 0.5) * source / size - 0.5, 0, source - 1)
        low = np.floor(position).astype(int)
        high = np.minimum(low + 1, source - 1)
        return low, high, (position - low).astype(np.float32)

    top, bottom, down = axis_weights(heat.shape[0])
    left, right, across = axis_weights(heat.shape[1])
    rows = heat[top] * (1 - down)[:, None] + heat[bottom] * down[:, None]
    result = rows[:, left] * (1 - across)[None, :] + rows[:, right] * across[None, :]
    return np.clip(result, 0.0, 1.0).astype(np.float32)


# An inferno-like colour map: dark purple through red to pale yellow (anchor colours of matplotlib's
# "inferno" at 0, 1/4, 1/2, 3/4 and 1), interpolated to 256 entries.
_ANCHORS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32)
COLORMAP = (
    np.stack(
        [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)], axis=1
    )
    .round()
    .astype(np.uint8)
)


def colorize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as RGB uint8 colours of ``COLORMAP`` (shape + (3,))."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    return COLORMAP[np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)]


def overlay(image, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The grey image blended with the colour-mapped, upsampled heat: (28, 28, 3) uint8 RGB."""
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if pixels.ndim != 2 or pixels.shape[0] != pixels.shape[1]:
        raise ValueError(f"expected a square grey image, got shape {np.asarray(image).shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    grey = np.repeat(np.clip(pixels, 0, 255)[..., np.newaxis], 3, axis=-1)
    colours = colorize(upsample(heat, pixels.shape[0])).astype(np.float32)
    return np.clip(np.rint((1 - alpha) * grey + alpha * colours), 0, 255).astype(np.uint8)


# --- features -----------------------------------------------------------------------------------------------
def _features_function(model):
    import tensorflow as tf  # here: only explaining needs it

    sub_model = _sub_model(model, [FEATURES_LAYER])

    @tf.function(input_signature=[tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE, 1), tf.float32)])
    def features(images):
        return tf.cast(sub_model(images, training=False), tf.float32)

    return features


def penultimate_features(model, images, batch_size: int = 256) -> np.ndarray:
    """The global-average-pooled features (layer ``avg_pool``) of raw-pixel images (n, 28, 28[, 1]): (n, d)."""
    pixels = _as_images(images, batch=True)
    function = _cached(model, "features", lambda: _features_function(model))
    width = int(model.get_layer(FEATURES_LAYER).output.shape[-1])
    result = np.empty((len(pixels), width), dtype=np.float32)
    for start in range(0, len(pixels), batch_size):
        result[start : start + batch_size] = np.asarray(function(pixels[start : start + batch_size]))
    return result


def predict_with_features(model, data, *, verbose: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (n, classes) and penultimate features (n, d), both float32, from ONE forward pass.

    ``data`` is what ``model.predict`` takes (a ``tf.data.Dataset`` of batches, or an array). The
    two-output sub-model shares the model's weights and is built once per model.
    """
    sub_model = _cached(model, "with_features", lambda: _sub_model(model, [model.outputs[0], FEATURES_LAYER]))
    probabilities, features = sub_model.predict(data, verbose=verbose)
    return np.asarray(probabilities, dtype=np.float32), np.asarray(features, dtype=np.float32)


def normalise_rows(features: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 norm (float32); an all-zero row stays zero."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.maximum(norms, EPSILON)


_FLOAT32_BANK: list = [None, None]  # [weak reference to the last read-only bank, its float32 copy]
_FLOAT32_BANK_LOCK = threading.Lock()


def _as_float32(bank: np.ndarray) -> np.ndarray:
    """``bank`` in float32; the copy of a read-only bank (``resnet.store.artefacts.feature_bank``'s) is kept for the next
    query, as converting 6,000 x 2,048 float16 values costs several times the product itself."""
    if bank.dtype == np.float32:
        return bank
    if bank.flags.writeable:  # could change under a cached copy
        return bank.astype(np.float32)
    with _FLOAT32_BANK_LOCK:
        reference, converted = _FLOAT32_BANK
        if reference is None or reference() is not bank:
            converted = bank.astype(np.float32)
            _FLOAT32_BANK[:] = [weakref.ref(bank), converted]
        return converted


def nearest_neighbours(bank: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``bank`` (unit vectors, e.g. float16) most cosine-similar to ``query`` (d,).

    Returns (row indices, similarities), most similar first (ties: lower index first).
    """
    bank = np.asarray(bank)
    query = normalise_rows(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]
    if bank.ndim != 2 or bank.shape[1] != len(query):
        raise ValueError(f"bank of shape {bank.shape} and query of length {len(query)} do not match")
    k = max(0, min(int(k), len(bank)))
    similarities = np.clip(_as_float32(bank) @ query, -1.0, 1.0)
    if k == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    candidates = np.argpartition(-similarities, k - 1)[:k] if k < len(bank) else np.arange(len(bank))
    # A stable sort on (similarity desc, index asc) keeps equal similarities in bank order.
    order = candidates[np.lexsort((candidates, -similarities[candidates]))]
    return order.astype(np.int64), similarities[order].astype(np.float32)


def _plural_noun(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch", "x", "z")):
        return f"{noun}es"  # Dress -> Dresses
    return f"{noun}s"


def neighbour_summary(labels_of_neighbours: Sequence[int], class_names: Sequence[str]) -> str:
    """E.g. "6 T-shirt/tops and 2 Shirts": classes by count (then by class order), in words."""
    counts = Counter(int(label) for label in labels_of_neighbours)
    if not counts:
        return "no neighbours"
    parts = [
        f"{count} {class_names[label] if count == 1 else _plural_noun(class_names[label])}"
        for label, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


# --- the 2-D map --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Projection:
    """Points in the plane of the first two principal components, and the variance share of each."""

    coords: np.ndarray  # (n, 2) float32
    explained: tuple[float, float]  # explained-variance ratios of the two axes


def _orthonormal(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.qr(matrix)[0]


def _top_components(centred: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(components (count, d), singular values (count,)) of a centred matrix: exact for small matrices,
    else a randomized range finder with power iterations (Halko, Martinsson and Tropp 2011), seeded."""
    n, d = centred.shape
    if min(n, d) <= EXACT_PCA_MAX_SIDE:
        _, singular, rows = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
        return rows[:count], singular[:count]
    rng = np.random.default_rng(seed)
    width = min(count + PCA_OVERSAMPLING, d)
    basis = _orthonormal(centred @ rng.standard_normal((d, width)).astype(centred.dtype))
    for _ in range(PCA_POWER_ITERATIONS):
        basis = _orthonormal(centred @ _orthonormal(centred.T @ basis))
    small = (basis.T @ centred).astype(np.float64)  # (width, d)
    _, singular, rows = np.linalg.svd(small, full_matrices=False)
    return rows[:count], singular[:count]


def project_2d(features: np.ndarray, seed: int = PROJECTION_SEED) -> Projection:
    """PCA of ``features`` (n, d) to two dimensions; deterministic for the same input and seed.

    Each axis's sign is fixed so that its largest-magnitude loading is positive. ``seed`` matters only
    for large inputs (both sides over 512), where a randomized solver finds the two components.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be 2-dimensional (n, d), got shape {features.shape}")
    n, d = features.shape
    coords = np.zeros((n, 2), dtype=np.float32)
    if n < 2 or d == 0 or not np.isfinite(features).all():
        return Projection(coords, (0.0, 0.0))
    centred = features - features.mean(axis=0, dtype=np.float64).astype(np.float32)
    total = float(np.square(centred).sum(dtype=np.float64))
    if total <= EPSILON:
        return Projection(coords, (0.0, 0.0))
    components, singular = _top_components(centred, min(2, d), seed)
    explained = [0.0, 0.0]
    for axis, (component, value) in enumerate(zip(components, singular, strict=True)):
        component = component * np.sign(component[np.argmax(np.abs(component))] or 1.0)
        coords[:, axis] = centred @ component.astype(np.float32)
        explained[axis] = min(1.0, float(value) ** 2 / total)
    return Projection(coords, (explained[0], explained[1]))


def feature_map_arrays(features: np.ndarray, probabilities: np.ndarray, *, seed: int = PROJECTION_SEED) -> dict:
    """One epoch's map of the evaluation images (without ``indices`` and ``epoch``, which the store adds):
    ``coords`` (n, 2) float32, ``explained`` (2,) float32, ``predicted`` uint8, ``confidence`` float16."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    projection = project_2d(features, seed=seed)
    return {
        "coords": projection.coords,
        "explained": np.asarray(projection.explained, dtype=np.float32),
        "predicted": probabilities.argmax(axis=1).astype(np.uint8),
        "confidence": probabilities.max(axis=1).astype(np.float16),
    }


def feature_map_of(model, images, indices, *, batch_size: int = 500) -> dict:
    """The map of evaluation images from a loaded checkpoint (for runs cached before maps were recorded):
    ``feature_map_arrays`` plus ``indices``; ``images`` are raw pixels (n, 28, 28[, 1])."""
    import tensorflow as tf  # here: only explaining needs it

    pixels = tf.data.Dataset.from_tensor_slices(_as_images(images, batch=True)).batch(batch_size)
    probabilities, features = predict_with_features(model, pixels)
    return {**feature_map_arrays(features, probabilities), "indices": np.asarray(indices, dtype=np.int32)}
