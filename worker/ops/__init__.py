"""Operating the stack: processes, redis-server, LLM servers, workers, compose, health, models.

No pytest here: the test harness and the benchmarks use these modules as they are.
"""
