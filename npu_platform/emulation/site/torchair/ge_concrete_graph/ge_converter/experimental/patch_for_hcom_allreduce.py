"""``patch_for_hcom_allreduce`` stand-in.

The real module, imported for its side effect, registers a GE converter that lowers
``torch.distributed.all_reduce`` inside torchair graphs to HCCL. The emulated backend runs
graphs eagerly, where ``all_reduce`` reaches the ``hccl`` process group directly, so there is
nothing to patch.
"""
