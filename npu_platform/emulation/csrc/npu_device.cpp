// The emulated Ascend NPU as a torch device.
//
// torch's PrivateUse1 backend (renamed "npu" by the Python caller, before this library is
// loaded) becomes a device whose memory is host memory and whose kernels are torch's CPU
// kernels:
//
//  * memory: `NpuAllocator` (a c10::DeviceAllocator, so torch.accelerator's memory calls work)
//    hands out host memory accounted per device against a fixed capacity, through the
//    built-in host allocator or a pluggable C allocator (torch_npu's NPUPluggableAllocator
//    interface), optionally per thread and device through a pool;
//  * kernels: factory functions, copies, the view ops that have CPU-only kernels, set_ and
//    resize_ are native (npu tensors alias npu memory); every other aten op runs through
//    at::native::cpu_fallback, which computes on CPU aliases-by-copy and writes results and
//    mutated arguments back into npu memory;
//  * runtime: a device guard (current device and stream per thread), streams and events
//    that are bookkeeping only because all work is synchronous, and the PrivateUse1 hooks
//    (generators, pinned host memory, pointer queries, storage resizing).
//
// The Python module (npu_platform.emulation.native.load()) exposes init() and the
// bookkeeping calls listed in npu_platform/emulation/__init__.py.

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/EmptyTensor.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/core/CachingHostAllocator.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <ATen/native/CPUFallback.h>
#include <ATen/ops/_local_scalar_dense.h>
#include <ATen/ops/_reshape_alias_native.h>
#include <ATen/ops/as_strided_native.h>
#include <ATen/ops/is_set_to_native.h>
#include <ATen/ops/resize_native.h>
#include <ATen/ops/set_native.h>
#include <ATen/ops/unfold_native.h>
#include <ATen/ops/view_as_complex_native.h>
#include <ATen/ops/view_as_real_native.h>
#include <ATen/ops/view_native.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/core/impl/alloc_cpu.h>
#include <dlfcn.h>
#include <torch/csrc/utils/pybind.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

using c10::DeviceIndex;
using c10::CachingAllocator::Stat;
using c10::CachingAllocator::StatArray;
using c10::CachingAllocator::StatType;

constexpr c10::DeviceType kNpu = c10::DeviceType::PrivateUse1;
constexpr size_t kSmallAllocation = 1 << 20;  // torch's small/large pool boundary (1 MiB)
constexpr auto kAggregate = static_cast<size_t>(StatType::AGGREGATE);

c10::Device npu(DeviceIndex index) {
  return {kNpu, index};
}

// ------------------------------------------------------------------------------- devices

struct DeviceMemory {
  std::mutex mutex;
  StatArray bytes;   // live bytes (aggregate, small, large)
  StatArray blocks;  // live allocations
  int64_t num_ooms = 0;
};

// Filled once by init(); the count is published last (release), so a reader that sees a
// non-zero count (acquire) sees the tables complete. 0 means "not initialised".
std::atomic<DeviceIndex> g_device_count{0};
size_t g_capacity = 0;  // bytes per device
std::unique_ptr<DeviceMemory[]> g_memory;
std::vector<at::Generator> g_generators;  // per-device default generators
std::mutex g_init_mutex;

DeviceIndex device_count() {
  return g_device_count.load(std::memory_order_acquire);
}

void check_device(int64_t index) {
  const DeviceIndex count = device_count();
  TORCH_CHECK(
      count > 0,
      "the emulated NPU has no device in this process: "
      "npu_platform.emulation.native.install_device(device_count, memory_per_device) has not "
      "been called (the emulated torch_npu calls it when at least one device is visible)");
  TORCH_CHECK(
      index >= 0 && index < count,
      "invalid npu device index ",
      index,
      ": the emulated NPU has ",
      static_cast<int>(count),
      " device(s), npu:0 to npu:",
      count - 1);
}

void init(int64_t count, int64_t memory_per_device) {
  TORCH_CHECK_VALUE(
      count >= 1 && count <= std::numeric_limits<DeviceIndex>::max(),
      "device_count must be between 1 and ",
      static_cast<int>(std::numeric_limits<DeviceIndex>::max()),
      ", got ",
      count);
  TORCH_CHECK_VALUE(
      memory_per_device > 0, "memory_per_device must be positive, got ", memory_per_device);
  std::lock_guard<std::mutex> lock(g_init_mutex);
  if (device_count() > 0) {
    TORCH_CHECK(
        device_count() == count && g_capacity == static_cast<size_t>(memory_per_device),
        "the emulated NPU is already initialised with ",
        static_cast<int>(device_count()),
        " device(s) of ",
        g_capacity,
        " bytes; it cannot be re-initialised with ",
        count,
        " device(s) of ",
        memory_per_device,
        " bytes in the same process");
    return;
  }
  g_capacity = static_cast<size_t>(memory_per_device);
  g_memory = std::make_unique<DeviceMemory[]>(count);
  for (int64_t i = 0; i < count; ++i) {
    g_generators.push_back(at::detail::createCPUGenerator());
  }
  g_device_count.store(static_cast<DeviceIndex>(count), std::memory_order_release);
}

