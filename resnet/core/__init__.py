"""The core: models and arrays, no files of the run cache.

Holds the ResNet builder and its compilation (``model``), learning-rate schedules (``schedule``), what the
machine offers and where a run trains (``hardware``), ``auto`` precision measured and remembered
(``precision``) and the explanation functions (``explain``: Grad-CAM, features, neighbours, the 2-D map).
It may import the leaves (``resnet.config``, ``resnet.wording``, ``resnet.files``, ``resnet.records``) and
``data``; never ``resnet.store``, ``resnet.training``, ``resnet.sweeps``, the CLI or the app.
"""
