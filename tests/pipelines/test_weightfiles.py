"""Weights files named for what they are: LFS pointers, HTML pages, empty/truncated files, pickled objects."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from pipelines.core.checkpoints import read_state_dict
from pipelines.core.weightfiles import check_weights_file
from pipelines.types import CheckpointError

LFS = ("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
       "size 3438167534\n")


class Payload:
    """Unpickling this runs a shell command (what a malicious checkpoint does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["model.safetensors", "pytorch_model.bin", "sam_vit_b.pth"])
def test_lfs_pointer_html_page_and_empty_file(tmp_path, name):
    cases = {
        LFS: r"the file is a git-LFS pointer \(\d+ bytes\), not the weights: fetch the real file",
        "<!DOCTYPE html><html><body>Access to model is restricted</body></html>": r"the file is an HTML page",
        "\n  <html><head><title>404</title></head></html>": r"the file is an HTML page",
        "": r"the file is empty \(0 bytes\)",
    }
    for text, message in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(CheckpointError, match=rf"^{name}: {message}"):
            check_weights_file(path)
        with pytest.raises(CheckpointError, match=message):  # the loaders say the same
            read_state_dict(path)


def test_truncated_files(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.zeros(1000)}, str(good))
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=r"cut.safetensors: the file is truncated \(\d+ of \d+ bytes\)"):
        read_state_dict(cut)
    cut.write_bytes(data[:20])
    with pytest.raises(CheckpointError, match=r"cut.safetensors: the file is truncated"):
        read_state_dict(cut)
    renamed = tmp_path / "renamed.safetensors"
    renamed.write_bytes(b"\x00" * 4 + os.urandom(200))
    with pytest.raises(CheckpointError, match="renamed.safetensors: not a safetensors file"):
        read_state_dict(renamed)
    for zipped in (True, False):
        full = tmp_path / "full.pt"
        torch.save({"w": torch.zeros(1000)}, full, _use_new_zipfile_serialization=zipped)
        half = tmp_path / "half.pt"
        half.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        with pytest.raises(CheckpointError, match=r"half.pt: the file is truncated or damaged"):
            read_state_dict(half)
    check_weights_file(good)  # a whole file passes
    assert read_state_dict(good)["w"].shape == (1000,)


def test_a_pickle_with_a_code_payload_is_refused_in_one_line_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    for name, write in (("evil.pt", lambda p: torch.save({"w": torch.zeros(2), "x": Payload(marker)}, p)),
                        ("evil.bin", lambda p: p.write_bytes(pickle.dumps({"x": Payload(marker)})))):
        path = tmp_path / name
        write(path)
        with pytest.raises(CheckpointError) as caught:
            read_state_dict(path)
        message = str(caught.value)
        assert message.startswith(f"{name}: refused: the file holds Python objects (posix.system), not only "
                                  "tensors; it was not run"), message
        assert "\n" not in message and "weights_only" not in message
    assert not marker.exists()


def test_the_command_line_says_the_same_in_one_line(models_dir, tmp_path, capsys):
    """`--weights` given an LFS pointer or a payload pickle: exit 2 and one `error:` line, nothing run."""
    from pipelines.tryon.cli import main

    Image = pytest.importorskip("PIL.Image")
    Image.new("RGB", (96, 128), "grey").save(tmp_path / "person.png")
    Image.new("RGB", (96, 128), "red").save(tmp_path / "garment.png")
    pointer = tmp_path / "model.safetensors"
    pointer.write_text(LFS)
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "model.bin"
    torch.save({"w": torch.zeros(2), "x": Payload(marker)}, evil)
    for weights, words in ((pointer, "the file is a git-LFS pointer"), (evil, "refused: the file holds Python objects")):
        code = main(["--person", str(tmp_path / "person.png"), "--garment", str(tmp_path / "garment.png"),
                     "--auto_mask", "--preset", "tiny", "--models_dir", str(models_dir), "--weights", str(weights),
                     "--steps", "1", "--output_path", str(tmp_path / "out")])
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and words in errors[0] and weights.name in errors[0], errors
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_the_tabs_say_the_same(models_dir, tmp_path):
    """'Use in studio' with a pointer file: the Design tab's error carries the same sentence."""
    from pipelines.preprocess.colors import swatch_from_hex
    from pipelines.service import StudioService
    from pipelines.types import UserError

    service = StudioService("tiny", models_dir=models_dir, device="cpu")
    pointer = tmp_path / "color_adapter.safetensors"
    pointer.write_text(LFS)
    service.use_weights("garment_color", pointer)
    params = {"prompt": "x", "color": swatch_from_hex("#ff0000"), "height": 80, "width": 64, "num_inference_steps": 1}
    with pytest.raises(UserError, match=r"^Checkpoint problem: color_adapter.safetensors: the file is a git-LFS "
                                        r"pointer \(\d+ bytes\), not the weights: fetch the real file"):
        service.run("garment", params)
