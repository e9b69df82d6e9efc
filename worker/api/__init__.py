"""`kcw serve`: the OpenAI-compatible Files and Batch API, on FastAPI and uvicorn."""
