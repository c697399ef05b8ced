"""Orchestration helpers on top of the core: ZenML stacks, launching pipeline runs, the ZenML model version.

They import ZenML (lazily where a command may not need it), so they live outside `kickvision/`,
whose core stays ZenML-free; steps and the CLI use them, `pipelines/` holds only the DAGs.
"""
