"""Throughput and overhead benchmarks: direct to the LLM server vs through Redis and a worker."""
