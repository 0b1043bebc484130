"""The Beam engine: the stages' own units (PostFilter, Cropper, CropScorer, RecordEncoder) as Apache Beam
transforms, so a pipeline runs on Dataflow, Flink or Spark as it runs on one machine. Needs the `beam`
extra (`pip install -e '.[beam]'`); only the Beam engine and object-storage paths (curate.core.location)
import it. Importing it makes Beam's S3 file system share one boto3 client per option set (s3clients).
"""

from curate.beam import s3clients as _s3clients

_s3clients.install()
