"""sglang integration: the Ascend platform class and the memory saver for unmodified sglang.

* :mod:`npu_platform.sglang.platform` - ``NPUPlatform``, a subclass of sglang's in-tree
  ``NPUSRTPlatform`` (so the ascend attention backend, the NPU graph runner and the NPU KV
  pools stay in use) that adds server-argument defaults and checks and wires the memory
  saver. sglang loads it through the ``sglang.srt.platforms`` entry point on an NPU (real
  or emulated).
* :mod:`npu_platform.sglang.memory_saver` - makes ``import torch_memory_saver`` resolve to
  :mod:`npu_platform.torch_memory_saver` on an NPU (real or emulated), so sglang's
  ``TorchMemorySaverAdapter`` runs on npu_platform's memory manager; idempotent
  :func:`~npu_platform.sglang.memory_saver.install` is the one call every start-up path uses.
* :mod:`npu_platform.sglang.capabilities` - Triton and NPU graphs as this NPU has them,
  and torch-native replacements for the Triton kernels sglang launches without asking.
* :mod:`npu_platform.sglang.memory_requests` - release/resume requests checked in sglang's
  tokenizer manager (unknown tag, release twice, resume of what is not released) so that a
  bad one gets sglang's error response instead of ending the scheduler.
* :mod:`npu_platform.sglang.server_args` - the defaults and checks, as plain functions.
* :mod:`npu_platform.sglang.plugin` - what the ``sglang.srt.plugins`` general plugin does
  (memory saver plus ``HookRegistry`` hooks).
* :mod:`npu_platform.sglang.conformance` - checks returning ``(name, passed, detail)``.

Importing this package is cheap: it imports neither torch, nor sglang, nor vLLM. Nothing in
it may import vLLM or :mod:`npu_platform.vllm`.
"""
