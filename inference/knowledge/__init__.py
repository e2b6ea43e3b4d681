"""A server's own knowledge: sources split into chunks, embedded, indexed, searched and cited.

CONTRACT (being implemented by several people at once; the names in ``base.py`` are fixed):

- ``base.py``: the records (:class:`Source`, :class:`Chunk`, :class:`Hit`, :class:`Citation`) and the one index
  interface (:class:`KnowledgeIndex`) that the SQLite (sqlite-vec + FTS5) and PostgreSQL (pgvector + full text)
  implementations share;
- ``chunking.py``: text, Markdown, HTML, PDF and Discord messages into chunks that keep headings and message
  boundaries; ``embedder.py``: the packaged all-MiniLM-L6-v2 on ONNX Runtime, batched, no torch;
- ``fusion.py``: reciprocal rank fusion of the vector and keyword rankings;
- ``service.py``: :class:`KnowledgeBase` - add, list, remove, search (only the server's own chunks, only from
  sources the asking user may read now) and answer with citations. Nothing here knows Discord.
"""
