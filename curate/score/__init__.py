"""Stage 3, score: which crops show a person (illustration2vec, or a heuristic without it).

Light on purpose: TensorFlow loads only when a CropScorer first needs the network.
"""

from curate.score.scorer import CropScorer, ScoreRules

__all__ = ["CropScorer", "ScoreRules"]
