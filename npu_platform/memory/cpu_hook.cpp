// npu_platform CPU allocator hook (emulated NPU).
//
// Compiled on first use against the installed torch's c10 headers and loaded with ctypes by
// npu_platform.memory.cpu_hook. It replaces c10's CPU allocator with a thin wrapper:
//
// * On a thread whose "intercepting" flag is set (mirrored from the memory manager's
//   thread-local region state by a Python region listener), a CPU allocation of n > 0 bytes
//   calls the Python allocation callback, which returns memory from the memory manager
//   (0 on failure: we raise c10::OutOfMemoryError with the message Python left for us).
//   The DataPtr's deleter hands the address back to the Python free callback, whichever
//   thread drops the last reference and whether or not a region is still open.
// * Everything else is delegated untouched to the allocator that was installed before us,
//   so tensors allocated outside regions keep their original DataPtr and deleter.
//
// Only c10 headers are included, to keep the one-off compile short.

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_set>

#define NPU_PLATFORM_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

// Python callbacks (ctypes CFUNCTYPE). alloc returns the address or 0; free returns 0 on
// success. They take the GIL themselves.
using AllocCallback = std::uintptr_t (*)(std::size_t size);
using FreeCallback = int (*)(std::uintptr_t address);

std::atomic<AllocCallback> g_alloc_cb{nullptr};
std::atomic<FreeCallback> g_free_cb{nullptr};

thread_local bool t_intercepting = false;
thread_local std::string t_error;

// Addresses handed out by the manager and still owned by a DataPtr. Needed by the raw
// deleter (raw_deallocate gives us a bare pointer) and for the live count.
std::mutex g_live_mutex;
std::unordered_set<void*> g_live;
std::atomic<std::int64_t> g_live_count{0};
std::atomic<std::int64_t> g_leaked{0};

c10::Allocator* g_original = nullptr;
c10::DeleterFnPtr g_original_raw = nullptr;

bool forget_live(void* ptr) {
  std::lock_guard<std::mutex> guard(g_live_mutex);
  if (g_live.erase(ptr) == 0) {
    return false;
  }
  g_live_count.fetch_sub(1, std::memory_order_relaxed);
  return true;
}

void release_to_manager(void* ptr) {
  FreeCallback cb = g_free_cb.load(std::memory_order_acquire);
  // Without a callback (the interpreter is shutting down) the memory is left to the OS.
  if (cb == nullptr || cb(reinterpret_cast<std::uintptr_t>(ptr)) != 0) {
    g_leaked.fetch_add(1, std::memory_order_relaxed);
  }
}

// Deleter of DataPtrs that hold manager memory.
void delete_region_memory(void* ptr) {
  if (ptr == nullptr) {
    return;
  }
  forget_live(ptr);
  release_to_manager(ptr);
}

// raw_deleter(): must free anything allocate() returned as a simple pointer.
void delete_any(void* ptr) {
  if (ptr == nullptr) {
    return;
  }
  if (g_live_count.load(std::memory_order_acquire) > 0 && forget_live(ptr)) {
    release_to_manager(ptr);
    return;
  }
  g_original_raw(ptr);
}

class HookAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(std::size_t nbytes) override {
    if (t_intercepting && nbytes > 0) {
      AllocCallback cb = g_alloc_cb.load(std::memory_order_acquire);
      if (cb != nullptr) {
        return allocate_in_manager(cb, nbytes);
      }
    }
    return g_original->allocate(nbytes);
  }

  c10::DeleterFnPtr raw_deleter() const override {
    return g_original_raw == nullptr ? nullptr : &delete_any;
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

 private:
  static c10::DataPtr allocate_in_manager(AllocCallback cb, std::size_t nbytes) {
    // Nothing the callback does may land back here.
    t_intercepting = false;
    t_error.clear();
    std::uintptr_t address = cb(nbytes);
    t_intercepting = true;
    if (address == 0) {
      std::string why = t_error.empty() ? std::string("the memory manager refused it") : t_error;
      t_error.clear();
      TORCH_CHECK_WITH(
          OutOfMemoryError,
          false,
          "npu_platform: allocating ",
          nbytes,
          " bytes inside a torch_memory_saver region failed: ",
          why);
    }
    void* ptr = reinterpret_cast<void*>(address);
    {
      std::lock_guard<std::mutex> guard(g_live_mutex);
      g_live.insert(ptr);
      g_live_count.fetch_add(1, std::memory_order_relaxed);
    }
    return {ptr, ptr, &delete_region_memory, c10::Device(c10::DeviceType::CPU)};
  }
};

HookAllocator* g_hook = nullptr;

}  // namespace

// Install the hook (idempotent). Returns 0 when our allocator is c10's CPU allocator
// afterwards, 1 when an allocator with a higher priority kept its place.
NPU_PLATFORM_EXPORT int npu_platform_cpu_hook_install(int priority) {
  static std::mutex install_mutex;
  std::lock_guard<std::mutex> guard(install_mutex);
  if (g_hook == nullptr) {
    g_original = c10::GetCPUAllocator();
    g_original_raw = g_original->raw_deleter();
    g_hook = new HookAllocator();  // c10 wants allocators with static lifetime
  }
  if (c10::GetCPUAllocator() != g_hook) {
    c10::SetCPUAllocator(g_hook, static_cast<std::uint8_t>(priority));
  }
  return c10::GetCPUAllocator() == g_hook ? 0 : 1;
}

NPU_PLATFORM_EXPORT int npu_platform_cpu_hook_installed(void) {
  return g_hook != nullptr && c10::GetCPUAllocator() == g_hook;
}

NPU_PLATFORM_EXPORT void npu_platform_cpu_hook_set_callbacks(AllocCallback alloc_cb,
                                                             FreeCallback free_cb) {
  g_free_cb.store(free_cb, std::memory_order_release);
  g_alloc_cb.store(alloc_cb, std::memory_order_release);
}

// This thread's flag: route its CPU allocations to the manager (1) or not (0).
NPU_PLATFORM_EXPORT void npu_platform_cpu_hook_set_intercepting(int on) {
  t_intercepting = on != 0;
}

NPU_PLATFORM_EXPORT int npu_platform_cpu_hook_intercepting(void) {
  return t_intercepting ? 1 : 0;
}

// Called by the allocation callback before it returns 0: the reason, for the torch error.
NPU_PLATFORM_EXPORT void npu_platform_cpu_hook_set_error(const char* message) {
  t_error = message == nullptr ? "" : message;
}

// Manager allocations currently held by torch DataPtrs.
NPU_PLATFORM_EXPORT std::int64_t npu_platform_cpu_hook_live(void) {
  return g_live_count.load(std::memory_order_acquire);
}

// Frees that could not be handed back (no callback, or the callback failed).
NPU_PLATFORM_EXPORT std::int64_t npu_platform_cpu_hook_leaked(void) {
  return g_leaked.load(std::memory_order_acquire);
}
