# The worker image for `curate run --engine beam` on Dataflow, Flink or Spark (docs/beam.md).
# Beam's own Python SDK image, with curate and everything its stages import installed into it.
#
#   docker build -f docker/beam-worker.Dockerfile -t REGISTRY/curate-beam:latest .
#   docker push REGISTRY/curate-beam:latest
#
# The SDK version here must match the apache-beam the launching machine runs (pip show apache-beam).
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/curate
COPY setup.cfg pyproject.toml README.md ./
COPY curate ./curate
COPY cascades/README.md ./cascades/README.md
# tf: illustration2vec scoring (score); beam: the engine itself. No editable install: the image is frozen.
RUN pip install --no-cache-dir ".[beam,tf]"

# Optional: bake the illustration2vec weights in, so that workers score with the network. Without
# them `--scorer auto` on the launcher decides "heuristic" and the workers need no weights.
#   RUN curate models install illustration2vec
# The crop cascade needs no copy here: each crop step carries its bytes (checked against its sha256).
