"""Virtual try-off: a worn garment back to a flat product shot (TryOffAnyone). torch-free declarations."""

TASKS = {"tryoff": "pipelines.tryoff.pipeline:run_task"}
TINY_CHECKPOINTS = {
    "tryoff_anyone": "pipelines.tryoff.checkpoints:write_tiny_tryoffanyone",
    "rmbg": "pipelines.preprocess.rmbg:write_tiny_rmbg",  # the background-removal model (models: rmbg)
}
