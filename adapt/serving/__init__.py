"""Serving: loading any saved model folder and predicting (`inference`, `predict`), and exporting a run as a
self-contained folder (`export`): torch fp32 or int8 (`int8`), or an ONNX Runtime graph, fp32 or int8 (`onnx`)."""
