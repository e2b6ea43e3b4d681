"""Model backends: one base class (base.py) and one file per implementation."""
