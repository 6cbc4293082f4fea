"""Sufficient statistics that merge exactly: CrossMoments and the reduction of a chunk of samples to them."""

from .cross import CrossMoments
from .reduce import block_size, chunk_moments

__all__ = ["CrossMoments", "block_size", "chunk_moments"]
