"""Pose-guided design and attribute editing: EquiFashion's ControlNet-OpenPose drafts (its SD2.1-base ControlLDM
checkpoint, or the SD1.5 OpenPose ControlNet on the studio's base model) and masked re-noising edits.
torch-free declarations."""

TASKS = {
    "pose_design": "pipelines.posedesign.pipeline:run_task",
    "attribute_edit": "pipelines.posedesign.pipeline:run_edit_task",
    "attribute_region": "pipelines.posedesign.pipeline:run_region_task",
}
TINY_CHECKPOINTS = {"equifashion": "pipelines.posedesign.checkpoints:write_tiny_controlldm"}