// The current device and, per device, the current stream id of this thread (0: default).
thread_local DeviceIndex t_device = 0;
thread_local std::vector<c10::StreamId> t_streams;

c10::StreamId& current_stream_slot(DeviceIndex index) {
  if (t_streams.size() <= static_cast<size_t>(index)) {
    t_streams.resize(index + 1, 0);
  }
  return t_streams[index];
}

// ---------------------------------------------------------------------------- allocators

// A pluggable allocator's C entry points (torch_npu's NPUPluggableAllocator signatures);
// both null for allocator 0, the built-in host allocator (c10::alloc_cpu, 64-byte aligned,
// not c10's CPU allocator: npu memory stays out of whatever CPU allocator is installed).
using AllocFn = void* (*)(size_t, int, void*);
using FreeFn = void (*)(void*, size_t, int, void*);
struct Backend {
  AllocFn alloc = nullptr;
  FreeFn free = nullptr;
};

// Allocations made on one thread and device while a pool is begun there use the pool's
// backend; the pool counts their live bytes.
struct Pool {
  Backend backend;
  std::atomic<int64_t> live_bytes{0};
  std::atomic<int64_t> open_scopes{0};  // begins not yet ended, over all threads
};

std::mutex g_registry_mutex;  // guards the four below
std::vector<Backend> g_backends{Backend{}};
int64_t g_current_backend = 0;
std::unordered_map<int64_t, std::shared_ptr<Pool>> g_pools;
int64_t g_next_pool_id = 1;

struct PoolScope {
  DeviceIndex device;
  int64_t pool_id;
  std::shared_ptr<Pool> pool;
};
thread_local std::vector<PoolScope> t_pool_scopes;  // innermost last

Backend backend_by_id(int64_t id) {
  TORCH_CHECK_VALUE(
      id >= 0 && id < static_cast<int64_t>(g_backends.size()),
      "unknown npu allocator id ",
      id,
      " (register_allocator() returns the ids; 0 is the built-in host allocator)");
  return g_backends[id];
}

std::shared_ptr<Pool> pool_by_id(int64_t id) {
  auto it = g_pools.find(id);
  TORCH_CHECK_VALUE(it != g_pools.end(), "unknown or released npu memory pool ", id);
  return it->second;
}

// Everything needed to free one allocation the way it was made, whatever the current
// allocator or pool is by then. It is the DataPtr's context.
struct Allocation {
  void* ptr;
  size_t size;
  DeviceIndex device;
  Backend backend;
  std::shared_ptr<Pool> pool;
};

// Live npu allocations by address, for getDeviceFromPtr.
std::mutex g_live_mutex;
std::map<uintptr_t, const Allocation*> g_live;

template <typename Fn>
void for_each_stat(StatArray& stats, size_t size, Fn fn) {
  const StatType pool = size <= kSmallAllocation ? StatType::SMALL_POOL : StatType::LARGE_POOL;
  fn(stats[kAggregate]);
  fn(stats[static_cast<size_t>(pool)]);
}

// The device's physical memory is one budget shared with the emulated ACL runtime (its
// virtual-memory calls serve the pluggable allocators of the memory manager), as HBM is
// shared between torch_npu's caching allocator and aclrtMallocPhysical on Ascend. When that
// library is loaded (the emulated torch_npu loads it), the built-in allocator charges its
// bytes to it and free memory is what it reports; without it the device counts alone.
using ChargeFn = int (*)(int32_t, int64_t);
using UsedFn = size_t (*)(int32_t);
struct AclBudget {
  ChargeFn charge = nullptr;
  UsedFn used = nullptr;
};
AclBudget acl_budget() {
  static std::once_flag once;
  static AclBudget budget;
  std::call_once(once, [] {
    budget.charge = reinterpret_cast<ChargeFn>(dlsym(RTLD_DEFAULT, "fake_acl_charge"));
    budget.used = reinterpret_cast<UsedFn>(dlsym(RTLD_DEFAULT, "fake_acl_used_bytes"));
    if (budget.charge == nullptr || budget.used == nullptr) {
      budget = AclBudget{};
    }
  });
  return budget;
}

