"""The local model itself: its registry of versions, the bundled base model,
GGUF export, the runtimes that decode it (llama.cpp, the torch loop), decoding
settings, scopes and the fair lock that shares it between users."""
