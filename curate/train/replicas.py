"""Several devices for one run: the tf.distribute strategy a `replicas` setting asks for, and who writes.

`replicas=1` (the default) is no strategy at all: the trainer's single-device code path, untouched.
`replicas=N` (or `auto`, every GPU) mirrors the networks over N local devices with MirroredStrategy;
with no GPU it mirrors over the logical CPU devices (the tests configure two). With `TF_CONFIG`
naming more than one task, MultiWorkerMirroredStrategy spans the machines, each using every GPU it
sees (`replicas` must then be `auto` or that count), and only the chief writes the run folder.

How a step stays the same computation whatever the count (curate.train.steps, stylegan/ops): each
replica takes every n-th row of the global minibatch and of every per-sample random tensor (drawn
at the global size from the same stateless seeds), so minibatch-stddev groups are one device's
groups; gradients are averaged over replicas before Adam (the losses are batch means), the w
average takes the global mean of w, and every replica applies the identical update to its copy.
"""

from __future__ import annotations

import json
import os

from curate.train.runfolder import TrainError


def cluster_spec() -> dict | None:
    """TF_CONFIG parsed, when it names more than one task (a multi-worker run); None otherwise."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        spec = json.loads(raw)
        tasks = sum(len(v) for v in spec.get("cluster", {}).values())
        spec["task"]["type"], int(spec["task"]["index"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise TrainError("TF_CONFIG is not a JSON object with 'cluster' and 'task' {'type', 'index'} "
                         "(see docs/training.md, Several GPUs)") from None
    return spec if tasks > 1 else None


def is_chief() -> bool:
    """Whether this process writes the run folder: the chief of TF_CONFIG's cluster (worker 0 without one)."""
    spec = cluster_spec()
    if spec is None:
        return True
    task = spec["task"]
    if "chief" in spec["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task["index"]) == 0


def requested(replicas: str) -> int | None:
    """The replica count asked for on this machine; None for `auto`."""
    return None if replicas == "auto" else int(replicas)


def make_strategy(replicas: str):
    """The strategy for a `replicas` setting: None for one device, MirroredStrategy or MultiWorkerMirroredStrategy."""
    from curate.train.stylegan.ops import tf

    want = requested(replicas)
    if cluster_spec() is not None:
        gpus = tf.config.list_physical_devices("GPU")  # physical: the runtime must not start before the strategy
        if want is not None and want != max(len(gpus), 1):
            seen = f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''}" if gpus else "no GPU (one CPU replica)"
            raise TrainError(f"replicas={want} but this worker sees {seen}; under TF_CONFIG each worker uses "
                             "every GPU it sees: set replicas=auto (choose GPUs with CUDA_VISIBLE_DEVICES)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if want == 1:
        return None
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    if want is None:
        want = len(gpus) or 1
        if want == 1:
            return None
    if len(devices) < want:
        seen = (f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''} visible" if gpus
                else f"no GPU visible ({len(devices)} CPU device{'s' if len(devices) > 1 else ''})")
        raise TrainError(f"replicas={want} but {seen}; set replicas=auto or a count this machine has")
    return tf.distribute.MirroredStrategy([d.name for d in devices[:want]])


def replica_count(strategy) -> int:
    """Replicas in sync under a strategy (1 for none)."""
    return 1 if strategy is None else int(strategy.num_replicas_in_sync)
