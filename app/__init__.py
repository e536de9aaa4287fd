"""The Streamlit app's pieces, one module per part of the screen, plus what they share.

- ``params``: the training settings (sidebar widgets) and their mirror in the URL;
- ``sidebar``: hardware, what Start will do and how long, Start / Stop, training a run further;
- ``live``: the running job's progress; ``curves``: learning curves, diminishing returns, results table;
- ``insight``: confusion matrix, per-class accuracy, prediction grids; ``runs_page``: the Runs tab;
- ``sweep_tab``: the Sweep tab (a grid of runs and the study's answer); ``sweep_job``: the process-wide
  sweep runner, whose trials are jobs of the one JobManager;
- ``charts``: Altair chart builders (no Streamlit); ``actions``: what the buttons do (no drawing);
- ``state``: every session-state key and which run is shown; ``feedback``: message boxes;
- ``services``: the process-wide JobManager and cheap checks of the machine and dataset.

``streamlit_app.py`` wires them together. Nothing here trains: training runs in ``resnet.training.jobs.JobManager``
(one per server process, see ``app.services``), and the page only reads its snapshot and its runs.
"""
