"""The small functions that pyproject's entry points name (installed as
``npu_platform.entry_points``).

Empty for now: the vLLM and sglang entry points (issues 4 and 5) land here.
"""
