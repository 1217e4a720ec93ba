"""The settings tab: device, preset, loaded models and their memory; switch model sets."""

from __future__ import annotations

from typing import Any

import gradio as gr

from studio.components import StudioContext


def status_markdown(service) -> str:
    status = service.status()
    lines = [
        f"**Preset**: `{status['preset']}` · **device**: `{status['device']}` · **dtype**: `{status['dtype']}`"
        "",
    ]
    if status["gpu"]:
        gpu = status["gpu"]
        lines.append(
            f"**GPU**: {gpu['device']} · allocated {gpu['allocated_mib']:.0f} MiB · peak {gpu['peak_mib']:.0f} MiB"
            f" of {gpu['total_mib']:.0f} MiB"
        )
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
    info = gr.Markdown(status_markdown(service), elem_id="settings-status")

    def on_switch(name):
        problem = service.preset_problems(name)
        if problem:
            raise gr.Error(problem)
        message = service.switch_preset(name)
        gr.Info(message)
        return status_markdown(service)

    switch.click(on_switch, preset, info, concurrency_id="gpu")
    use_tiny.click(lambda: (service.switch_preset("tiny"), status_markdown(service))[1], None, info,
                   concurrency_id="gpu").then(lambda: "tiny", None, preset)
    refresh.click(lambda: status_markdown(service), None, info, queue=False)
    # Keep the memory/loaded-model table current while the studio works in other tabs.
    gr.Timer(4.0).tick(lambda: status_markdown(service), None, info, queue=False, show_progress="hidden")
    return {"status": info, "preset": preset}
