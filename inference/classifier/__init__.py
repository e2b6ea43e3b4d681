"""The task classifier: which of the ten tasks a request is, and how hard it is.

- ``features.py``: the lexical cues, as data (shared by training and run time);
- ``encoder.py``: the int8 MiniLM encoder on ONNX Runtime (run time);
- ``model.py``: :class:`TaskClassifier`, the run-time classifier (no torch);
- ``recipe.py``: the declared training recipe and the key that names the artefacts;
- ``calibration.py``: temperature scaling and expected calibration error (numpy);
- ``bank.py``: :class:`ExampleBank`, labelled embeddings with a cosine top-k vote (the unsure path's second
  opinion, and any other memory of labelled requests, such as a server's corrections);
- ``train.py``: set-up time training (``models prepare``); ``evaluate.py``: held-out metrics.
"""

from inference.classifier.model import TaskClassifier

__all__ = ["TaskClassifier"]
