/*
 * A fake libcuda.so.1 for testing npu_platform's CUDA memory driver without a GPU.
 *
 * It includes the real cuda.h (CUDA toolkit, or the copy shipped in triton / nvidia-cuda
 * wheels), so the compiler checks every definition below against the real prototype. It
 * implements the driver-API calls npu_platform.memory.drivers.cuda makes, over host memory:
 *
 *   cuMemAddressReserve   mmap(PROT_NONE) of a 2 MB-aligned range
 *   cuMemCreate           memfd_create + ftruncate
 *   cuMemMap              mmap(MAP_FIXED | MAP_SHARED, PROT_NONE) of the memfd over the range:
 *                         as on a GPU, mapped memory is not accessible before cuMemSetAccess
 *   cuMemSetAccess        mprotect to the requested protection
 *   cuMemUnmap            the range goes back to PROT_NONE anonymous memory
 *   cuMemcpyHtoD/DtoH     memcpy, after checking the device bytes are mapped and accessible
 *
 * and fails with the CUresult codes the CUDA driver API documents:
 *
 *   any call but cuInit / cuGetErrorName before cuInit           -> CUDA_ERROR_NOT_INITIALIZED
 *   cuInit with no device (FAKE_CUDA_DEVICE_COUNT=0)              -> CUDA_ERROR_NO_DEVICE
 *   a device ordinal outside the device count                     -> CUDA_ERROR_INVALID_DEVICE
 *   a copy, synchronize, host allocation or memory info with no current context, or a
 *   context that is not a retained primary context                -> CUDA_ERROR_INVALID_CONTEXT
 *   physical memory beyond the per-device limit                   -> CUDA_ERROR_OUT_OF_MEMORY
 *   every other invalid argument (sizes/addresses not multiples of the granularity, nonzero
 *   flags, a property other than {PINNED, no handle type, DEVICE location}, unknown
 *   address or handle, overlapping or partial mappings, freeing a reservation that still has
 *   mappings, a copy touching memory that is unmapped or not accessible) -> CUDA_ERROR_INVALID_VALUE
 *
 * cuMemRelease of mapped memory is allowed, as in CUDA: the memory is freed when its last
 * mapping goes. The memory limit (bytes per device) is fake_cuda_set_mem_limit() when set,
 * else FAKE_CUDA_MEM_LIMIT_BYTES read at each call, else 64 GiB; the device count is
 * FAKE_CUDA_DEVICE_COUNT read by cuInit, else 2. fake_cuda_fail() makes one named call return
 * a given code (fault injection). The fake_cuda_* exports are for tests, not CUDA.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cuda.h>

#define FAKE_EXPORT __attribute__((visibility("default")))
#define GRAN ((size_t)2 << 20)
#define MAX_DEVICES 16
#define DEFAULT_DEVICES 2
#define DEFAULT_LIMIT ((size_t)64 << 30)

/* ------------------------------------------------------------------------------------------ */
/* State                                                                                        */

struct CUctx_st {
    int device;
    int refcount; /* primary context retain count */
};

typedef struct physical {
    int fd;
    size_t size;
    int device;
    size_t map_count;
    int released;
} physical_t;

typedef struct range {
    uintptr_t va;
    size_t size;
    physical_t *phys; /* mappings */
    int prot;         /* mappings: protection set by cuMemSetAccess */
} range_t;

typedef struct vec {
    void **items;
    size_t len, cap;
} vec_t;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct CUctx_st g_ctx[MAX_DEVICES];
static vec_t g_physical, g_reservations, g_mappings, g_host;
static size_t g_used[MAX_DEVICES];
static size_t g_limit_override;
static int g_initialized;
static int g_devices = DEFAULT_DEVICES;
static char g_fail_call[64];
static CUresult g_fail_code;
static int g_fail_skip;

static _Thread_local CUcontext t_ctx;

static int vec_push(vec_t *v, void *item)
{
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        void **items = realloc(v->items, cap * sizeof(void *));
        if (items == NULL) {
            return -1;
        }
        v->items = items;
        v->cap = cap;
    }
    v->items[v->len++] = item;
    return 0;
}