// Bytes of the device's memory in use: the shared budget's, else the device's own count.
size_t device_used(DeviceIndex device, const DeviceMemory& memory) {
  const AclBudget budget = acl_budget();
  if (budget.used != nullptr) {
    return budget.used(device);
  }
  return static_cast<size_t>(memory.bytes[kAggregate].current);
}

// Counts `size` bytes in the device's statistics. Memory of the built-in allocator
// (`physical`) is also taken from the device's capacity, or torch.OutOfMemoryError is thrown;
// a pluggable allocator takes its own memory (and returns NULL when there is none).
void reserve(DeviceIndex device, size_t size, bool physical) {
  DeviceMemory& memory = g_memory[device];
  std::lock_guard<std::mutex> lock(memory.mutex);
  const size_t used = device_used(device, memory);
  const AclBudget budget = acl_budget();
  bool fits = size <= g_capacity - std::min(used, g_capacity);
  if (physical && fits && budget.charge != nullptr) {
    fits = budget.charge(device, static_cast<int64_t>(size)) == 0;
  }
  if (physical && !fits) {
    ++memory.num_ooms;
    TORCH_CHECK_WITH(
        OutOfMemoryError,
        false,
        "npu:",
        static_cast<int>(device),
        " out of memory: tried to allocate ",
        size,
        " bytes; ",
        used,
        " bytes in use of ",
        g_capacity,
        " total (",
        g_capacity - std::min(used, g_capacity),
        " free) on the emulated device. Free npu tensors or start the emulation with more "
        "memory per device.");
  }
  for_each_stat(memory.bytes, size, [&](Stat& s) { s.increase(size); });
  for_each_stat(memory.blocks, size, [](Stat& s) { s.increase(1); });
}

void unreserve(DeviceIndex device, size_t size, bool physical) {
  DeviceMemory& memory = g_memory[device];
  std::lock_guard<std::mutex> lock(memory.mutex);
  const AclBudget budget = acl_budget();
  if (physical && budget.charge != nullptr) {
    budget.charge(device, -static_cast<int64_t>(size));
  }
  for_each_stat(memory.bytes, size, [&](Stat& s) { s.decrease(size); });
  for_each_stat(memory.blocks, size, [](Stat& s) { s.decrease(1); });
}

void free_allocation(void* context) {
  std::unique_ptr<Allocation> allocation(static_cast<Allocation*>(context));
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    g_live.erase(reinterpret_cast<uintptr_t>(allocation->ptr));
  }
  if (allocation->backend.free != nullptr) {
    allocation->backend.free(allocation->ptr, allocation->size, allocation->device, nullptr);
  } else {
    c10::free_cpu(allocation->ptr);
  }
  if (allocation->pool) {
    allocation->pool->live_bytes -= static_cast<int64_t>(allocation->size);
  }
  unreserve(allocation->device, allocation->size, allocation->backend.alloc == nullptr);
}

class NpuAllocator final : public c10::DeviceAllocator {
 public:
  // Allocates on the current device of this thread (kernels set it with a device guard).
  c10::DataPtr allocate(size_t size) override {
    const DeviceIndex device = t_device;
    check_device(device);
    if (size == 0) {
      return {nullptr, npu(device)};
    }
    std::shared_ptr<Pool> pool;
    for (auto it = t_pool_scopes.rbegin(); it != t_pool_scopes.rend(); ++it) {
      if (it->device == device) {
        pool = it->pool;
        break;
      }
    }
    Backend backend;
    if (pool) {
      backend = pool->backend;
    } else {
      std::lock_guard<std::mutex> lock(g_registry_mutex);
      backend = g_backends[g_current_backend];
    }
    const bool physical = backend.alloc == nullptr;
    reserve(device, size, physical);
    void* ptr = nullptr;
    try {
      ptr = physical ? c10::alloc_cpu(size) : backend.alloc(size, device, nullptr);
    } catch (...) {
      unreserve(device, size, physical);
      throw;
    }
    if (ptr == nullptr) {
      unreserve(device, size, physical);
      TORCH_CHECK_WITH(
          OutOfMemoryError,
          false,
          "npu:",
          static_cast<int>(device),
          " out of memory: the pluggable allocator returned NULL for ",
          size,
          " bytes");
    }
    if (pool) {
      pool->live_bytes += static_cast<int64_t>(size);
    }
    auto allocation = std::make_unique<Allocation>(Allocation{ptr, size, device, backend, pool});
    {
      std::lock_guard<std::mutex> lock(g_live_mutex);
      g_live[reinterpret_cast<uintptr_t>(ptr)] = allocation.get();
    }
    return {ptr, allocation.release(), &free_allocation, npu(device)};
  }

  // The context is not the pointer, so there is no raw deleter.
  c10::DeleterFnPtr raw_deleter() const override {
    return nullptr;
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }

