"""Shared, importable core of the explainable-audio recipe collection.

Layers go one way (nothing low imports something high; tests/test_architecture.py checks it):
utilities (io, errors, registry, recipe) -> data -> features -> models -> interpreters -> metrics
-> reports -> training -> analysis (and inference); recipes/ and tools/ sit on top.
"""

__version__ = "0.1.0"