static void vec_remove(vec_t *v, const void *item)
{
    for (size_t i = 0; i < v->len; i++) {
        if (v->items[i] == item) {
            v->items[i] = v->items[--v->len];
            return;
        }
    }
}

static int vec_has(const vec_t *v, const void *item)
{
    for (size_t i = 0; i < v->len; i++) {
        if (v->items[i] == item) {
            return 1;
        }
    }
    return 0;
}

static range_t *range_at(const vec_t *v, uintptr_t va)
{
    for (size_t i = 0; i < v->len; i++) {
        range_t *r = v->items[i];
        if (r->va == va) {
            return r;
        }
    }
    return NULL;
}

static range_t *range_containing(const vec_t *v, uintptr_t a)
{
    for (size_t i = 0; i < v->len; i++) {
        range_t *r = v->items[i];
        if (a >= r->va && a - r->va < r->size) {
            return r;
        }
    }
    return NULL;
}

static int overlaps(const range_t *r, uintptr_t a, size_t n)
{
    return a < r->va + r->size && r->va < a + n;
}

static size_t env_size(const char *name, size_t fallback)
{
    const char *s = getenv(name);
    if (s == NULL || *s == '\0') {
        return fallback;
    }
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 0);
    return (end == s || *end != '\0') ? fallback : (size_t)v;
}

static size_t mem_limit(void)
{
    return g_limit_override ? g_limit_override
                            : env_size("FAKE_CUDA_MEM_LIMIT_BYTES", DEFAULT_LIMIT);
}

static int aligned(uintptr_t v)
{
    return v % GRAN == 0;
}

