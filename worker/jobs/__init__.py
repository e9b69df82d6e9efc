"""The job kinds: one module per kind (input model, run function, CLI payload, demo).

Each module registers its kind in `worker.jobs.registry`; everything else reads that.
"""
