"""ttsearch: compute-optimal test-time search for LLM math reasoning, on Ray."""