/* One injected failure: the call named by fake_cuda_fail() returns its code once. */
static int injected(const char *call, CUresult *rc)
{
    int hit = 0;
    pthread_mutex_lock(&g_lock);
    if (g_fail_call[0] != '\0' && strcmp(call, g_fail_call) == 0) {
        if (g_fail_skip > 0) {
            g_fail_skip--;
        } else {
            *rc = g_fail_code;
            g_fail_call[0] = '\0';
            hit = 1;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return hit;
}

#define ENTER(call)                                                                            \
    do {                                                                                       \
        CUresult injected_rc_;                                                                 \
        if (injected(call, &injected_rc_)) {                                                   \
            return injected_rc_;                                                               \
        }                                                                                      \
        if (!g_initialized) {                                                                  \
            return CUDA_ERROR_NOT_INITIALIZED;                                                 \
        }                                                                                      \
    } while (0)

#define NEED_CONTEXT()                                                                         \
    do {                                                                                       \
        if (t_ctx == NULL || t_ctx->refcount == 0) {                                           \
            return CUDA_ERROR_INVALID_CONTEXT;                                                 \
        }                                                                                      \
    } while (0)

static CUresult check_prop(const CUmemAllocationProp *prop)
{
    if (prop == NULL || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
        prop->requestedHandleTypes != CU_MEM_HANDLE_TYPE_NONE ||
        prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE || prop->win32HandleMetaData != NULL) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (prop->location.id < 0 || prop->location.id >= g_devices) {
        return CUDA_ERROR_INVALID_DEVICE;
    }
    return CUDA_SUCCESS;
}

/* Is every byte of [a, a + n) mapped with at least protection `prot`? */
static int accessible(uintptr_t a, size_t n, int prot)
{
    uintptr_t end = a + n;
    while (a < end) {
        range_t *m = range_containing(&g_mappings, a);
        if (m == NULL || (m->prot & prot) != prot) {
            return 0;
        }
        a = m->va + m->size;
    }
    return 1;
}

static int touches_device(uintptr_t a, size_t n)
{
    for (size_t i = 0; i < g_reservations.len; i++) {
        if (overlaps(g_reservations.items[i], a, n)) {
            return 1;
        }
    }
    return 0;
}

static void destroy_physical(physical_t *p)
{
    close(p->fd);
    g_used[p->device] -= p->size;
    vec_remove(&g_physical, p);
    free(p);
}

/* ------------------------------------------------------------------------------------------ */
/* Initialization, errors, devices, contexts                                                    */

CUresult CUDAAPI cuInit(unsigned int Flags)
{
    CUresult rc;
    if (injected("cuInit", &rc)) {
        return rc;
    }
    if (Flags != 0) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    size_t n = env_size("FAKE_CUDA_DEVICE_COUNT", DEFAULT_DEVICES);
    if (n == 0) {
        return CUDA_ERROR_NO_DEVICE;
    }
    pthread_mutex_lock(&g_lock);
    g_devices = n > MAX_DEVICES ? MAX_DEVICES : (int)n;
    for (int i = 0; i < MAX_DEVICES; i++) {
        g_ctx[i].device = i;
    }
    g_initialized = 1;
    pthread_mutex_unlock(&g_lock);
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuGetErrorName(CUresult error, const char **pStr)
{
    static const struct {
        CUresult code;
        const char *name;
    } names[] = {
        {CUDA_SUCCESS, "CUDA_SUCCESS"},
        {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE"},
        {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY"},
        {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED"},
        {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE"},
        {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE"},
        {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT"},
        {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE"},
        {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS"},
        {CUDA_ERROR_NOT_PERMITTED, "CUDA_ERROR_NOT_PERMITTED"},
        {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED"},
    };
    if (pStr == NULL) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (names[i].code == error) {
            *pStr = names[i].name;
            return CUDA_SUCCESS;
        }
    }
    *pStr = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

CUresult CUDAAPI cuDeviceGetCount(int *count)
{
    ENTER("cuDeviceGetCount");
    if (count == NULL) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    *count = g_devices;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGet(CUdevice *device, int ordinal)
{
    ENTER("cuDeviceGet");
    if (device == NULL) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (ordinal < 0 || ordinal >= g_devices) {
        return CUDA_ERROR_INVALID_DEVICE;
    }
    *device = ordinal;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev)
{
    ENTER("cuDevicePrimaryCtxRetain");
    if (pctx == NULL) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    if (dev < 0 || dev >= g_devices) {
        return CUDA_ERROR_INVALID_DEVICE;
    }
    pthread_mutex_lock(&g_lock);
    g_ctx[dev].refcount++;
    pthread_mutex_unlock(&g_lock);
    *pctx = &g_ctx[dev];
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDevicePrimaryCtxRelease_v2(CUdevice dev)
{
    ENTER("cuDevicePrimaryCtxRelease_v2");
    if (dev < 0 || dev >= g_devices) {
        return CUDA_ERROR_INVALID_DEVICE;
    }
    CUresult rc = CUDA_SUCCESS;
    pthread_mutex_lock(&g_lock);
    if (g_ctx[dev].refcount == 0) {
        rc = CUDA_ERROR_INVALID_CONTEXT;
    } else {
        g_ctx[dev].refcount--;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

CUresult CUDAAPI cuCtxGetCurrent(CUcontext *pctx)
{
    ENTER("cuCtxGetCurrent");
    if (pctx == NULL) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    *pctx = t_ctx;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxSetCurrent(CUcontext ctx)
{
    ENTER("cuCtxSetCurrent");
    if (ctx != NULL && (ctx < &g_ctx[0] || ctx >= &g_ctx[g_devices] || ctx->refcount == 0)) {
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    t_ctx = ctx;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxSynchronize(void)
{
    ENTER("cuCtxSynchronize");
    NEED_CONTEXT();
    return CUDA_SUCCESS; /* copies are synchronous */
}

/* ------------------------------------------------------------------------------------------ */
/* Virtual memory management                                                                    */

CUresult CUDAAPI cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
                                               CUmemAllocationGranularity_flags option)
{
    ENTER("cuMemGetAllocationGranularity");
    if (granularity == NULL || (option != CU_MEM_ALLOC_GRANULARITY_MINIMUM &&
                                option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    CUresult rc = check_prop(prop);
    if (rc != CUDA_SUCCESS) {
        return rc;
    }
    *granularity = GRAN;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment,
                                     CUdeviceptr addr, unsigned long long flags)
{
    ENTER("cuMemAddressReserve");
    (void)addr; /* a hint only */
    if (ptr == NULL || size == 0 || !aligned(size) || flags != 0 ||
        (alignment != 0 && alignment != GRAN)) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    size_t span = size + GRAN;
    uint8_t *base = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    uintptr_t start = ((uintptr_t)base + GRAN - 1) & ~(uintptr_t)(GRAN - 1);
    if (start > (uintptr_t)base) {
        munmap(base, start - (uintptr_t)base);
    }
    uintptr_t tail = start + size;
    if ((uintptr_t)base + span > tail) {
        munmap((void *)tail, (uintptr_t)base + span - tail);
    }
    range_t *r = calloc(1, sizeof *r);
    r->va = start;
    r->size = size;
    pthread_mutex_lock(&g_lock);
    vec_push(&g_reservations, r);
    pthread_mutex_unlock(&g_lock);
    *ptr = (CUdeviceptr)start;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemAddressFree(CUdeviceptr ptr, size_t size)
{
    ENTER("cuMemAddressFree");
    CUresult rc = CUDA_SUCCESS;
    pthread_mutex_lock(&g_lock);
    range_t *r = range_at(&g_reservations, (uintptr_t)ptr);
    if (r == NULL || r->size != size) {
        rc = CUDA_ERROR_INVALID_VALUE;
    } else {
        for (size_t i = 0; i < g_mappings.len; i++) {
            if (overlaps(g_mappings.items[i], r->va, r->size)) {
                rc = CUDA_ERROR_INVALID_VALUE; /* still mapped: unmap first */
            }
        }
    }
    if (rc == CUDA_SUCCESS) {
        munmap((void *)r->va, r->size);
        vec_remove(&g_reservations, r);
        free(r);
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

CUresult CUDAAPI cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                             const CUmemAllocationProp *prop, unsigned long long flags)
{
    ENTER("cuMemCreate");
    if (handle == NULL || size == 0 || !aligned(size) || flags != 0) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    CUresult rc = check_prop(prop);
    if (rc != CUDA_SUCCESS) {
        return rc;
    }
    int device = prop->location.id;
    pthread_mutex_lock(&g_lock);
    if (g_used[device] + size > mem_limit()) {
        pthread_mutex_unlock(&g_lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    int fd = memfd_create("fake_cuda", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
        if (fd >= 0) {
            close(fd);
        }
        pthread_mutex_unlock(&g_lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    physical_t *p = calloc(1, sizeof *p);
    p->fd = fd;
    p->size = size;
    p->device = device;
    vec_push(&g_physical, p);
    g_used[device] += size;
    pthread_mutex_unlock(&g_lock);
    *handle = (CUmemGenericAllocationHandle)(uintptr_t)p;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemRelease(CUmemGenericAllocationHandle handle)
{
    ENTER("cuMemRelease");
    physical_t *p = (physical_t *)(uintptr_t)handle;
    CUresult rc = CUDA_SUCCESS;
    pthread_mutex_lock(&g_lock);
    if (!vec_has(&g_physical, p) || p->released) {
        rc = CUDA_ERROR_INVALID_VALUE;
    } else if (p->map_count > 0) {
        p->released = 1; /* freed with its last mapping */
    } else {
        destroy_physical(p);
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

CUresult CUDAAPI cuMemMap(CUdeviceptr ptr, size_t size, size_t offset,
                          CUmemGenericAllocationHandle handle, unsigned long long flags)
{
    ENTER("cuMemMap");
    uintptr_t va = (uintptr_t)ptr;
    physical_t *p = (physical_t *)(uintptr_t)handle;
    if (size == 0 || !aligned(va) || !aligned(size) || !aligned(offset) || flags != 0) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    CUresult rc = CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&g_lock);
    range_t *res = range_containing(&g_reservations, va);
    if (!vec_has(&g_physical, p) || p->released || offset + size > p->size || res == NULL ||
        va + size > res->va + res->size) {
        goto out;
    }
    for (size_t i = 0; i < g_mappings.len; i++) {
        if (overlaps(g_mappings.items[i], va, size)) {
            goto out;
        }
    }
    if (mmap((void *)va, size, PROT_NONE, MAP_SHARED | MAP_FIXED, p->fd, (off_t)offset) ==
        MAP_FAILED) {
        rc = CUDA_ERROR_OUT_OF_MEMORY;
        goto out;
    }
    range_t *m = calloc(1, sizeof *m);
    m->va = va;
    m->size = size;
    m->phys = p;
    vec_push(&g_mappings, m);
    p->map_count++;
    rc = CUDA_SUCCESS;
out:
    pthread_mutex_unlock(&g_lock);
    return rc;
}

CUresult CUDAAPI cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc,
                                size_t count)
{
    ENTER("cuMemSetAccess");
    uintptr_t va = (uintptr_t)ptr;
    if (desc == NULL || count == 0 || size == 0 || !aligned(va) || !aligned(size)) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    int prot = 0;
    for (size_t i = 0; i < count; i++) {
        if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE) {
            return CUDA_ERROR_INVALID_VALUE;
        }
        if (desc[i].location.id < 0 || desc[i].location.id >= g_devices) {
            return CUDA_ERROR_INVALID_DEVICE;
        }
        switch (desc[i].flags) {
        case CU_MEM_ACCESS_FLAGS_PROT_NONE:
            break;
        case CU_MEM_ACCESS_FLAGS_PROT_READ:
            prot |= PROT_READ;
            break;
        case CU_MEM_ACCESS_FLAGS_PROT_READWRITE:
            prot |= PROT_READ | PROT_WRITE;
            break;
        default:
            return CUDA_ERROR_INVALID_VALUE;
        }
    }
    CUresult rc = CUDA_SUCCESS;
    pthread_mutex_lock(&g_lock);
    if (!accessible(va, size, 0)) {
        rc = CUDA_ERROR_INVALID_VALUE; /* not all mapped */
    } else {
        for (size_t i = 0; i < g_mappings.len; i++) {
            range_t *m = g_mappings.items[i];
            if (overlaps(m, va, size)) {
                if (m->va < va || m->va + m->size > va + size) {
                    rc = CUDA_ERROR_INVALID_VALUE; /* part of a mapping */
                }
            }
        }
    }
    if (rc == CUDA_SUCCESS) {
        mprotect((void *)va, size, prot);
        for (size_t i = 0; i < g_mappings.len; i++) {
            range_t *m = g_mappings.items[i];
            if (overlaps(m, va, size)) {
                m->prot = prot;
            }
        }
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

CUresult CUDAAPI cuMemUnmap(CUdeviceptr ptr, size_t size)
{
    ENTER("cuMemUnmap");
    uintptr_t va = (uintptr_t)ptr;
    if (size == 0 || !aligned(va) || !aligned(size)) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    CUresult rc = CUDA_SUCCESS;
    size_t found = 0;
    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < g_mappings.len; i++) {
        range_t *m = g_mappings.items[i];
        if (overlaps(m, va, size)) {
            found++;
            if (m->va < va || m->va + m->size > va + size) {
                rc = CUDA_ERROR_INVALID_VALUE; /* would split a mapping */
            }
        }
    }
    if (found == 0) {
        rc = CUDA_ERROR_INVALID_VALUE;
    }
    if (rc == CUDA_SUCCESS) {
        for (size_t i = 0; i < g_mappings.len;) {
            range_t *m = g_mappings.items[i];
            if (!overlaps(m, va, size)) {
                i++;
                continue;
            }
            mmap((void *)m->va, m->size, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
            physical_t *p = m->phys;
            vec_remove(&g_mappings, m);
            free(m);
            if (--p->map_count == 0 && p->released) {
                destroy_physical(p);
            }
        }
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Copies, host memory, memory info                                                             */

static CUresult check_copy(uintptr_t device_ptr, uintptr_t host_ptr, size_t n, int prot)
{
    CUresult rc = CUDA_SUCCESS;
    pthread_mutex_lock(&g_lock);
    if (!accessible(device_ptr, n, prot) || touches_device(host_ptr, n)) {
        rc = CUDA_ERROR_INVALID_VALUE;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

CUresult CUDAAPI cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount)
{
    ENTER("cuMemcpyHtoD_v2");
    NEED_CONTEXT();
    if (srcHost == NULL) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    CUresult rc = check_copy((uintptr_t)dstDevice, (uintptr_t)srcHost, ByteCount,
                             PROT_READ | PROT_WRITE);
    if (rc == CUDA_SUCCESS) {
        memcpy((void *)(uintptr_t)dstDevice, srcHost, ByteCount);
    }
    return rc;
}

CUresult CUDAAPI cuMemcpyDtoH_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount)
{
    ENTER("cuMemcpyDtoH_v2");
    NEED_CONTEXT();
    if (dstHost == NULL) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    CUresult rc = check_copy((uintptr_t)srcDevice, (uintptr_t)dstHost, ByteCount, PROT_READ);
    if (rc == CUDA_SUCCESS) {
        memcpy(dstHost, (const void *)(uintptr_t)srcDevice, ByteCount);
    }
    return rc;
}

CUresult CUDAAPI cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags)
{
    ENTER("cuMemHostAlloc");
    NEED_CONTEXT();
    unsigned int known = CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP |
                         CU_MEMHOSTALLOC_WRITECOMBINED;
    if (pp == NULL || bytesize == 0 || (Flags & ~known) != 0) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    void *p = malloc(bytesize);
    if (p == NULL) {
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    pthread_mutex_lock(&g_lock);
    vec_push(&g_host, p);
    pthread_mutex_unlock(&g_lock);
    *pp = p;
    return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemFreeHost(void *p)
{
    ENTER("cuMemFreeHost");
    CUresult rc = CUDA_SUCCESS;
    pthread_mutex_lock(&g_lock);
    if (!vec_has(&g_host, p)) {
        rc = CUDA_ERROR_INVALID_VALUE;
    } else {
        vec_remove(&g_host, p);
        free(p);
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

CUresult CUDAAPI cuMemGetInfo_v2(size_t *free_bytes, size_t *total)
{
    ENTER("cuMemGetInfo_v2");
    NEED_CONTEXT();
    if (free_bytes == NULL || total == NULL) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    pthread_mutex_lock(&g_lock);
    size_t limit = mem_limit();
    size_t used = g_used[t_ctx->device];
    pthread_mutex_unlock(&g_lock);
    *total = limit;
    *free_bytes = used < limit ? limit - used : 0;
    return CUDA_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* Test exports                                                                                 */

FAKE_EXPORT void fake_cuda_set_mem_limit(size_t bytes)
{
    pthread_mutex_lock(&g_lock);
    g_limit_override = bytes;
    pthread_mutex_unlock(&g_lock);
}

FAKE_EXPORT void fake_cuda_fail(const char *call, int code, int skip)
{
    pthread_mutex_lock(&g_lock);
    if (call == NULL) {
        g_fail_call[0] = '\0';
    } else {
        strncpy(g_fail_call, call, sizeof g_fail_call - 1);
        g_fail_call[sizeof g_fail_call - 1] = '\0';
    }
    g_fail_code = (CUresult)code;
    g_fail_skip = skip;
    pthread_mutex_unlock(&g_lock);
}

FAKE_EXPORT int fake_cuda_fail_pending(void)
{
    return g_fail_call[0] != '\0';
}

FAKE_EXPORT size_t fake_cuda_used_bytes(int device)
{
    return (device >= 0 && device < MAX_DEVICES) ? g_used[device] : 0;
}

FAKE_EXPORT int fake_cuda_primary_refcount(int device)
{
    return (device >= 0 && device < MAX_DEVICES) ? g_ctx[device].refcount : -1;
}

FAKE_EXPORT int fake_cuda_current_device(void)
{
    return t_ctx == NULL ? -1 : t_ctx->device;
}

FAKE_EXPORT size_t fake_cuda_live_physical(void) { return g_physical.len; }
FAKE_EXPORT size_t fake_cuda_live_mappings(void) { return g_mappings.len; }
FAKE_EXPORT size_t fake_cuda_live_reservations(void) { return g_reservations.len; }
FAKE_EXPORT size_t fake_cuda_live_host(void) { return g_host.len; }
