"""Prompt templates: how each family of fine-tuned LLaMA expects its input wrapped."""

from __future__ import annotations

# Sources: Alpaca — tatsu-lab/stanford_alpaca (prompt without input); Vicuna v1.1 — lm-sys/FastChat
# conversation template; Llama-2-chat — meta-llama/llama generation.py ([INST], <<SYS>>).
TEMPLATES: dict[str, str] = {
    "plain": "{prompt}",
    "alpaca": (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{prompt}\n\n### Response:\n"
    ),
    "vicuna": (
        "A chat between a curious user and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the user's questions. USER: {prompt} ASSISTANT:"
    ),
    "llama-2-chat": "[INST] {system}{prompt} [/INST]",
}


def apply_template(name: str, prompt: str, system: str = "") -> str:
    """Wrap `prompt` in the named template; `system` is used by Llama-2-chat only."""
    if name not in TEMPLATES:
        raise KeyError(f"unknown prompt template {name!r}; choose one of {', '.join(TEMPLATES)}")
    system_block = f"<<SYS>>\n{system.strip()}\n<</SYS>>\n\n" if system.strip() else ""
    return TEMPLATES[name].format(prompt=prompt.strip() if name != "plain" else prompt, system=system_block)
