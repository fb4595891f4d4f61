"""The unified generate + embed model, its adapters (TMoLE, LoRA) and the base-model stage."""
