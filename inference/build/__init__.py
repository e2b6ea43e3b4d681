"""Set-up time work (``python -m bot models prepare``): never imported by the serving path.

- ``sources.py``: bring a model source into the cache (dequantize the packaged GGUF);
- ``export.py``: export causal LMs to ONNX (onnxruntime-genai's builder or optimum), with quantization and
  the exact restoration of a 4-bit GGUF grid;
- ``prepare.py``: everything the catalogue needs, idempotently (the classifier's training lives with the
  classifier, in ``inference.classifier.train``).

Where the results live is :mod:`inference.artifacts`, which both sides read.
"""
