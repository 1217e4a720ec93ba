"""Model presets: data files in presets/models/*.yaml, loaded into a typed, validated dataclass."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines.types import check_task_defaults

REPO_ROOT = Path(__file__).resolve().parents[2]
PRESET_DIR = REPO_ROOT / "presets" / "models"


@dataclass
class CheckpointLocation:
    location: str  # hub repo id, local folder, or local file
    filename: str | None = None  # file inside the repo/folder (None when location is a file)


@dataclass
class SchpWeights:
    """CatVTON's human parser: the two SCHP checkpoints (``zhengchong/CatVTON``: SCHP/exp-schp-*-lip/atr.pth)."""

    location: str  # hub repo id or local folder
    lip: str  # the LIP checkpoint file inside it
    atr: str  # the ATR checkpoint file inside it


@dataclass
class ModelPreset:
    name: str
    description: str = ""
    banner: str = ""  # Markdown shown at the top of the studio while this preset is in use (what it is, how to move on)
    tiny: bool = False  # True: build random-weight tiny models into the models folder on first use
    base_model: str = ""  # SD1.5-style repo: unet/, text_encoder/, tokenizer/, scheduler/
    vae: str = ""  # standalone VAE repo
    image_encoder: str = ""  # CLIPVisionModelWithProjection repo
    image_encoder_subfolder: str | None = None
    inpaint_model: str = ""  # SD1.5-inpainting repo (9-channel unet/)
    controlnet_openpose: str | None = None
    openpose_annotator: str | None = None  # controlnet-aux OpenposeDetector weights (None: mediapipe fallback)
    segformer: str | None = None  # clothes parser (None: mediapipe fallback)
    tryoff_segformer: str | None = None  # try-off's clothes parser (TryOffAnyone: segformer_b3); None: segformer
    sam: str | None = None  # segment-anything checkpoint file (None: no click-to-refine)
    schp: SchpWeights | None = None  # try-on human parser (CatVTON's SCHP LIP + ATR); None: SegFormer / mediapipe
    checkpoints: dict[str, CheckpointLocation] = field(default_factory=dict)
    # whole models a method loads by name (hub id or local folder in the hub repo's layout), e.g. sd3, temu_vtoff
    models: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resolved(self, tiny_root: Path) -> "ModelPreset":
        """Replace the ``{tiny}`` placeholder with the tiny models folder."""

        def sub(value):
            if isinstance(value, str):
                return value.replace("{tiny}", str(tiny_root))
            if isinstance(value, CheckpointLocation):
                return CheckpointLocation(sub(value.location), value.filename)
            if isinstance(value, SchpWeights):
                return SchpWeights(sub(value.location), value.lip, value.atr)
            if isinstance(value, dict):
                return {k: sub(v) for k, v in value.items()}
            return value

        return dataclasses.replace(self, **{f.name: sub(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def override(self, **locations: str | None) -> "ModelPreset":
        """Replace model locations (CLI flags such as --base_model); None values are ignored."""
        known = {f.name for f in dataclasses.fields(self)}
        for key in locations:
            if key not in known:
                raise ValueError(f"unknown preset field {key!r}")
        return dataclasses.replace(self, **{k: v for k, v in locations.items() if v is not None})


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> ModelPreset:
    """Load ``presets/models/<name>.yaml`` or a YAML file path; unknown keys are rejected by name."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"preset {name_or_path!r} not found; available: {', '.join(available_presets())}")
    # "{here}" = the preset file's own folder (a preset shipped beside its weights)
    data = yaml.safe_load(path.read_text().replace("{here}", str(path.resolve().parent))) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a preset must be a mapping")
    known = {f.name for f in dataclasses.fields(ModelPreset)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path.name}: unknown key(s) {', '.join(unknown)}")
    checkpoints = {}
    for key, value in (data.pop("checkpoints", None) or {}).items():
        if isinstance(value, str):
            value = {"location": value}
        if not isinstance(value, dict) or set(value) - {"location", "filename"} or "location" not in value:
            raise ValueError(f"{path.name}: checkpoints.{key} needs 'location' (and optional 'filename')")
        checkpoints[key] = CheckpointLocation(**value)
    schp = data.pop("schp", None)
    if schp is not None:
        if not isinstance(schp, dict) or set(schp) != {"location", "lip", "atr"} or not all(
                isinstance(v, str) for v in schp.values()):
            raise ValueError(f"{path.name}: schp needs exactly 'location', 'lip' and 'atr' (strings), got {schp!r}")
        data["schp"] = SchpWeights(**schp)
    models = data.pop("models", None) or {}
    if not isinstance(models, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in models.items()):
        raise ValueError(f"{path.name}: models must map names to hub ids or folders (strings)")
    data["models"] = models
    defaults = {task: check_task_defaults(task, values, path.name)
                for task, values in (data.pop("defaults", None) or {}).items()}
    return ModelPreset(checkpoints=checkpoints, defaults=defaults, **data)


def default_models_dir() -> Path:
    return Path(os.environ.get("ATELIER_MODELS_DIR", REPO_ROOT / "models")).expanduser()
