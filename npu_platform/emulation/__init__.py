"""The emulated Ascend NPU: everything that stands in for the hardware and for torch_npu.

Nothing outside this package knows it exists (layers 1-5 of npu_platform import torch_npu and
torch.npu exactly as on an Ascend machine). With ``NPU_PLATFORM_EMULATE=1``:

* :mod:`npu_platform.emulation.boot` (run from ``npu_platform-startup.pth`` in every Python
  process, standard library only) puts the folder ``site/`` first on ``sys.path``, so that
  ``import torch_npu`` / ``sgl_kernel_npu`` / ``torchair`` give the emulated packages under
  their real names; without the variable it does nothing at all.
* torch's device-backend autoload (entry point group ``torch.backends``, the way torch_npu
  loads) calls :func:`npu_platform.emulation.autoload.autoload` at the end of ``import
  torch``; it imports the emulated ``torch_npu`` when emulation is on and returns otherwise.
* The emulated ``torch_npu`` (``site/torch_npu``) builds or loads the
  native ``npu`` device (:mod:`npu_platform.emulation.native`, C++ in ``csrc/``), renames
  PrivateUse1 to ``npu``, registers ``torch.npu`` and offers torch_npu 2.13.0's Python API
  (the part the plugin, vLLM, sglang and dInfer call), its ``npu_*`` ops (schema-checked CPU
  references), the ATB ops sglang calls, ``contrib.transfer_to_npu`` and an ``hccl``
  process-group backend over gloo. It also loads the emulated ACL runtime
  (:mod:`npu_platform.emulation.acl`), whose virtual-memory calls the plugin's ACL memory
  driver makes, and which holds the device's one memory budget.

The native module (``native.load()``) exposes:

``init(device_count, memory_per_device)``
    once per process, before any allocation; a second call with other values raises.
``device_count()``, ``current_device()``, ``set_device(index)``
    the current device is per thread; a bad index raises ``RuntimeError``.
``allocated(device)``, ``peak_allocated(device)``, ``reset_peak(device)``, ``num_allocs(device)``
    bytes of live ``npu`` memory and its peak since the last reset.
``mem_get_info(device) -> (free, total)``
    total is ``memory_per_device``; an allocation past it raises ``torch.OutOfMemoryError``.
``register_allocator(alloc_fn_address, free_fn_address) -> int``
    a pluggable allocator, C signatures ``void* alloc(size_t, int device, void* stream)`` and
    ``void free(void*, size_t, int device, void* stream)`` (torch_npu's NPUPluggableAllocator).
``change_current_allocator(allocator_id)``
    route every ``npu`` allocation through it (id 0 is the built-in host allocator).
``create_pool(allocator_id) -> pool_id``, ``release_pool(pool_id)``
``begin_allocate_to_pool(device, pool_id)``, ``end_allocate_to_pool(device, pool_id)``
    while begun on a thread, that thread's allocations on ``device`` use the pool's allocator;
    memory returns to the allocator that made it, when its tensor is freed.
``pool_allocated(pool_id)``
    live bytes made through a pool.
``cpu_alias(tensor)``
    a CPU tensor over the same memory as an ``npu`` tensor (same sizes, strides, offset).
``is_pinned_ptr(address)``
    pinned host memory comes from a tracking allocator, so ``Tensor.is_pinned()`` works.

Streams and events are those of torch (``torch.Stream`` / ``torch.Event`` on device ``npu``):
work runs synchronously, so a recorded event is complete, ``query`` answers True and
``elapsed_time`` measures host time between the two records.
"""
