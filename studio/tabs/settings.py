"""The settings tab: device, preset, loaded models and their memory; switch model sets."""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipelines.types import UserError
from studio.components import StudioContext

MEMORY_CHOICES = ("auto", "resident", "model_offload")  # the SD1.5-family tabs (TEMU-VTOFF has its own)


def status_markdown(service) -> str:
    status = service.status()
    lines = [
        f"**Preset**: `{status['preset']}` · **device**: `{status['device']}` · **dtype**: `{status['dtype']}`"
        "",
    ]
    cap = f" · cap {status['memory_cap_gib']:g} GiB" if status.get("memory_cap_gib") else ""
    lines.append(f"**Memory**: {status['memory_mode'].replace('_', ' ')} ({status['memory_why']}){cap}"
                 + (" · VAE tiling on" if status.get("vae_tiling") else "") + f" · **sampler**: {status['sampler']}")
    if status["gpu"]:
        gpu = status["gpu"]
        lines.append(
            f"**GPU**: {gpu['device']} · allocated {gpu['allocated_mib']:.0f} MiB · peak {gpu['peak_mib']:.0f} MiB"
            f" of {gpu['total_mib']:.0f} MiB"
        )
    if service.banner():
        lines.append(f"ℹ️ {service.banner()}")
    problem = service.preset_problems()
    if problem:
        lines.append(f"⚠️ {problem}")
    if not status["loaded"]:
        lines.append("No models loaded yet: they load on first use.")
        return "\n\n".join(lines)
    table = [f"**Loaded** ({status['total_mib']:.1f} MiB):", "", "| name | source | params (M) | MiB | load s |",
             "|---|---|---|---|---|"]
    for item in status["loaded"]:
        table.append(
            f"| {item['name']} | `{item['source']}` | {item['parameters_m']:.2f} | {item['mib']:.1f} | {item['load_s']:.2f} |"
        )
    return "\n\n".join(lines) + "\n\n" + "\n".join(table)


def build_settings_tab(ctx: StudioContext) -> dict[str, Any]:
    service = ctx.service
    with gr.Row():
        preset = gr.Dropdown(service.presets(), value=service.preset_name, label="Model preset", elem_id="settings-preset")
        switch = gr.Button("Switch preset", elem_id="settings-switch")
        use_tiny = gr.Button("Use the offline 'tiny' preset", elem_id="settings-use-tiny")
        refresh = gr.Button("Refresh", elem_id="settings-refresh")
    with gr.Row():
        memory_mode = gr.Dropdown(list(MEMORY_CHOICES), value="auto", label="GPU memory", elem_id="settings-memory-mode",
                                  info="resident: every model stays on the GPU (fastest tab switches); model offload: "
                                       "only the running task's models are on it; auto: resident from 16 GiB free")
        memory_cap = gr.Number(value=0, minimum=0, label="Memory cap, GiB (0 = none)", elem_id="settings-memory-cap",
                               info="caps this process's CUDA memory, to try a small GPU on a big one")
        vae_tiling = gr.Checkbox(value=False, label="VAE tiling (large images, less memory)",
                                 elem_id="settings-vae-tiling")
        sampler = gr.Dropdown([("DDIM (the methods' own)", "ddim"), ("DPM-Solver++ 2M (~20 steps)", "dpmpp")],
                              value="ddim", label="Sampler", elem_id="settings-sampler",
                              info="DPM-Solver++ reaches in ~20 steps what DDIM does in ~50; it ignores DDIM eta")
        apply_memory = gr.Button("Apply", elem_id="settings-memory-apply")
    info = gr.Markdown(status_markdown(service), elem_id="settings-status")

    def on_switch(name):
        problem = service.preset_problems(name)
        if problem:
            raise gr.Error(problem)
        message = service.switch_preset(name)
        gr.Info(message)
        return status_markdown(service)

    def on_memory(mode, cap, tiling, sampler_name):
        try:
            message = service.configure_memory(mode, float(cap) if cap else None, bool(tiling), sampler_name)
        except UserError as error:
            raise gr.Error(str(error))
        gr.Info(message)
        return status_markdown(service)

    switch.click(on_switch, preset, info, concurrency_id="gpu")
    apply_memory.click(on_memory, [memory_mode, memory_cap, vae_tiling, sampler], info, concurrency_id="gpu")
    use_tiny.click(lambda: (service.switch_preset("tiny"), status_markdown(service))[1], None, info,
                   concurrency_id="gpu").then(lambda: "tiny", None, preset)
    refresh.click(lambda: status_markdown(service), None, info, queue=False)
    # Keep the memory/loaded-model table current while the studio works in other tabs.
    gr.Timer(4.0).tick(lambda: status_markdown(service), None, info, queue=False, show_progress="hidden")
    return {"status": info, "preset": preset, "memory_mode": memory_mode, "memory_cap": memory_cap,
            "vae_tiling": vae_tiling, "sampler": sampler}
