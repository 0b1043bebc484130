"""Stage 4, review: a browser grid where a person rejects bad crops; decisions in review.sqlite."""
