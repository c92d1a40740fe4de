"""Start-up patches: unmodified CUDA programs (dInfer) on an Ascend NPU or the emulated NPU.

Installed as ``npu_platform.patches``. The wheel puts ``npu_platform-startup.pth`` at the top
of site-packages (see ``setup.py``); Python runs it at every interpreter start, including
``multiprocessing`` spawn children, and it calls :func:`npu_platform.patches._boot.install`.

Cost and activation
    The start-up work is an environment lookup and one meta path finder put at the front of
    ``sys.meta_path``, nothing imported beyond ``npu_platform``, ``npu_platform.patches`` and
    ``npu_platform.patches._boot``; torch is never imported by the hook. The ``.pth`` line
    before it runs the emulated NPU's start-up hook (:mod:`npu_platform.emulation.boot`, which
    imports only itself and its package); the whole file takes about 1 ms. The finder wakes
    up only when ``torch``, ``flash_attn``, ``torch_memory_saver`` or a vLLM/sglang
    ``parallel_state`` module is imported. Without ``NPU_PLATFORM_EMULATE`` and without
    torch_npu it then removes itself, having imported nothing more. Otherwise
    :func:`npu_platform.detect.detect` decides; the patches act only on a real or an emulated
    NPU.

Switches
    ``NPU_PLATFORM_PATCHES=0`` turns everything off (the finder is not even installed).
    Without ``NPU_PLATFORM_PATCH_ONLY`` the default set applies: ``distributed``,
    ``flash_attn``, ``torch_memory_saver``. ``NPU_PLATFORM_PATCH_ONLY=cuda,flash_attn`` (a
    comma-separated subset of ``cuda``, ``distributed``, ``flash_attn``,
    ``torch_memory_saver``) applies only those; programs written for CUDA (dInfer) ask for
    ``cuda,distributed,flash_attn,torch_memory_saver``. A bad value is logged as a warning
    and no patch is applied. One "patches active" line per process is logged on the
    ``npu_platform.patches`` logger, at WARNING when ``cuda`` is among them and at INFO
    otherwise; each applied patch is logged once at INFO.

The patches
    ``cuda`` (:mod:`.cuda`, not in the default set)
        Right after ``import torch``: the CUDA device API reaches the NPU through
        ``torch_npu.contrib.transfer_to_npu`` plus CUDA-graph aliases, on a real and on the
        emulated NPU alike. It makes ``torch.cuda.is_available()`` True and disables
        ``torch.jit.script`` process-wide, which is why vLLM and sglang (native NPU paths)
        do not get it by default.
    ``distributed`` (:mod:`.distributed`)
        ``nccl`` becomes ``hccl`` (and ``cuda`` devices ``npu``) in
        ``torch.distributed.init_process_group``/``new_group`` and in vLLM's and sglang's
        ``init_distributed_environment``/``initialize_model_parallel``, patched when those
        modules are imported.
    ``flash_attn`` (:mod:`.flash_attn`, :mod:`.bert_padding`)
        ``import flash_attn`` (``flash_attn.flash_attn_interface``, ``flash_attn.bert_padding``)
        gives npu_platform's implementation on :func:`npu_platform.ops.fusion_attention`,
        even when the CUDA package is installed.
    ``torch_memory_saver``
        ``import torch_memory_saver`` gives :mod:`npu_platform.torch_memory_saver`, even when
        the CUDA package is installed. The redirect is the sglang integration's finder
        (:func:`npu_platform.sglang.memory_saver.install`, which sglang's entry points call
        too), so a process has one finder for ``torch_memory_saver`` whichever path installed
        it.
"""
