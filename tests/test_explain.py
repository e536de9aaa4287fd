"""Explaining a mistake: Grad-CAM, penultimate features, the nearest-training-image bank and the per-epoch map.

A real tiny run is trained once per session (``support.EXPLAINED``: ResNet-18, 2 epochs on 768 images,
through the trainer, so its map files are the trainer's own) and copied into this module's own cache; a
ResNet-50 is trained for a few steps for the bottleneck blocks. Tests that change a run work on a further
copy of its folder.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from support import EXPLAINED, commit_epoch, copy_run

from resnet.config import TrainConfig
from resnet.core import explain
from resnet.core.model import build_resnet, stage_output_names
from resnet.store import artefacts
from resnet.store.artefacts import BANK_SIZE
from resnet.store.run_state import HISTORY_COLUMNS
from resnet.store.runs import DamagedRun, RunError, RunStore

RUN = EXPLAINED


@pytest.fixture(scope="module")
def explained(trained, dataset_dir, tmp_path_factory):
    """(store, run, model, dataset): a 2-epoch ResNet-18 run trained for real, and its checkpoint loaded."""
    from data.fashion_mnist import load_fashion_mnist

    store = RunStore(tmp_path_factory.mktemp("explain") / "cache")
    run = store.load(copy_run(trained(RUN).path, store.root).name)
    assert run.status == "complete" and run.epochs_done == 2, run
    return store, run, artefacts.load_model(store, run), load_fashion_mnist(dataset_dir)


@pytest.fixture(scope="module")
def resnet50(dataset):
    """A bottleneck ResNet-50 trained for a few steps (2 batches of 64 images)."""
    from resnet.core.model import build_compiled_model

    model = build_compiled_model(TrainConfig(depth=50, batch_size=64), "float32")
    images = dataset.train_images[:128, ..., np.newaxis].astype(np.float32)
    model.fit(images, np.eye(10)[dataset.train_labels[:128]], batch_size=64, epochs=1, verbose=0)
    return model


@pytest.fixture
def copied(explained, tmp_path):
    """A copy of the trained run in a fresh cache: (store, run)."""
    store, run, _, _ = explained
    cache = tmp_path / "copy"
    cache.mkdir()
    shutil.copytree(run.path, cache / run.run_id)
    copy_store = RunStore(cache)
    return copy_store, copy_store.load(run.run_id)


def _centre_of_mass(heat: np.ndarray) -> np.ndarray:
    rows, columns = np.mgrid[: heat.shape[0], : heat.shape[1]]
    return np.array([(rows * heat).sum(), (columns * heat).sum()]) / heat.sum()


def _in_corner(image: np.ndarray, corner: str, side: int = 14) -> np.ndarray:
    """``image`` shrunk to ``side`` x ``side`` on a blank canvas, in the top-left or bottom-right corner."""
    import tensorflow as tf

    small = tf.image.resize(image[..., np.newaxis].astype(np.float32), (side, side), antialias=True).numpy()[..., 0]
    canvas = np.zeros((28, 28), dtype=np.float32)
    if corner == "top-left":
        canvas[:side, :side] = small
    else:
        canvas[-side:, -side:] = small
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _check_heatmap(heatmap: explain.Heatmap, size: int) -> None:
    heat = heatmap.heat
    assert heat.shape == (size, size) and heat.dtype == np.float32
    assert np.isfinite(heat).all() and heat.min() >= 0.0
    if heatmap.has_evidence:
        assert heat.max() == pytest.approx(1.0)
    else:
        assert not heat.any()
    assert 0.0 <= heatmap.probability <= 1.0 and np.isfinite(heatmap.probability)


# --- stages -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [18, 34, 50])
def test_spatial_stages_are_the_stage_outputs_larger_than_1x1(depth):
    stages = explain.spatial_stages(build_resnet(depth))
    assert [(stage.name, stage.size) for stage in stages] == [("conv2", 7), ("conv3", 4), ("conv4", 2)]
    assert [stage.layer for stage in stages] == stage_output_names(depth)[:3]  # conv5 is 1x1 at 28x28
    assert explain.DEFAULT_STAGE == "conv3" and "conv5" in explain.STAGE_HELP and "1x1" in explain.STAGE_HELP


# --- Grad-CAM -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", ["conv2", "conv3", "conv4"])
def test_grad_cam_gives_the_stage_map_non_negative_with_max_1(explained, stage):
    _, _, model, dataset = explained
    size = {"conv2": 7, "conv3": 4, "conv4": 2}[stage]
    image, label = dataset.test_images[0], int(dataset.test_labels[0])
    heatmaps = explain.grad_cam(model, image, [label, (label + 1) % 10, 3], stage=stage)
    assert [heatmap.class_index for heatmap in heatmaps] == [label, (label + 1) % 10, 3]
    probabilities = model.predict(image[np.newaxis, ..., np.newaxis].astype(np.float32), verbose=0)[0]
    for heatmap in heatmaps:
        _check_heatmap(heatmap, size)
        assert heatmap.stage == stage
        assert heatmap.probability == pytest.approx(float(probabilities[heatmap.class_index]), abs=1e-5)
    assert any(heatmap.has_evidence for heatmap in heatmaps)
    with pytest.raises(ValueError, match="conv2, conv3, conv4"):
        explain.grad_cam(model, image, label, stage="conv5")
    with pytest.raises(ValueError, match="class indices"):
        explain.grad_cam(model, image, 10)


def test_grad_cam_heat_moves_with_the_object(explained):
    """The same garment, shrunk into the top-left corner and then into the bottom-right one: the heat of
    the class predicted for it moves down and right with it (over 32 test images, robust to a few).

    What the tiny model learns depends on the CPU's float32 kernels as well as the data order: on a Xeon
    with AVX-512 and AMX (2026-12-01) 18 of 32 pairs had evidence in both corners, 0.83 of them moved down
    and right, by (0.52, 0.69) cells on average; over the first 16 images alone the mean was (0.40, 0.67).
    Random heat would move down-right a quarter of the time, by nothing on average."""
    _, _, model, dataset = explained
    moves = []
    for index in range(32):
        image = dataset.test_images[index]
        top_left, bottom_right = _in_corner(image, "top-left"), _in_corner(image, "bottom-right")
        probabilities = model.predict(top_left[np.newaxis, ..., np.newaxis].astype(np.float32), verbose=0)[0]
        predicted = int(np.argmax(probabilities))
        first, second = (explain.grad_cam(model, image, predicted)[0] for image in (top_left, bottom_right))
        if first.has_evidence and second.has_evidence:
            moves.append(_centre_of_mass(second.heat) - _centre_of_mass(first.heat))
    moves = np.array(moves)
    assert len(moves) >= 12, f"only {len(moves)} of 32 pairs had evidence in both corners"
    moved_down_right = (moves > 0).all(axis=1).mean()
    assert moved_down_right >= 0.7, moves
    assert (moves.mean(axis=0) > 0.3).all(), moves  # by more than 0.3 of a cell of the 4x4 map, on average


@pytest.mark.slow  # builds ResNet-50
def test_grad_cam_works_on_a_bottleneck_resnet50(resnet50, dataset):
    heatmaps = explain.grad_cam(resnet50, dataset.test_images[1][..., np.newaxis], [0, 9])
    for heatmap in heatmaps:
        _check_heatmap(heatmap, 4)
    assert any(heatmap.has_evidence for heatmap in heatmaps)


def test_a_mixed_bfloat16_model_gives_finite_float32_heat(explained):
    _, _, model, dataset = explained
    low = build_resnet(18, precision="mixed_bfloat16")
    low.set_weights(model.get_weights())
    image = dataset.test_images[2]
    for stage in ("conv2", "conv3"):
        for heatmap in explain.grad_cam(low, image, [0, int(dataset.test_labels[2])], stage=stage):
            _check_heatmap(heatmap, {"conv2": 7, "conv3": 4}[stage])
    features = explain.penultimate_features(low, dataset.test_images[:4])
    assert features.dtype == np.float32 and np.isfinite(features).all()


def test_an_all_black_image_never_gives_nan(explained):
    _, _, model, _ = explained
    black = np.zeros((28, 28), dtype=np.uint8)
    for stage in ("conv2", "conv3", "conv4"):
        for heatmap in explain.grad_cam(model, black, list(range(10)), stage=stage):
            _check_heatmap(heatmap, {"conv2": 7, "conv3": 4, "conv4": 2}[stage])


def test_no_positive_evidence_gives_zeros_not_nan():
    heat, evidence = explain._normalised_heat(np.array([[-1.0, -2.0], [-0.5, -3.0]], dtype=np.float32))
    assert not evidence and heat.dtype == np.float32 and not heat.any()
    heat, evidence = explain._normalised_heat(np.full((2, 2), np.nan, dtype=np.float32))
    assert not evidence and not heat.any()
    heat, evidence = explain._normalised_heat(np.array([[2.0, -1.0], [1.0, 0.0]], dtype=np.float32))
    assert evidence and heat.tolist() == [[1.0, 0.0], [0.5, 0.0]]


def test_the_grad_cam_function_is_built_and_traced_once_per_model_and_stage(explained):
    _, _, model, dataset = explained
    for index in range(3):
        explain.grad_cam(model, dataset.test_images[index], [index, 5])
    explain.grad_cam(model, dataset.test_images[3], 1)  # another number of classes: no new trace
    function = explain._CACHE[model][("grad_cam", "conv3_block2_out")]
    assert function.experimental_get_tracing_count() == 1


# --- drawing ------------------------------------------------------------------------------------------------
def test_upsample_is_bilinear_and_keeps_the_range():
    assert np.allclose(explain.upsample(np.full((4, 4), 0.25)), 0.25)
    ramp = explain.upsample(np.array([[0.0, 1.0]] * 2, dtype=np.float32), size=8)
    assert ramp.shape == (8, 8) and ramp.dtype == np.float32
    assert (np.diff(ramp[0]) >= 0).all() and ramp[0, 0] == 0.0 and ramp[0, -1] == 1.0
    assert np.allclose(ramp[0], [0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1])  # pixel centres aligned
    assert np.allclose(ramp, ramp[0])  # constant down the columns


def test_overlay_blends_the_grey_image_with_the_colour_map():
    image = np.arange(28 * 28, dtype=np.int64).reshape(28, 28) % 256
    heat = np.zeros((4, 4), dtype=np.float32)
    heat[0, 0] = 1.0
    blended = explain.overlay(image.astype(np.uint8), heat)
    assert blended.shape == (28, 28, 3) and blended.dtype == np.uint8
    assert (explain.overlay(image.astype(np.uint8), heat, alpha=0.0) == image[..., np.newaxis]).all()
    colours = explain.overlay(image.astype(np.uint8)[..., np.newaxis], heat, alpha=1.0)
    assert (colours[0, 0] == explain.COLORMAP[255]).all() and (colours[-1, -1] == explain.COLORMAP[0]).all()
    assert explain.COLORMAP.shape == (256, 3) and explain.COLORMAP.dtype == np.uint8
    assert explain.COLORMAP[:, 0].sum() < explain.COLORMAP[-1].sum() * 256  # dark to bright
    assert explain.COLORMAP[0].sum() < explain.COLORMAP[128].sum() < explain.COLORMAP[255].sum()


# --- features and neighbours --------------------------------------------------------------------------------
def test_penultimate_features_are_the_evaluation_pass_features(explained):
    _, _, model, dataset = explained
    images = dataset.test_images[:300]
    features = explain.penultimate_features(model, images, batch_size=128)
    assert features.shape == (300, 512) and features.dtype == np.float32
    assert np.allclose(features, explain.penultimate_features(model, images[..., np.newaxis]), atol=1e-5)
    probabilities, same_pass = explain.predict_with_features(model, images[..., np.newaxis].astype(np.float32))
    assert np.allclose(same_pass, features, atol=1e-4)
    assert np.allclose(probabilities, model.predict(images[..., np.newaxis].astype(np.float32), verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        explain.penultimate_features(model, images[:, :20])


@pytest.mark.slow  # builds ResNet-50
def test_resnet50_features_have_2048_dimensions(resnet50, dataset):
    assert explain.penultimate_features(resnet50, dataset.test_images[:3]).shape == (3, 2048)


def test_normalise_rows_is_safe_for_zero_rows():
    rows = explain.normalise_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(rows, [[0.6, 0.8], [0.0, 0.0]]) and rows.dtype == np.float32


def test_nearest_neighbours_are_the_most_cosine_similar_first():
    bank = explain.normalise_rows(np.array([[1, 0], [0, 1], [1, 1], [1, 0], [-1, 0]])).astype(np.float16)
    indices, similarities = explain.nearest_neighbours(bank, np.array([2.0, 0.1]), k=3)
    assert indices.tolist() == [0, 3, 2]  # equal similarities keep bank order
    assert similarities[0] == pytest.approx(similarities[1]) and similarities[0] > similarities[2]
    assert len(explain.nearest_neighbours(bank, np.array([1.0, 0.0]), k=50)[0]) == 5
    # A read-only bank (as RunStore.feature_bank gives) is converted to float32 once, with the same answers.
    bank.flags.writeable = False
    again = explain.nearest_neighbours(bank, np.array([2.0, 0.1]), k=3)
    converted = explain._FLOAT32_BANK[1]
    assert np.array_equal(again[0], indices) and np.array_equal(again[1], similarities)
    explain.nearest_neighbours(bank, np.array([0.0, 1.0]), k=1)
    assert explain._FLOAT32_BANK[1] is converted and explain._FLOAT32_BANK[0]() is bank
    assert explain.nearest_neighbours(bank, np.array([1.0, 0.0]), k=0)[0].tolist() == []


def test_neighbour_summary_counts_classes_in_words():
    from data.fashion_mnist import CLASS_NAMES

    assert explain.neighbour_summary([0, 6, 0, 0, 0, 0, 6, 0], CLASS_NAMES) == "6 T-shirt/tops and 2 Shirts"
    assert explain.neighbour_summary([3], CLASS_NAMES) == "1 Dress"
    assert explain.neighbour_summary([3, 8, 3, 4, 8, 3], CLASS_NAMES) == "3 Dresses, 2 Bags and 1 Coat"
    assert explain.neighbour_summary([], CLASS_NAMES) == "no neighbours"


# --- the 2-D map --------------------------------------------------------------------------------------------
def test_project_2d_is_deterministic_with_the_right_shape(explained):
    _, _, model, dataset = explained
    features = explain.penultimate_features(model, dataset.test_images[:250])
    first, second = explain.project_2d(features), explain.project_2d(features.copy())
    assert first.coords.shape == (250, 2) and first.coords.dtype == np.float32
    assert np.array_equal(first.coords, second.coords) and first.explained == second.explained
    assert 0 < first.explained[1] <= first.explained[0] and sum(first.explained) <= 1.0 + 1e-6
    assert abs(first.coords.mean(axis=0)).max() < 1e-3 * abs(first.coords).max()  # centred


def test_project_2d_finds_the_main_directions_with_fixed_signs():
    rng = np.random.default_rng(1)
    n, d = 800, 600  # both sides over 512: the randomized solver
    directions = np.linalg.qr(rng.standard_normal((d, 2)))[0].T
    latent = rng.standard_normal((n, 2)) * [10.0, 5.0]
    features = (latent @ directions + 0.5 * rng.standard_normal((n, d)) + 3.0).astype(np.float32)
    projection = explain.project_2d(features)
    assert projection.explained[0] > projection.explained[1] > 0
    for axis in range(2):  # each axis recovers its latent direction (up to sign)
        correlation = np.corrcoef(projection.coords[:, axis], latent[:, axis])[0, 1]
        assert abs(correlation) > 0.99
    centred = features - features.mean(axis=0)
    total = (centred.astype(np.float64) ** 2).sum()
    singular = np.linalg.svd(centred.astype(np.float64), compute_uv=False)[:2]
    assert projection.explained == pytest.approx(tuple(singular**2 / total), rel=1e-3)
    flipped = explain.project_2d(-features)  # signs are fixed by the loadings, so the map flips with the data
    assert np.allclose(flipped.coords, -projection.coords, atol=1e-3 * abs(projection.coords).max())


def test_project_2d_of_degenerate_inputs_is_zeros():
    assert explain.project_2d(np.ones((5, 3))).coords.tolist() == [[0.0, 0.0]] * 5
    assert explain.project_2d(np.zeros((1, 8))).explained == (0.0, 0.0)
    assert explain.project_2d(np.zeros((0, 8))).coords.shape == (0, 2)


# --- files in the run ---------------------------------------------------------------------------------------
def test_the_trainer_writes_a_map_for_every_epoch(explained):
    store, run, _, _ = explained
    run = store.load(run.run_id)  # as read after the run ended
    assert artefacts.feature_map_epochs(run) == [1, 2]
    predictions = store.load_predictions(run)
    for epoch in (1, 2):
        arrays = artefacts.load_feature_map(store, run, epoch)
        assert arrays["coords"].shape == (200, 2) and arrays["coords"].dtype == np.float32
        assert np.isfinite(arrays["coords"]).all() and arrays["coords"].std() > 0
        assert arrays["explained"].shape == (2,) and 0 < arrays["explained"].sum() <= 1.0 + 1e-6
        assert int(arrays["epoch"]) == epoch and arrays["indices"].dtype == np.int32
        assert np.array_equal(arrays["indices"], predictions["indices"])
        assert arrays["predicted"].dtype == np.uint8 and arrays["confidence"].dtype == np.float16
    last = artefacts.load_feature_map(store, run, 2)
    assert np.array_equal(last["predicted"], predictions["probabilities"].argmax(axis=1))
    assert np.allclose(last["confidence"], predictions["probabilities"].max(axis=1), atol=1e-3)
    assert not np.allclose(
        artefacts.load_feature_map(store, run, 1)["coords"], last["coords"]
    )  # each epoch its own map
    with pytest.raises(RunError, match="no epoch 3"):
        artefacts.load_feature_map(store, run, 3)


def test_maps_are_kept_for_every_epoch_and_uncommitted_files_are_removed(cache_dir):
    from test_runs import _write_zip

    store = RunStore(cache_dir)
    run = store.create(
        TrainConfig(epochs=4, train_subset=200),
        precision="float32",
        device="CPU: test",
        train_images=200,
        eval_images=50,
    )
    rng = np.random.default_rng(0)
    for epoch in (1, 2, 3):
        row = {column: 0.5 for column in HISTORY_COLUMNS} | {"epoch": epoch, "cumulative_seconds": 10.0 * epoch}
        probabilities = rng.dirichlet(np.ones(10), size=50)
        commit_epoch(
            store,
            run,
            row,
            save_checkpoint=_write_zip,
            probabilities=probabilities,
            eval_indices=np.arange(50),
            eval_labels=np.zeros(50),
            feature_map=explain.feature_map_arrays(rng.standard_normal((50, 16)), probabilities),
        )
    names = {path.name for path in run.path.iterdir()}
    assert {"map-0001.npz", "map-0002.npz", "map-0003.npz"} <= names
    assert "checkpoint-0001.keras" not in names and "predictions-0001.npz" not in names  # superseded
    assert artefacts.feature_map_epochs(store.load(run.run_id)) == [1, 2, 3]
    # Files of an epoch that was never committed (a crash before state.json) go before training resumes.
    (run.path / "map-0004.npz").write_bytes((run.path / "map-0003.npz").read_bytes())
    (run.path / "features-0004.npz").write_bytes(b"partial")
    store.remove_uncommitted_files(run)
    names = {path.name for path in run.path.iterdir()}
    assert "map-0004.npz" not in names and "features-0004.npz" not in names and "map-0003.npz" in names


def test_a_damaged_or_missing_map_is_a_clear_error(copied):
    store, run = copied
    (run.path / "map-0001.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DamagedRun, match="map-0001.npz is unreadable"):
        artefacts.load_feature_map(store, run, 1)
    (run.path / "map-0001.npz").unlink()
    with pytest.raises(RunError, match="no feature map for epoch 1"):
        artefacts.load_feature_map(store, run, 1)
    assert artefacts.feature_map_epochs(run) == [2]
    arrays = dict(np.load(run.path / "map-0002.npz"))
    np.savez(run.path / "map-0002.npz", **{**arrays, "coords": arrays["coords"][:10]})
    with pytest.raises(DamagedRun, match="indices of shape"):
        artefacts.load_feature_map(store, run, 2)


def test_an_old_run_gets_a_map_of_its_checkpoint_once(explained, copied):
    _, original, model, dataset = explained
    store, run = copied
    written = artefacts.load_feature_map(store, run, 2)
    (run.path / "map-0002.npz").unlink()  # as a run trained before maps existed
    calls = []

    def compute_map(evaluated):
        calls.append(1)
        return explain.feature_map_of(model, dataset.test_images[evaluated], evaluated)

    computed = artefacts.ensure_feature_map(store, run, compute_map)
    again = artefacts.ensure_feature_map(store, run, compute_map)
    assert len(calls) == 1 and (run.path / "map-0002.npz").is_file()
    for key in ("indices", "predicted", "epoch"):
        assert np.array_equal(computed[key], written[key]) and np.array_equal(again[key], written[key])
    # The loaded checkpoint has the trained weights, and the projection is deterministic: the same map.
    assert np.allclose(computed["coords"], written["coords"], atol=1e-3 * np.abs(written["coords"]).max())


def counted_features(model, dataset):
    """A bank's ``compute`` that records how many images each call was asked for: (calls, compute)."""
    calls = []

    def compute(indices):
        calls.append(len(indices))
        return explain.penultimate_features(model, dataset.train_images[indices])

    return calls, compute