  bool initialized() override {
    return device_count() > 0;
  }

  // Nothing is cached: freed memory goes straight back to the allocator that made it.
  void emptyCache(c10::MempoolId_t /*mempool_id*/) override {}

  // Work is synchronous, so memory never needs to outlive a stream's queued work.
  void recordStream(const c10::DataPtr& /*ptr*/, c10::Stream /*stream*/) override {}

  c10::CachingDeviceAllocator::DeviceStats getDeviceStats(DeviceIndex device) override {
    check_device(device);
    DeviceMemory& memory = g_memory[device];
    std::lock_guard<std::mutex> lock(memory.mutex);
    c10::CachingDeviceAllocator::DeviceStats stats;
    // Every allocation is its own segment, active and fully used: the block stats and the
    // byte stats each have one value under all of torch's names.
    stats.allocation = stats.segment = stats.active = memory.blocks;
    stats.allocated_bytes = stats.reserved_bytes = stats.active_bytes = stats.requested_bytes =
        memory.bytes;
    stats.num_ooms = memory.num_ooms;
    stats.num_device_alloc = memory.blocks[kAggregate].allocated;
    stats.num_device_free = memory.blocks[kAggregate].freed;
    return stats;
  }

  void resetAccumulatedStats(DeviceIndex device) override {
    check_device(device);
    DeviceMemory& memory = g_memory[device];
    std::lock_guard<std::mutex> lock(memory.mutex);
    for (auto* stats : {&memory.bytes, &memory.blocks}) {
      for (Stat& s : *stats) {
        s.reset_accumulated();
      }
    }
    memory.num_ooms = 0;
  }

  void resetPeakStats(DeviceIndex device) override {
    check_device(device);
    DeviceMemory& memory = g_memory[device];
    std::lock_guard<std::mutex> lock(memory.mutex);
    for (auto* stats : {&memory.bytes, &memory.blocks}) {
      for (Stat& s : *stats) {
        s.reset_peak();
      }
    }
  }

  std::pair<size_t, size_t> getMemoryInfo(DeviceIndex device) override {
    check_device(device);
    DeviceMemory& memory = g_memory[device];
    std::lock_guard<std::mutex> lock(memory.mutex);
    return {g_capacity - std::min(device_used(device, memory), g_capacity), g_capacity};
  }
};

NpuAllocator g_allocator;
REGISTER_ALLOCATOR(kNpu, &g_allocator)

