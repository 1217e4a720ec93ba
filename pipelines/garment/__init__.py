"""Garment design from sketch, colour and logo (IMAGGarment-1: GAM + LEM). torch-free declarations."""

TASKS = {"garment": "pipelines.garment.pipeline:run_task"}
TINY_CHECKPOINTS = {
    "garment_gam": "pipelines.garment.checkpoints:write_tiny_gam_checkpoint",
    "garment_color": "pipelines.garment.checkpoints:write_tiny_color_checkpoint",
    "garment_lem": "pipelines.garment.checkpoints:write_tiny_lem_checkpoint",
}