def test_the_feature_bank_is_written_once_then_reused(explained, copied):
    _, _, model, dataset = explained
    store, run = copied
    calls, compute = counted_features(model, dataset)
    bank = artefacts.feature_bank(run, compute, train_labels=dataset.train_labels)
    path = run.path / "features-0002.npz"
    stamp = path.stat().st_mtime_ns
    assert calls == [RUN.train_subset]  # the run trained on fewer images than BANK_SIZE: all of them
    assert bank.epoch == 2 and bank.features.dtype == np.float16 and bank.features.shape == (RUN.train_subset, 512)
    assert not bank.features.flags.writeable
    assert np.allclose(np.linalg.norm(bank.features.astype(np.float32), axis=1), 1.0, atol=1e-2)
    assert bank.indices.dtype == np.int32 and np.array_equal(bank.labels, dataset.train_labels[bank.indices])
    assert np.bincount(bank.labels, minlength=10).tolist() == [77] * 8 + [76] * 2  # class-balanced (768 images)
    again = artefacts.feature_bank(run, compute, train_labels=dataset.train_labels)
    assert calls == [RUN.train_subset] and path.stat().st_mtime_ns == stamp
    assert np.array_equal(again.features, bank.features) and np.array_equal(again.indices, bank.indices)
    # A training image's nearest neighbour in the bank is itself (distance 0).
    position = 17
    query = explain.penultimate_features(model, dataset.train_images[bank.indices[position]][np.newaxis])[0]
    nearest, similarities = explain.nearest_neighbours(bank.features, query, k=5)
    assert nearest[0] == position and similarities[0] == pytest.approx(1.0, abs=2e-3)


