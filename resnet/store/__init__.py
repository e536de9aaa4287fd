"""The run store: one folder per run under the cache, written so that nothing is lost, read so that
nothing hostile breaks a page.

Holds the typed, validated run state and history (``run_state``), the checked array files of a run
(``run_arrays``), one run folder as files (``run_folder``: ``Run``, which entries a run writes, parsing and
cleaning), the store itself (``runs``: create, commit, list, load, delete, locks and liveness), the
explanation files beside a checkpoint and Keras model loading (``artefacts``), the run as TensorBoard
event files (``event_files``) and its feature map for TensorBoard's Projector (``projector``), what Start would train
(``plan``) and how long it would take (``estimate``). It may import ``resnet.core`` and the leaves; never
``resnet.training``, ``resnet.sweeps``, the CLI or the app.
"""