// Pinned host memory: ordinary host memory, but remembered, so that is_pinned() can tell it
// from other host memory (as cudaHostAlloc'd memory is told apart by the driver).
class PinnedAllocator final : public at::HostAllocator {
 public:
  c10::DataPtr allocate(size_t size) override {
    if (size == 0) {
      return {nullptr, c10::Device(c10::DeviceType::CPU)};
    }
    void* ptr = c10::alloc_cpu(size);
    std::lock_guard<std::mutex> lock(mutex_);
    blocks_[reinterpret_cast<uintptr_t>(ptr)] = size;
    count_.increase(1);
    bytes_.increase(size);
    return {ptr, ptr, &PinnedAllocator::deleter, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override {
    return &PinnedAllocator::deleter;
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }

  // True for any address inside a live pinned block.
  bool contains(const void* address) {
    const auto key = reinterpret_cast<uintptr_t>(address);
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = blocks_.upper_bound(key);
    if (it == blocks_.begin()) {
      return false;
    }
    --it;
    return key < it->first + it->second;
  }

  // Synchronous copies never leave pinned memory in use by a stream.
  bool record_event(void* /*ptr*/, void* /*ctx*/, c10::Stream /*stream*/) override {
    return true;
  }

  // Nothing is cached.
  void empty_cache() override {}

  at::HostStats get_stats() override {
    std::lock_guard<std::mutex> lock(mutex_);
    at::HostStats stats;
    stats.active_requests = stats.allocations = count_;
    stats.active_bytes = stats.allocated_bytes = bytes_;
    stats.num_host_alloc = count_.allocated;
    stats.num_host_free = count_.freed;
    return stats;
  }

  void reset_accumulated_stats() override {
    std::lock_guard<std::mutex> lock(mutex_);
    count_.reset_accumulated();
    bytes_.reset_accumulated();
  }

  void reset_peak_stats() override {
    std::lock_guard<std::mutex> lock(mutex_);
    count_.reset_peak();
    bytes_.reset_peak();
  }

 private:
  static void deleter(void* ptr);

  std::mutex mutex_;
  std::map<uintptr_t, size_t> blocks_;  // address -> size
  Stat count_;
  Stat bytes_;
};

PinnedAllocator g_pinned;
REGISTER_HOST_ALLOCATOR(kNpu, &g_pinned)

void PinnedAllocator::deleter(void* ptr) {
  {
    std::lock_guard<std::mutex> lock(g_pinned.mutex_);
    auto it = g_pinned.blocks_.find(reinterpret_cast<uintptr_t>(ptr));
    g_pinned.count_.decrease(1);
    g_pinned.bytes_.decrease(it->second);
    g_pinned.blocks_.erase(it);
  }
  c10::free_cpu(ptr);
}

// --------------------------------------------------------------------- guard and streams

// An event remembers the host time of its last record: work before it is already done.
struct EventRecord {
  std::chrono::steady_clock::time_point when;
};

std::atomic<c10::StreamId> g_next_stream_id{1};  // 0 is every device's default stream

DeviceIndex resolve(DeviceIndex index) {
  return index < 0 ? t_device : index;
}

struct NpuGuard final : c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override {
    return kNpu;
  }

  c10::Device exchangeDevice(c10::Device device) const override {
    const DeviceIndex previous = t_device;
    setDevice(device);
    return npu(previous);
  }

  c10::Device getDevice() const override {
    return npu(t_device);
  }

  // Index -1 ("the current device") leaves the current device as it is.
  void setDevice(c10::Device device) const override {
    if (device.index() >= 0) {
      check_device(device.index());
      t_device = device.index();
    }
  }

  void uncheckedSetDevice(c10::Device device) const noexcept override {
    if (device.index() >= 0) {
      t_device = device.index();
    }
  }

  c10::Stream getStream(c10::Device device) const override {
    const DeviceIndex index = resolve(device.index());
    check_device(index);
    return c10::Stream(c10::Stream::UNSAFE, npu(index), current_stream_slot(index));
  }

  c10::Stream getDefaultStream(c10::Device device) const override {
    return c10::Stream(c10::Stream::DEFAULT, npu(resolve(device.index())));
  }

  // Every request gets a stream id of its own: streams are names only, as work is
  // synchronous, so a pool would add nothing.
  c10::Stream getStreamFromGlobalPool(c10::Device device, bool /*isHighPriority*/) const override {
    return getNewStream(device, 0);
  }

  c10::Stream getNewStream(c10::Device device, int /*priority*/) const override {
    const DeviceIndex index = resolve(device.index());
    check_device(index);
    return c10::Stream(c10::Stream::UNSAFE, npu(index), g_next_stream_id++);
  }

  c10::Stream exchangeStream(c10::Stream stream) const override {
    check_device(stream.device_index());
    c10::StreamId& slot = current_stream_slot(stream.device_index());
    const c10::Stream previous(c10::Stream::UNSAFE, stream.device(), slot);
    slot = stream.id();
    return previous;
  }

  DeviceIndex deviceCount() const noexcept override {
    return device_count();
  }

  c10::DeviceCapability getDeviceCapability(c10::Device /*device*/) const override {
    return {};  // every dtype: the kernels are the CPU kernels
  }

  void record(
      void** event,
      const c10::Stream& /*stream*/,
      const DeviceIndex /*device_index*/,
      const c10::EventFlag /*flag*/) const override {
    if (*event == nullptr) {
      *event = new EventRecord();
    }
    static_cast<EventRecord*>(*event)->when = std::chrono::steady_clock::now();
  }

  void destroyEvent(void* event, const DeviceIndex /*device_index*/) const noexcept override {
    delete static_cast<EventRecord*>(event);
  }

  // Recorded work is complete by the time record() returns, so there is nothing to wait
  // for in any of these.
  void block(void* /*event*/, const c10::Stream& /*stream*/) const override {}
  bool queryEvent(void* /*event*/) const override {
    return true;
  }
  bool queryStream(const c10::Stream& /*stream*/) const override {
    return true;
  }
  void synchronizeEvent(void* /*event*/) const override {}
  void synchronizeStream(const c10::Stream& /*stream*/) const override {}
  void synchronizeDevice(const DeviceIndex /*device_index*/) const override {}

  double elapsedTime(void* start, void* end, const DeviceIndex /*device_index*/) const override {
    TORCH_CHECK(
        start != nullptr && end != nullptr, "both events must be recorded before elapsed_time()");
    return std::chrono::duration<double, std::milli>(
               static_cast<EventRecord*>(end)->when - static_cast<EventRecord*>(start)->when)
        .count();
  }
};

C10_REGISTER_GUARD_IMPL(PrivateUse1, NpuGuard);

// ---------------------------------------------------------------------------------- hooks

struct NpuHooks final : at::PrivateUse1HooksInterface {
  bool isBuilt() const override {
    return true;
  }
  bool isAvailable() const override {
    return device_count() > 0;
  }

