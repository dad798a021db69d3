"""Serving: loading any saved model folder and predicting (`inference`, `predict`), and exporting a run as a
self-contained fp32 or int8 folder (`export`)."""
