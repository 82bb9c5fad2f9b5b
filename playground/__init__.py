"""The Gradio side of the playground: model registry, handlers and layout (the engine is llama_core)."""
