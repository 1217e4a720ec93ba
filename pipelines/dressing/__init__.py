"""Multi-garment dressing (AnyDressing architecture with IMAGDressing-v1 weights). torch-free declarations."""

TASKS = {
    "dressing": "pipelines.dressing.pipeline:run_task",
    "dressing_pose": "pipelines.dressing.pipeline:run_pose_task",
}
TINY_CHECKPOINTS = {"dressing_imagdressing": "pipelines.dressing.checkpoints:write_tiny_imagdressing"}
