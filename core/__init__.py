"""Trillium's shared inference core.

One measured runtime, a dynamic batcher, a model registry, the database and the batch-job
engine: every vertical (finance, medical, manufacturing) is built on these pieces.
"""

__version__ = "0.1.0"
