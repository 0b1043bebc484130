"""Stage 3b, dedup: near-duplicate crops found by a perceptual hash over all crops, the best of each group kept."""

from curate.dedup.unit import CropHasher, DedupConfig, REASONS

__all__ = ["CropHasher", "DedupConfig", "REASONS"]
