"""Per-task pipelines: how each of the ten tasks is served (empty until the task-pipelines issue lands).

One module per task (``classification.py``, ``conversion.py``, ``code.py`` ...), each a small pipeline on
one shared base: how the prompt is framed (system text, few-shot examples, whether a chat template is used),
the generation settings (length, temperature, stops), the constraint applied while decoding (a JSON Schema,
a regular expression, a fixed set of words), and how the output is post-processed and shown. The service
asks the routed task's pipeline to build the messages and parameters; nothing here knows Discord.
"""