  // Called once by ATen before the first pinned-memory or pointer query.
  void init() const override {
    check_device(0);
  }

  bool hasPrimaryContext(DeviceIndex index) const override {
    return index >= 0 && index < device_count();
  }

  DeviceIndex deviceCount() const override {
    return device_count();
  }
  void setCurrentDevice(DeviceIndex index) const override {
    NpuGuard().setDevice(npu(index));
  }
  DeviceIndex getCurrentDevice() const override {
    return t_device;
  }
  DeviceIndex exchangeDevice(DeviceIndex index) const override {
    return NpuGuard().exchangeDevice(npu(index)).index();
  }
  DeviceIndex maybeExchangeDevice(DeviceIndex index) const override {
    return exchangeDevice(index);
  }

  // CPU generators: the kernels are CPU kernels and check that a generator is a CPU one.
  const at::Generator& getDefaultGenerator(DeviceIndex index) const override {
    index = resolve(index);
    check_device(index);
    return g_generators[index];
  }
  at::Generator getNewGenerator(DeviceIndex /*index*/) const override {
    return at::detail::createCPUGenerator();
  }

  at::Device getDeviceFromPtr(void* data) const override {
    const auto key = reinterpret_cast<uintptr_t>(data);
    std::lock_guard<std::mutex> lock(g_live_mutex);
    auto it = g_live.upper_bound(key);
    if (it != g_live.begin()) {
      --it;
      if (key < it->first + it->second->size) {
        return npu(it->second->device);
      }
    }
    TORCH_CHECK(false, "address ", data, " is not in live npu memory");
  }

  bool isPinnedPtr(const void* data) const override {
    return g_pinned.contains(data);
  }
  at::Allocator* getPinnedMemoryAllocator() const override {
    return &g_pinned;
  }

  // UntypedStorage.resize_ on npu: new memory on the storage's device, contents kept.
  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t size) const override {
    TORCH_CHECK(storage.resizable(), "Trying to resize storage that is not resizable");
    c10::StorageImpl* impl = storage.unsafeGetStorageImpl();
    const c10::DeviceGuard guard(storage.device());
    c10::DataPtr fresh = impl->allocator()->allocate(size);
    const size_t kept = std::min(impl->nbytes(), size);
    if (kept > 0) {
      std::memcpy(fresh.get(), impl->data(), kept);
    }
    impl->set_data_ptr_noswap(std::move(fresh));
    impl->set_nbytes(size);
  }
};

// Registered when the library loads; torch keeps the hooks for the life of the process.
const bool g_hooks_registered = [] {
  at::RegisterPrivateUse1HooksInterface(new NpuHooks());
  return true;
}();

// -------------------------------------------------------------------------------- kernels

const c10::DispatchKeySet kNpuKeys(c10::DispatchKey::PrivateUse1);

// A CPU tensor over an npu tensor's memory (same sizes, strides, storage offset, conj and
// neg bits). Its storage holds a reference to the npu storage, so the memory outlives
// neither.
at::Tensor cpu_view(const at::Tensor& tensor) {
  const c10::Storage& storage = tensor.storage();
  c10::DataPtr data(
      storage.mutable_data(),
      new c10::Storage(storage),
      [](void* keep) { delete static_cast<c10::Storage*>(keep); },
      c10::Device(c10::DeviceType::CPU));
  c10::Storage host(
      c10::Storage::use_byte_size_t(), storage.nbytes(), std::move(data), nullptr, false);
  auto view = at::detail::make_tensor<c10::TensorImpl>(
      std::move(host), c10::DispatchKeySet(c10::DispatchKey::CPU), tensor.dtype());
  view.unsafeGetTensorImpl()->set_sizes_and_strides(
      tensor.sizes(), tensor.strides(), tensor.storage_offset());
  view._set_conj(tensor.is_conj());
  view._set_neg(tensor.is_neg());
  return view;
}

at::Tensor host_side(const at::Tensor& tensor) {
  return tensor.device().type() == kNpu ? cpu_view(tensor) : tensor;
}

at::Tensor empty_memory_format(
    at::IntArrayRef size,
    std::optional<at::ScalarType> dtype,
    std::optional<at::Layout> layout,
    std::optional<at::Device> device,
    std::optional<bool> /*pin_memory*/,
    std::optional<at::MemoryFormat> memory_format) {
  TORCH_CHECK(c10::layout_or_default(layout) == at::kStrided, "npu tensors are strided only");
  const c10::OptionalDeviceGuard guard(device);
  return at::detail::empty_generic(
      size, &g_allocator, kNpuKeys, c10::dtype_or_default(dtype), memory_format);
}

