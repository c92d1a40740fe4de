/*
 * npu_platform allocator shim: the two C entry points a torch pluggable allocator calls,
 * forwarded to callbacks that Python installs (npu_platform.memory.torch_route).
 *
 *   torch_npu.npu.memory.NPUPluggableAllocator(path, "npu_platform_alloc", "npu_platform_free")
 *   torch.cuda.memory.CUDAPluggableAllocator(path, "npu_platform_alloc", "npu_platform_free")
 *
 * Both expect   void *alloc(size_t size, int device, <stream>)
 *               void  free(void *ptr, size_t size, int device, <stream>)
 * where <stream> is an aclrtStream or a cudaStream_t: an opaque pointer either way, so this
 * file needs neither CANN nor CUDA headers and is built by the package build with the
 * system C compiler.
 *
 * The callbacks do the real work (MemoryManager.malloc / MemoryManager.free). Nothing here
 * exits or aborts: without callbacks, or when the allocation callback fails, alloc returns
 * NULL and torch reports an out-of-memory error; free without callbacks does nothing.
 */

#include <stddef.h>

#define NPU_PLATFORM_EXPORT __attribute__((visibility("default")))

typedef void *(*npu_platform_alloc_cb)(size_t size, int device, void *stream);
typedef void (*npu_platform_free_cb)(void *ptr, size_t size, int device, void *stream);

/* Read and written with atomic builtins: torch may allocate on any thread while Python
 * installs or clears the callbacks. */
static npu_platform_alloc_cb g_alloc_cb = NULL;
static npu_platform_free_cb g_free_cb = NULL;

NPU_PLATFORM_EXPORT void npu_platform_set_callbacks(npu_platform_alloc_cb alloc_cb,
                                                    npu_platform_free_cb free_cb) {
    __atomic_store_n(&g_free_cb, free_cb, __ATOMIC_RELEASE);
    __atomic_store_n(&g_alloc_cb, alloc_cb, __ATOMIC_RELEASE);
}

/* 1 when both callbacks are installed (for diagnostics and tests). */
NPU_PLATFORM_EXPORT int npu_platform_has_callbacks(void) {
    return __atomic_load_n(&g_alloc_cb, __ATOMIC_ACQUIRE) != NULL &&
           __atomic_load_n(&g_free_cb, __ATOMIC_ACQUIRE) != NULL;
}

NPU_PLATFORM_EXPORT void *npu_platform_alloc(size_t size, int device, void *stream) {
    npu_platform_alloc_cb cb = __atomic_load_n(&g_alloc_cb, __ATOMIC_ACQUIRE);
    if (cb == NULL || size == 0) {
        return NULL;
    }
    return cb(size, device, stream);
}

NPU_PLATFORM_EXPORT void npu_platform_free(void *ptr, size_t size, int device, void *stream) {
    npu_platform_free_cb cb = __atomic_load_n(&g_free_cb, __ATOMIC_ACQUIRE);
    if (cb == NULL || ptr == NULL) {
        return;
    }
    cb(ptr, size, device, stream);
}