def test_a_corrupted_feature_bank_is_recomputed(explained, copied):
    _, _, model, dataset = explained
    store, run = copied
    calls, compute = counted_features(model, dataset)
    first = artefacts.feature_bank(run, compute, train_labels=dataset.train_labels)
    path = run.path / "features-0002.npz"
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    second = artefacts.feature_bank(run, compute, train_labels=dataset.train_labels)
    assert calls == [RUN.train_subset] * 2 and np.array_equal(second.features, first.features)
    assert np.array_equal(np.load(path)["features"], first.features)  # and written again
    path.write_bytes(b"garbage")
    artefacts.feature_bank(run, compute, train_labels=dataset.train_labels)
    assert calls == [RUN.train_subset] * 3


def test_the_bank_is_a_class_balanced_subset_of_the_training_images(tmp_path, dataset):
    from test_runs import make_run

    store = RunStore(tmp_path)
    full = store.load(make_run(store, epochs_done=1).run_id)
    full.config = full.config.replace(train_subset=60_000)
    indices = artefacts.bank_indices(full, dataset.train_labels)
    assert len(indices) == BANK_SIZE == 6000 and len(np.unique(indices)) == BANK_SIZE
    assert np.bincount(dataset.train_labels[indices], minlength=10).tolist() == [600] * 10
    assert np.array_equal(indices, artefacts.bank_indices(full, dataset.train_labels))  # a fixed seed


