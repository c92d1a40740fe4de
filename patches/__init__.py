"""Start-up patches: unmodified CUDA programs (dInfer) on an Ascend NPU or the emulated NPU.

Installed as ``npu_platform.patches``. The wheel puts ``npu_platform-startup.pth`` at the top
of site-packages (see ``setup.py``); Python runs it at every interpreter start, including
``multiprocessing`` spawn children, and it calls :func:`npu_platform.patches._boot.install`.

Cost and activation
    The start-up work is an environment lookup and one meta path finder put at the front of
    ``sys.meta_path`` (about 0.5 ms, nothing imported beyond ``npu_platform``,
    ``npu_platform.patches`` and ``npu_platform.patches._boot``; torch is never imported by
    the hook). The finder wakes up only when ``torch``, ``flash_attn``,
    ``torch_memory_saver`` or a vLLM/sglang ``parallel_state`` module is imported. Without
    ``NPU_PLATFORM_EMULATE`` and without torch_npu it then removes itself, having imported
    nothing more. Otherwise :func:`npu_platform.detect.detect` decides; the patches act only
    on a real or an emulated NPU.

Switches
    ``NPU_PLATFORM_PATCHES=0`` turns everything off (the finder is not even installed).
    ``NPU_PLATFORM_PATCH_ONLY=cuda,flash_attn`` (a comma-separated subset of ``cuda``,
    ``distributed``, ``flash_attn``, ``torch_memory_saver``) applies only those. A bad value
    is logged as a warning and no patch is applied. Each applied patch is logged once per
    process at INFO level on the ``npu_platform.patches`` logger.

The patches
    ``cuda`` (:mod:`.cuda`)
        Right after ``import torch``: the CUDA device API reaches the NPU. On a real NPU this
        is ``torch_npu.contrib.transfer_to_npu`` plus CUDA-graph aliases; on the emulated NPU
        ``torch.cuda.*`` device, stream and graph functions, ``.cuda()`` and ``"cuda"`` device
        arguments map to the CPU. The module docstring lists every redirected name and what
        is not redirected.
    ``distributed`` (:mod:`.distributed`)
        ``nccl`` becomes ``hccl`` (``gloo`` in emulation) in
        ``torch.distributed.init_process_group``/``new_group`` and in vLLM's and sglang's
        ``init_distributed_environment``/``initialize_model_parallel``, patched when those
        modules are imported.
    ``flash_attn`` (:mod:`.flash_attn`, :mod:`.bert_padding`)
        ``import flash_attn`` (``flash_attn.flash_attn_interface``, ``flash_attn.bert_padding``)
        gives npu_platform's implementation on :func:`npu_platform.ops.fusion_attention`,
        even when the CUDA package is installed.
    ``torch_memory_saver``
        ``import torch_memory_saver`` gives :mod:`npu_platform.torch_memory_saver`, even when
        the CUDA package is installed (through
        :func:`npu_platform.sglang.memory_saver.install`).
"""
