"""Virtual try-on (CatVTON concat-inpainting; garment models fine-tuned with the seed-003 method).
torch-free declarations."""

TASKS = {
    "tryon": "pipelines.tryon.pipeline:run_task",
    "tryon_mask": "pipelines.tryon.pipeline:run_mask_task",
    "tryon_sam": "pipelines.tryon.pipeline:run_sam_task",
}
TINY_CHECKPOINTS = {
    "tryon_catvton": "pipelines.tryon.checkpoints:write_tiny_catvton",
    # Tiny SAM so click-to-refine runs end to end offline. No tiny SegFormer in the preset: random weights
    # would give random masks, while the mediapipe fallback gives real masks on a real photo.
    "sam": "pipelines.preprocess.masks:write_tiny_sam",
}
