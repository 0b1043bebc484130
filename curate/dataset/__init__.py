"""Stage 5 and its format: the record schema, pack (crops -> TFRecords) and inspect."""

from curate.dataset.pack import RecordEncoder

__all__ = ["RecordEncoder"]
