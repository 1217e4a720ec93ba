"""High-quality try-off: TEMU-VTOFF's dual SD3 transformers. torch-free declarations."""

TASKS = {"tryoff_temu": "pipelines.temu.pipeline:run_task"}
TINY_CHECKPOINTS = {"temu_vtoff": "pipelines.temu.checkpoints:write_tiny_temu"}
