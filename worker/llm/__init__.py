"""LLM access: the pooled client (`worker.llm.client`), its error boundary, routing, windows.

Import the modules themselves; this package imports nothing, so reading a job's
types does not load httpx or openai.
"""