def test_features_of_older_epochs_go_when_superseded(tmp_path, dataset):
    from test_runs import _write_zip, make_run

    store = RunStore(tmp_path)
    run = make_run(store, epochs_done=1)  # trained on 200 images
    rng = np.random.default_rng(3)

    def compute(indices):
        return rng.standard_normal((len(indices), 8))

    def commit(epoch):
        row = {column: 0.5 for column in HISTORY_COLUMNS} | {"epoch": epoch, "cumulative_seconds": 10.0 * epoch}
        commit_epoch(
            store,
            run, row, save_checkpoint=_write_zip, probabilities=np.full((100, 10), 0.1), eval_indices=np.arange(100),
            eval_labels=np.zeros(100),
        )  # fmt: skip

    artefacts.feature_bank(run, compute, train_labels=dataset.train_labels)
    assert [path.name for path in run.path.glob("features-*")] == ["features-0001.npz"]
    commit(2)  # epoch 1's features go with its checkpoint, right after the commit
    assert not list(run.path.glob("features-*"))
    artefacts.feature_bank(run, compute, train_labels=dataset.train_labels)
    commit(3)
    artefacts.feature_bank(run, compute, train_labels=dataset.train_labels)
    assert [path.name for path in run.path.glob("features-*")] == ["features-0003.npz"]


def test_delete_removes_maps_and_features(explained, copied):
    _, _, model, dataset = explained
    store, run = copied
    artefacts.feature_bank(
        run, lambda indices: explain.penultimate_features(model, dataset.train_images[indices]),
        train_labels=dataset.train_labels,
    )  # fmt: skip
    assert {"map-0001.npz", "map-0002.npz", "features-0002.npz"} <= set(os.listdir(run.path))
    store.delete(run.run_id)
    assert not run.path.exists() and store.list_runs() == []
    assert os.listdir(run.path.parent) == []
