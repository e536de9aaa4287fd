"""The core: models and arrays, no run folders.

Holds the ResNet builder and its compilation (``model``), learning-rate schedules (``schedule``), what the
machine offers and where a run trains (``hardware``), ``auto`` precision (``precision_record``: the
remembered measurements and the decision; ``precision_timing``: the measurement; ``precision``: the one
``resolve(config)`` every caller uses) and the explanation functions (``explain``: Grad-CAM, features,
neighbours, the 2-D map). It may import the leaves (``resnet.config``, ``resnet.wording``,
``resnet.files``, ``resnet.records``) and ``data``; never ``resnet.store``, ``resnet.training``,
``resnet.sweeps``, the CLI or the app.
"""
