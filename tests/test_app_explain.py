"""The explanation views under AppTest: a "Why?" button opens the Grad-CAM heatmaps and the nearest training
images, the feature-space map shows any recorded epoch (and two side by side), an old run without maps
gets one from its checkpoint, and a damaged checkpoint or a features file that cannot be written gets a
message instead of a crash.

A real 2-epoch ResNet-18 (basic blocks; ``support.EXPLAINED``) is trained once per session through the
trainer; each test copies it into its own ``cache_dir`` so the app's JobManager reads it.
"""

from __future__ import annotations

import zipfile

import pytest
from support import EXPLAINED, copy_run, own_file
from test_app import assert_no_exception, charts, new_app, texts

from resnet.store.run_state import features_name, map_name

RUN = EXPLAINED


@pytest.fixture
def run_in_cache(trained, cache_dir):
    """The trained run copied into this test's cache (the one the app reads); its folder."""
    return copy_run(trained(RUN).path, cache_dir)


def open_page():
    at = new_app()
    at.run()
    assert_no_exception(at)
    return at


def why_buttons(at, grid: str):
    return [button for button in at.button if str(button.key or "").startswith(f"why_{grid}_")]


def test_why_opens_two_heatmaps_and_the_nearest_training_images(run_in_cache):
    at = open_page()
    buttons = why_buttons(at, "sample")
    assert buttons, "the sample grid has no Why? buttons"
    test_index = int(buttons[0].key.rsplit("_", 1)[1])
    buttons[0].click().run()
    assert_no_exception(at)

    markdown = "\n".join(texts(at.markdown))
    assert f"Test image {test_index:,}" in markdown
    assert "nearest training images" in markdown
    captions = "\n".join(texts(at.caption))
    # A mistake (the grid shows mistakes first): one heatmap for the predicted class, one for the true one.
    assert "(predicted," in captions and "(true," in captions
    assert "similarity" in captions
    # The Grad-CAM stage can be changed; the heatmaps are recomputed on it without an error.
    at.segmented_control(key="explain_stage_sample").set_value("conv2").run()
    assert_no_exception(at)
    assert "(predicted," in "\n".join(texts(at.caption))
    # An explanation below the other grid as well: each has its own stage picker, and the page runs with both.
    why_buttons(at, "pair")[0].click().run()
    assert_no_exception(at)
    assert at.segmented_control(key="explain_stage_pair").value == "conv3"
    assert at.segmented_control(key="explain_stage_sample").value == "conv2"
    # The nearest-neighbour bank was written beside the checkpoint, for the checkpoint's epoch.
    assert (run_in_cache / features_name(2)).is_file()

    at.button(key="close_sample").click().run()
    assert_no_exception(at)
    assert f"Test image {test_index:,}" not in "\n".join(texts(at.markdown))


def test_feature_map_for_each_epoch_and_side_by_side(run_in_cache):
    at = open_page()
    maps = charts(at)
    assert any(title and title.startswith("Epoch 2:") for title in maps), list(maps)
    # The default compares with epoch 1: both maps are drawn, each point a test image.
    assert any(title and title.startswith("Epoch 1:") for title in maps), list(maps)
    frames = next(frames for title, frames in maps.items() if title and title.startswith("Epoch 2:"))
    assert len(frames[0]) == RUN.eval_subset
    assert set(frames[0]["outcome"]) <= {"correct", "mistake"}

    at.selectbox(key="map_compare").set_value("none").run()
    assert_no_exception(at)
    titles = [title for title in charts(at) if title and title.startswith("Epoch")]
    assert len(titles) == 1 and titles[0].startswith("Epoch 2:"), titles
    at.selectbox(key="map_epoch").set_value(1).run()
    titles = [title for title in charts(at) if title and title.startswith("Epoch")]
    assert titles and titles[0].startswith("Epoch 1:"), titles


def test_an_old_run_without_maps_gets_one_from_its_checkpoint(run_in_cache):
    for epoch in (1, 2):
        (run_in_cache / map_name(epoch)).unlink()
    at = open_page()
    assert "No feature map yet" in "\n".join(texts(at.info))
    at.button(key="compute_map").click().run()
    assert_no_exception(at)
    assert (run_in_cache / map_name(2)).is_file()
    assert any(title and title.startswith("Epoch 2:") for title in charts(at))


def test_a_damaged_checkpoint_gets_a_message_not_a_crash(run_in_cache):
    # A zip (so the run itself still reads as intact) whose contents Keras cannot load.
    with zipfile.ZipFile(own_file(run_in_cache / "checkpoint-0002.keras"), "w") as archive:
        archive.writestr("config.json", '{"class_name": "Nothing"}')
        archive.writestr("metadata.json", "{}")
    at = open_page()
    why_buttons(at, "sample")[0].click().run()
    assert_no_exception(at)
    warnings = "\n".join(texts(at.warning))
    assert "Cannot explain this prediction" in warnings and "not a loadable Keras model" in warnings


def test_a_features_file_made_a_folder_is_computed_in_memory_not_a_crash(run_in_cache):
    # Issue 19, reproduction 8: the nearest-neighbour bank's file cannot be written (a folder is in its place).
    blocker = run_in_cache / features_name(2)
    blocker.mkdir()
    (blocker / "inside.txt").write_text("not the run's")
    at = open_page()
    why_buttons(at, "sample")[0].click().run()
    assert_no_exception(at)
    assert "nearest training images" in "\n".join(texts(at.markdown))
    captions = "\n".join(texts(at.caption))
    assert "similarity" in captions and "kept in memory only" in captions and features_name(2) in captions
    assert (blocker / "inside.txt").read_text() == "not the run's"  # the folder is left as it was


def test_an_explained_image_costs_no_tensorflow_function_again_on_later_runs(run_in_cache, monkeypatch):
    """Streamlit clears Keras' session (and with it TensorFlow's kernel cache) after every script run unless
    the app keeps it (``app.checkpoints.keep_compiled_functions``): then every later run would instantiate
    the explanation's functions again, 0.25-0.42 s each for ResNet-50."""
    from tensorflow.python.eager import context

    cleared = []
    original = context.Context.clear_kernel_cache
    monkeypatch.setattr(context.Context, "clear_kernel_cache", lambda self: (cleared.append(1), original(self)))
    at = open_page()
    why_buttons(at, "sample")[0].click().run()
    assert_no_exception(at)
    assert "nearest training images" in "\n".join(texts(at.markdown))
    at.run()  # a later run with the explanation open
    assert_no_exception(at)
    assert cleared == []