at::Tensor empty_strided(
    at::IntArrayRef size,
    at::IntArrayRef stride,
    std::optional<at::ScalarType> dtype,
    std::optional<at::Layout> layout,
    std::optional<at::Device> device,
    std::optional<bool> /*pin_memory*/) {
  TORCH_CHECK(c10::layout_or_default(layout) == at::kStrided, "npu tensors are strided only");
  const c10::OptionalDeviceGuard guard(device);
  return at::detail::empty_strided_generic(
      size, stride, &g_allocator, kNpuKeys, c10::dtype_or_default(dtype));
}

// Copies between CPU and npu and between npu devices (at::native::copy_ sends every copy
// that involves an npu tensor here). Both sides are host memory.
at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool /*non_blocking*/) {
  if (self.device().type() == kNpu && dst.device().type() == kNpu) {
    // The CPU copy_ refuses partly overlapping operands, but cannot see the overlap of two
    // separate CPU views, so it is checked here on the npu tensors.
    at::assert_no_partial_overlap(dst, self);
  }
  host_side(dst).copy_(host_side(self));
  return dst;
}

// resize_ allocates through the tensor's storage allocator on the current device, so the
// tensor's own device is made current first.
const at::Tensor& resize(
    const at::Tensor& self,
    at::IntArrayRef size,
    std::optional<at::MemoryFormat> memory_format) {
  const c10::DeviceGuard guard(self.device());
  return at::native::resize_(self, size, memory_format);
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  resize(dst, self.sizes(), std::nullopt);
  return copy_from(self, dst, false);
}

at::Scalar local_scalar_dense(const at::Tensor& self) {
  return at::_local_scalar_dense(cpu_view(self));
}

// set_() with no source: an empty storage of this device.
at::Tensor& set_empty(at::Tensor& self) {
  const c10::DeviceGuard guard(self.device());
  c10::Storage storage(c10::Storage::use_byte_size_t(), 0, &g_allocator, true);
  return at::native::set_storage_cpu_(self, storage, 0, {0}, {});
}

// Work is synchronous: no stream can still be using the memory.
void record_stream(at::Tensor& /*self*/, at::Stream /*stream*/) {}

void fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  // error_on_views: a view op without a native kernel here would silently return a copy.
  at::native::cpu_fallback(op, stack, /*error_on_views=*/true);
}

}  // namespace

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", TORCH_FN(empty_memory_format));
  m.impl("empty_strided", TORCH_FN(empty_strided));
  m.impl("_copy_from", TORCH_FN(copy_from));
  m.impl("_copy_from_and_resize", TORCH_FN(copy_from_and_resize));
  m.impl("_local_scalar_dense", TORCH_FN(local_scalar_dense));
  m.impl("resize_", TORCH_FN(resize));
  m.impl("set_", TORCH_FN(set_empty));
  m.impl("set_.source_Storage", TORCH_FN(at::native::set_));
  m.impl("set_.source_Storage_storage_offset", TORCH_FN(at::native::set_storage_cpu_));
  m.impl("set_.source_Tensor", TORCH_FN(at::native::set_tensor_));
  m.impl("is_set_to", TORCH_FN(at::native::is_set_to));
  m.impl("record_stream", TORCH_FN(record_stream));
  // The view ops whose only kernels are per-backend (the rest are composite).
  m.impl("view", TORCH_FN(at::native::view));
  m.impl("as_strided", TORCH_FN(at::native::as_strided_tensorimpl));
  m.impl("_reshape_alias", TORCH_FN(at::native::_reshape_alias));
  m.impl("unfold", TORCH_FN(at::native::unfold));
  m.impl("view_as_real", TORCH_FN(at::native::view_as_real));
  m.impl("view_as_complex", TORCH_FN(at::native::view_as_complex));
}

// Copies handle conjugate and negative bits themselves (cpu_view carries them to the CPU
// copy_). Without these fallthroughs the Conjugate/Negative fallbacks would first
// materialise the bit with another copy, which comes back here: endless recursion.
TORCH_LIBRARY_IMPL(aten, Conjugate, m) {
  m.impl("_copy_from", torch::CppFunction::makeFallthrough());
  m.impl("_copy_from_and_resize", torch::CppFunction::makeFallthrough());
}

TORCH_LIBRARY_IMPL(aten, Negative, m) {
  m.impl("_copy_from", torch::CppFunction::makeFallthrough());
  m.impl("_copy_from_and_resize", torch::CppFunction::makeFallthrough());
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&fallback>());
}

// ----------------------------------------------------------------------- Python interface

