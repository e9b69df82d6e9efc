"""What several test tiers share: the process harness and the generated-input strategies.

`tests.support.processes` starts the real parts (redis-server, the LLM servers, workers)
through `worker.ops` and turns their start errors into test outcomes;
`tests.support.generated` holds the hypothesis strategies and case counters of the
generated-input tests of the unit and fault tiers.
"""
