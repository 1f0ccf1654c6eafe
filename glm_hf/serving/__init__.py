"""`glm-hf serve`: an OpenAI-compatible server with dynamic batching and a chat page (needs the `serve` extra:
FastAPI and uvicorn)."""