namespace {

DeviceIndex checked(int64_t device) {
  check_device(device);
  return static_cast<DeviceIndex>(device);
}

int64_t register_allocator(uintptr_t alloc_fn, uintptr_t free_fn) {
  TORCH_CHECK_VALUE(
      alloc_fn != 0 && free_fn != 0, "register_allocator needs the addresses of both functions");
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  g_backends.push_back(
      Backend{reinterpret_cast<AllocFn>(alloc_fn), reinterpret_cast<FreeFn>(free_fn)});
  return static_cast<int64_t>(g_backends.size()) - 1;
}

void change_current_allocator(int64_t id) {
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  backend_by_id(id);
  g_current_backend = id;
}

int64_t create_pool(int64_t allocator_id) {
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  auto pool = std::make_shared<Pool>();
  pool->backend = backend_by_id(allocator_id);
  g_pools.emplace(g_next_pool_id, std::move(pool));
  return g_next_pool_id++;
}

// Forgets the pool; memory it made stays valid and returns to its allocator when freed.
void release_pool(int64_t pool_id) {
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  TORCH_CHECK(
      pool_by_id(pool_id)->open_scopes == 0,
      "npu memory pool ",
      pool_id,
      " is still begun (begin_allocate_to_pool without end_allocate_to_pool)");
  g_pools.erase(pool_id);
}

void begin_allocate_to_pool(int64_t device, int64_t pool_id) {
  const DeviceIndex index = checked(device);
  std::shared_ptr<Pool> pool;
  {
    std::lock_guard<std::mutex> lock(g_registry_mutex);
    pool = pool_by_id(pool_id);
    ++pool->open_scopes;
  }
  t_pool_scopes.push_back(PoolScope{index, pool_id, std::move(pool)});
}

void end_allocate_to_pool(int64_t device, int64_t pool_id) {
  for (auto it = t_pool_scopes.rbegin(); it != t_pool_scopes.rend(); ++it) {
    if (it->device == device && it->pool_id == pool_id) {
      --it->pool->open_scopes;
      t_pool_scopes.erase(std::next(it).base());
      return;
    }
  }
  TORCH_CHECK(
      false, "npu memory pool ", pool_id, " was not begun on npu:", device, " in this thread");
}

int64_t pool_allocated(int64_t pool_id) {
  std::lock_guard<std::mutex> lock(g_registry_mutex);
  return pool_by_id(pool_id)->live_bytes.load();
}

// One aggregate statistic of a device, read under its lock.
int64_t read_stat(int64_t device, StatArray DeviceMemory::*stats, int64_t Stat::*field) {
  DeviceMemory& memory = g_memory[checked(device)];
  std::lock_guard<std::mutex> lock(memory.mutex);
  return (memory.*stats)[kAggregate].*field;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "The emulated Ascend NPU device (PrivateUse1 on host memory).";
  m.def("init", &init, py::arg("device_count"), py::arg("memory_per_device"));
  m.def("device_count", [] { return static_cast<int>(device_count()); });
  m.def("current_device", [] { return static_cast<int>(t_device); });
  m.def("set_device", [](int64_t device) { t_device = checked(device); }, py::arg("index"));
  m.def("allocated", [](int64_t d) { return read_stat(d, &DeviceMemory::bytes, &Stat::current); });
  m.def("peak_allocated", [](int64_t d) {
    return read_stat(d, &DeviceMemory::bytes, &Stat::peak);
  });
  m.def("reset_peak", [](int64_t d) { g_allocator.resetPeakStats(checked(d)); });
  m.def("num_allocs", [](int64_t d) {
    return read_stat(d, &DeviceMemory::blocks, &Stat::current);
  });
  m.def("mem_get_info", [](int64_t d) { return g_allocator.getMemoryInfo(checked(d)); });
  m.def(
      "register_allocator",
      &register_allocator,
      py::arg("alloc_fn_address"),
      py::arg("free_fn_address"));
  m.def("change_current_allocator", &change_current_allocator, py::arg("allocator_id"));
  m.def("create_pool", &create_pool, py::arg("allocator_id"));
  m.def("release_pool", &release_pool, py::arg("pool_id"));
  m.def("begin_allocate_to_pool", &begin_allocate_to_pool, py::arg("device"), py::arg("pool_id"));
  m.def("end_allocate_to_pool", &end_allocate_to_pool, py::arg("device"), py::arg("pool_id"));
  m.def("pool_allocated", &pool_allocated, py::arg("pool_id"));
  m.def(
      "cpu_alias",
      [](const at::Tensor& tensor) {
        TORCH_CHECK_VALUE(
            tensor.device().type() == kNpu,
            "cpu_alias expects an npu tensor, got one on ",
            tensor.device());
        return cpu_view(tensor);
      },
      py::arg("tensor"));
  m.def(
      "is_pinned_ptr",
      [](uintptr_t address) { return g_pinned.contains(reinterpret_cast<void*>(address)); },
      py::arg("address"));
}
