"""The Streamlit app's pieces: sidebar and query parameters, charts, page sections, time estimates.

``streamlit_app.py`` wires them together. Nothing here trains: training runs in ``resnet.jobs.JobManager``
(one per server process, see ``app.services``), and the views only read its snapshot and the run store.
"""
