"""Shared, importable core of the explainable-audio recipe collection.

Layers go one way (nothing low imports something high):
data -> features -> models -> interpreters -> metrics -> reports.
"""

__version__ = "0.1.0"
