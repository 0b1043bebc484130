"""The Beam engine: the stages' own units (PostFilter, Cropper, CropScorer, RecordEncoder) as Apache Beam
transforms, so a pipeline runs on Dataflow, Flink or Spark as it runs on one machine. Needs the `beam`
extra (`pip install -e '.[beam]'`); nothing else in curate imports it.
"""
