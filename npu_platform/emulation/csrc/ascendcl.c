/*
 * The emulated NPU's libascendcl.so: the ACL runtime calls npu_platform makes, on host memory.
 * The emulated torch_npu loads it (RTLD_GLOBAL, soname libascendcl.so) the way torch_npu loads
 * CANN's, so the ACL memory driver runs unchanged in emulation; tests also build it on its own.
 *
 * It includes the real acl/acl_rt.h from the torch-npu wheel, so the compiler checks every
 * definition below against the real prototype (a mismatch is a "conflicting types" error).
 * The virtual-memory calls are implemented over host memory:
 *
 *   aclrtReserveMemAddress  mmap(PROT_NONE) of a 2 MB-aligned range
 *   aclrtMallocPhysical     memfd_create + ftruncate
 *   aclrtMapMem             mmap(MAP_FIXED | MAP_SHARED | MAP_POPULATE) of the memfd over the
 *                           reserved range: mapped device memory is resident, as on a device
 *   aclrtUnmapMem           the range goes back to PROT_NONE anonymous memory
 *   aclrtMemcpy             memcpy, after checking that device-side bytes are mapped
 *
 * and they enforce the documented constraints, failing with error codes the headers define:
 *
 *   every invalid argument (size or address not a multiple of the 2 MB granularity, reserve
 *   alignment, expectPtr or flags not 0, map offset or flags not 0, a property that is not
 *   {handleType NONE, PINNED, HBM huge/normal, DEVICE location, reserve 0}, unknown address,
 *   overlapping mapping, memcpy touching unmapped device memory)  -> ACL_ERROR_RT_PARAM_INVALID
 *   unknown or already freed physical handle                        -> ACL_ERROR_RT_INVALID_HANDLE
 *   releasing a range that still has mappings, freeing physical
 *   memory that is still mapped                    -> ACL_ERROR_RELATIVE_RESOURCE_NOT_CLEARED
 *   physical memory beyond the per-device limit    -> ACL_ERROR_RT_MEMORY_ALLOCATION (207001)
 *   a runtime call on a thread without aclrtSetDevice              -> ACL_ERROR_RT_CONTEXT_NULL
 *   a device id outside the fake device count                   -> ACL_ERROR_RT_INVALID_DEVICEID
 *
 * The memory limit (bytes per device) is fake_acl_set_mem_limit() when set, else the
 * environment variable FAKE_ACL_MEM_LIMIT_BYTES read at each call, else 64 GiB. The device
 * count is fake_acl_set_device_count() when set, else FAKE_ACL_DEVICE_COUNT, else 8.
 * The fake_acl_* exports are for tests only and are not part of ACL.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "acl/acl_rt.h"

#define FAKE_EXPORT __attribute__((visibility("default")))

#define FAKE_GRANULARITY ((size_t)2 << 20)
#define FAKE_MAX_DEVICES 64
#define FAKE_DEFAULT_DEVICES 8
#define FAKE_DEFAULT_LIMIT ((size_t)64 << 30)

/* ------------------------------------------------------------------------------------------ */
/* State                                                                                        */

typedef struct physical {
    int fd;
    size_t size;
    int32_t device;
    size_t map_count;
} physical_t;

typedef struct range {
    uintptr_t va;
    size_t size;
    int32_t device;      /* reservations */
    physical_t *phys;    /* mappings */
} range_t;

typedef struct vec {
    void **items;
    size_t len;
    size_t cap;
} vec_t;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static vec_t g_physical;     /* physical_t * */
static vec_t g_reservations; /* range_t * */
static vec_t g_mappings;     /* range_t * */
static vec_t g_host;         /* range_t * (va, size) */
static size_t g_used[FAKE_MAX_DEVICES];
static size_t g_limit_override;  /* 0: not set */
static int g_device_count_override; /* 0: not set */
static int g_require_init;
static int g_initialized;

static _Thread_local int32_t t_device = -1;
static _Thread_local char t_errmsg[512];

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

static void vec_remove_at(vec_t *v, size_t i)
{
    v->items[i] = v->items[v->len - 1];
    v->len--;
}

static long vec_index(const vec_t *v, const void *item)
{
    for (size_t i = 0; i < v->len; i++) {
        if (v->items[i] == item) {
            return (long)i;
        }
    }
    return -1;
}

static long range_index_at(const vec_t *v, uintptr_t va)
{
    for (size_t i = 0; i < v->len; i++) {
        if (((range_t *)v->items[i])->va == va) {
            return (long)i;
        }
    }
    return -1;
}

/* The range in v that contains address a, or NULL. */
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

static int ranges_overlap(const vec_t *v, uintptr_t va, size_t size)
{
    for (size_t i = 0; i < v->len; i++) {
        range_t *r = v->items[i];
        if (va < r->va + r->size && r->va < va + size) {
            return 1;
        }
    }
    return 0;
}

/* Is every byte of [a, a + n) inside mapped device memory? */
static int fully_mapped(uintptr_t a, size_t n)
{
    uintptr_t end = a + n;
    while (a < end) {
        range_t *m = range_containing(&g_mappings, a);
        if (m == NULL) {
            return 0;
        }
        a = m->va + m->size;
    }
    return 1;
}

/* Does [a, a + n) touch a reserved (device) address range at all? */
static int touches_device(uintptr_t a, size_t n)
{
    return ranges_overlap(&g_reservations, a, n);
}

static aclError fail(aclError code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static aclError fail(aclError code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_errmsg, sizeof t_errmsg, fmt, ap);
    va_end(ap);
    return code;
}

static size_t env_size(const char *name, size_t fallback)
{
    const char *s = getenv(name);
    if (s == NULL || *s == '\0') {
        return fallback;
    }
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 0);
    if (end == s || *end != '\0') {
        return fallback;
    }
    return (size_t)v;
}

static size_t mem_limit(void)
{
    if (g_limit_override != 0) {
        return g_limit_override;
    }
    return env_size("FAKE_ACL_MEM_LIMIT_BYTES", FAKE_DEFAULT_LIMIT);
}

static int device_count(void)
{
    size_t n = g_device_count_override
                   ? (size_t)g_device_count_override
                   : env_size("FAKE_ACL_DEVICE_COUNT", FAKE_DEFAULT_DEVICES);
    if (n < 1) {
        n = 1;
    }
    if (n > FAKE_MAX_DEVICES) {
        n = FAKE_MAX_DEVICES;
    }
    return (int)n;
}

static int aligned(uintptr_t v)
{
    return v % FAKE_GRANULARITY == 0;
}

#define NEED_CONTEXT(call)                                                                     \
    do {                                                                                       \
        if (t_device < 0) {                                                                    \
            return fail(ACL_ERROR_RT_CONTEXT_NULL, "%s: no device set on this thread", call);  \
        }                                                                                      \
    } while (0)

static aclError check_prop(const char *call, const aclrtPhysicalMemProp *prop)
{
    if (prop == NULL) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: prop is NULL", call);
    }
    if (prop->handleType != ACL_MEM_HANDLE_TYPE_NONE) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: handleType %d is not NONE", call,
                    (int)prop->handleType);
    }
    if (prop->allocationType != ACL_MEM_ALLOCATION_TYPE_PINNED) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: allocationType %d is not PINNED", call,
                    (int)prop->allocationType);
    }
    switch (prop->memAttr) {
    case ACL_HBM_MEM_HUGE:
    case ACL_HBM_MEM_NORMAL:
    case ACL_MEM_HUGE:
    case ACL_MEM_NORMAL:
        break;
    default:
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: memAttr %d not supported", call,
                    (int)prop->memAttr);
    }
    if (prop->location.type != ACL_MEM_LOCATION_TYPE_DEVICE) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: location.type %d is not DEVICE", call,
                    (int)prop->location.type);
    }
    if (prop->location.id >= (uint32_t)device_count()) {
        return fail(ACL_ERROR_RT_INVALID_DEVICEID, "%s: location.id %u out of range", call,
                    prop->location.id);
    }
    if (prop->reserve != 0) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: reserve is not 0", call);
    }
    return ACL_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* Initialisation and devices                                                                   */

FAKE_EXPORT aclError aclInit(const char *configPath)
{
    (void)configPath;
    pthread_mutex_lock(&g_lock);
    int was = g_initialized;
    g_initialized = 1;
    pthread_mutex_unlock(&g_lock);
    return was ? fail(ACL_ERROR_REPEAT_INITIALIZE, "aclInit: already initialized") : ACL_SUCCESS;
}

FAKE_EXPORT aclError aclFinalize(void)
{
    pthread_mutex_lock(&g_lock);
    int was = g_initialized;
    g_initialized = 0;
    pthread_mutex_unlock(&g_lock);
    return was ? ACL_SUCCESS : fail(ACL_ERROR_REPEAT_FINALIZE, "aclFinalize: not initialized");
}

FAKE_EXPORT const char *aclGetRecentErrMsg(void)
{
    return t_errmsg[0] ? t_errmsg : NULL;
}

FAKE_EXPORT aclError aclrtSetDevice(int32_t deviceId)
{
    if (g_require_init && !g_initialized) {
        return fail(ACL_ERROR_UNINITIALIZE, "aclrtSetDevice: aclInit has not been called");
    }
    if (deviceId < 0 || deviceId >= device_count()) {
        return fail(ACL_ERROR_RT_INVALID_DEVICEID, "aclrtSetDevice: device %d out of range",
                    (int)deviceId);
    }
    t_device = deviceId;
    return ACL_SUCCESS;
}

FAKE_EXPORT aclError aclrtResetDevice(int32_t deviceId)
{
    if (deviceId < 0 || deviceId >= device_count()) {
        return fail(ACL_ERROR_RT_INVALID_DEVICEID, "aclrtResetDevice: device %d out of range",
                    (int)deviceId);
    }
    if (t_device == deviceId) {
        t_device = -1;
    }
    return ACL_SUCCESS;
}

FAKE_EXPORT aclError aclrtGetDevice(int32_t *deviceId)
{
    if (deviceId == NULL) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "aclrtGetDevice: deviceId is NULL");
    }
    NEED_CONTEXT("aclrtGetDevice");
    *deviceId = t_device;
    return ACL_SUCCESS;
}

FAKE_EXPORT aclError aclrtGetDeviceCount(uint32_t *count)
{
    if (count == NULL) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "aclrtGetDeviceCount: count is NULL");
    }
    *count = (uint32_t)device_count();
    return ACL_SUCCESS;
}

FAKE_EXPORT aclError aclrtSynchronizeDevice(void)
{
    NEED_CONTEXT("aclrtSynchronizeDevice");
    return ACL_SUCCESS; /* every fake copy is synchronous */
}

/* ------------------------------------------------------------------------------------------ */
/* Virtual memory                                                                               */

FAKE_EXPORT aclError aclrtMemGetAllocationGranularity(aclrtPhysicalMemProp *prop,
                                                      aclrtMemGranularityOptions option,
                                                      size_t *granularity)
{
    const char *call = "aclrtMemGetAllocationGranularity";
    if (granularity == NULL) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: granularity is NULL", call);
    }
    if (option != ACL_RT_MEM_ALLOC_GRANULARITY_MINIMUM &&
        option != ACL_RT_MEM_ALLOC_GRANULARITY_RECOMMENDED) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: option %d not supported", call, (int)option);
    }
    aclError rc = check_prop(call, prop);
    if (rc != ACL_SUCCESS) {
        return rc;
    }
    *granularity = FAKE_GRANULARITY;
    return ACL_SUCCESS;
}

FAKE_EXPORT aclError aclrtReserveMemAddress(void **virPtr, size_t size, size_t alignment,
                                            void *expectPtr, uint64_t flags)
{
    const char *call = "aclrtReserveMemAddress";
    NEED_CONTEXT(call);
    if (virPtr == NULL) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: virPtr is NULL", call);
    }
    if (size == 0 || !aligned(size)) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: size %zu is not a positive multiple of %zu",
                    call, size, FAKE_GRANULARITY);
    }
    if (alignment != 0) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: alignment must be 0, got %zu", call,
                    alignment);
    }
    if (expectPtr != NULL) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: expectPtr must be NULL", call);
    }
    if (flags != 0) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: flags must be 0, got %llu", call,
                    (unsigned long long)flags);
    }
    size_t span = size + FAKE_GRANULARITY;
    void *raw = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) {
        return fail(ACL_ERROR_RT_RESOURCE_ALLOC_FAIL, "%s: no virtual addresses for %zu bytes",
                    call, size);
    }
    uintptr_t start = ((uintptr_t)raw + FAKE_GRANULARITY - 1) & ~(FAKE_GRANULARITY - 1);
    size_t head = start - (uintptr_t)raw;
    size_t tail = span - head - size;
    if (head) {
        munmap(raw, head);
    }
    if (tail) {
        munmap((void *)(start + size), tail);
    }
    range_t *r = calloc(1, sizeof *r);
    if (r == NULL) {
        munmap((void *)start, size);
        return fail(ACL_ERROR_RT_RESOURCE_ALLOC_FAIL, "%s: out of host memory", call);
    }
    r->va = start;
    r->size = size;
    r->device = t_device;
    pthread_mutex_lock(&g_lock);
    int pushed = vec_push(&g_reservations, r);
    pthread_mutex_unlock(&g_lock);
    if (pushed != 0) {
        free(r);
        munmap((void *)start, size);
        return fail(ACL_ERROR_RT_RESOURCE_ALLOC_FAIL, "%s: out of host memory", call);
    }
    *virPtr = (void *)start;
    return ACL_SUCCESS;
}

FAKE_EXPORT aclError aclrtReleaseMemAddress(void *virPtr)
{
    const char *call = "aclrtReleaseMemAddress";
    NEED_CONTEXT(call);
    pthread_mutex_lock(&g_lock);
    long i = range_index_at(&g_reservations, (uintptr_t)virPtr);
    if (i < 0) {
        pthread_mutex_unlock(&g_lock);
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: %p is not the start of a reservation", call,
                    virPtr);
    }
    range_t *r = g_reservations.items[i];
    if (ranges_overlap(&g_mappings, r->va, r->size)) {
        pthread_mutex_unlock(&g_lock);
        return fail(ACL_ERROR_RELATIVE_RESOURCE_NOT_CLEARED,
                    "%s: %p still has mappings; unmap them first", call, virPtr);
    }
    vec_remove_at(&g_reservations, (size_t)i);
    pthread_mutex_unlock(&g_lock);
    munmap((void *)r->va, r->size);
    free(r);
    return ACL_SUCCESS;
}

FAKE_EXPORT aclError aclrtMallocPhysical(aclrtDrvMemHandle *handle, size_t size,
                                         const aclrtPhysicalMemProp *prop, uint64_t flags)
{
    const char *call = "aclrtMallocPhysical";
    NEED_CONTEXT(call);
    if (handle == NULL) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: handle is NULL", call);
    }
    if (size == 0 || !aligned(size)) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: size %zu is not a positive multiple of %zu",
                    call, size, FAKE_GRANULARITY);
    }
    if (flags != 0) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: flags must be 0", call);
    }
    aclError rc = check_prop(call, prop);
    if (rc != ACL_SUCCESS) {
        return rc;
    }
    int32_t device = (int32_t)prop->location.id;
    physical_t *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return fail(ACL_ERROR_RT_RESOURCE_ALLOC_FAIL, "%s: out of host memory", call);
    }
    pthread_mutex_lock(&g_lock);
    size_t limit = mem_limit();
    if (g_used[device] > limit || size > limit - g_used[device]) {
        size_t used = g_used[device];
        pthread_mutex_unlock(&g_lock);
        free(p);
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION,
                    "%s: out of device memory (%zu requested, %zu of %zu used)", call, size, used,
                    limit);
    }
    int fd = memfd_create("fake_acl_physical", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) != 0) {
        pthread_mutex_unlock(&g_lock);
        if (fd >= 0) {
            close(fd);
        }
        free(p);
        return fail(ACL_ERROR_RT_RESOURCE_ALLOC_FAIL, "%s: memfd failed", call);
    }
    p->fd = fd;
    p->size = size;
    p->device = device;
    if (vec_push(&g_physical, p) != 0) {
        pthread_mutex_unlock(&g_lock);
        close(fd);
        free(p);
        return fail(ACL_ERROR_RT_RESOURCE_ALLOC_FAIL, "%s: out of host memory", call);
    }
    g_used[device] += size;
    pthread_mutex_unlock(&g_lock);
    *handle = p;
    return ACL_SUCCESS;
}

FAKE_EXPORT aclError aclrtFreePhysical(aclrtDrvMemHandle handle)
{
    const char *call = "aclrtFreePhysical";
    NEED_CONTEXT(call);
    pthread_mutex_lock(&g_lock);
    long i = vec_index(&g_physical, handle);
    if (i < 0) {
        pthread_mutex_unlock(&g_lock);
        return fail(ACL_ERROR_RT_INVALID_HANDLE, "%s: %p is not a live physical handle", call,
                    handle);
    }
    physical_t *p = handle;
    if (p->map_count != 0) {
        pthread_mutex_unlock(&g_lock);
        return fail(ACL_ERROR_RELATIVE_RESOURCE_NOT_CLEARED,
                    "%s: %p is still mapped %zu time(s); unmap first", call, handle,
                    p->map_count);
    }
    vec_remove_at(&g_physical, (size_t)i);
    g_used[p->device] -= p->size;
    pthread_mutex_unlock(&g_lock);
    close(p->fd);
    free(p);
    return ACL_SUCCESS;
}

FAKE_EXPORT aclError aclrtMapMem(void *virPtr, size_t size, size_t offset,
                                 aclrtDrvMemHandle handle, uint64_t flags)
{
    const char *call = "aclrtMapMem";
    NEED_CONTEXT(call);
    uintptr_t va = (uintptr_t)virPtr;
    if (offset != 0) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: offset must be 0, got %zu", call, offset);
    }
    if (flags != 0) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: flags must be 0, got %llu", call,
                    (unsigned long long)flags);
    }
    if (va == 0 || !aligned(va)) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: address %p is not %zu-aligned", call, virPtr,
                    FAKE_GRANULARITY);
    }
    if (size == 0 || !aligned(size)) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: size %zu is not a positive multiple of %zu",
                    call, size, FAKE_GRANULARITY);
    }
    pthread_mutex_lock(&g_lock);
    aclError rc = ACL_SUCCESS;
    range_t *res = range_containing(&g_reservations, va);
    physical_t *p = handle;
    range_t *m = NULL;
    if (vec_index(&g_physical, handle) < 0) {
        rc = fail(ACL_ERROR_RT_INVALID_HANDLE, "%s: %p is not a live physical handle", call,
                  handle);
    } else if (size > p->size) {
        rc = fail(ACL_ERROR_RT_PARAM_INVALID, "%s: size %zu exceeds the handle's %zu bytes", call,
                  size, p->size);
    } else if (res == NULL || size > res->va + res->size - va) {
        rc = fail(ACL_ERROR_RT_PARAM_INVALID, "%s: [%p, +%zu) is not inside one reservation",
                  call, virPtr, size);
    } else if (ranges_overlap(&g_mappings, va, size)) {
        rc = fail(ACL_ERROR_RT_PARAM_INVALID, "%s: [%p, +%zu) overlaps a mapping", call, virPtr,
                  size);
    } else if ((m = calloc(1, sizeof *m)) == NULL || vec_push(&g_mappings, m) != 0) {
        free(m);
        rc = fail(ACL_ERROR_RT_RESOURCE_ALLOC_FAIL, "%s: out of host memory", call);
    } else if (mmap(virPtr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_POPULATE,
                    p->fd, 0) == MAP_FAILED) {
        g_mappings.len--;
        free(m);
        rc = fail(ACL_ERROR_RT_RESOURCE_ALLOC_FAIL, "%s: mmap failed", call);
    } else {
        m->va = va;
        m->size = size;
        m->device = p->device;
        m->phys = p;
        p->map_count++;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

FAKE_EXPORT aclError aclrtUnmapMem(void *virPtr)
{
    const char *call = "aclrtUnmapMem";
    NEED_CONTEXT(call);
    pthread_mutex_lock(&g_lock);
    long i = range_index_at(&g_mappings, (uintptr_t)virPtr);
    if (i < 0) {
        pthread_mutex_unlock(&g_lock);
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: %p is not the start of a mapping", call,
                    virPtr);
    }
    range_t *m = g_mappings.items[i];
    if (mmap(virPtr, m->size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
             -1, 0) == MAP_FAILED) {
        pthread_mutex_unlock(&g_lock);
        return fail(ACL_ERROR_RT_INTERNAL_ERROR, "%s: mmap(PROT_NONE) failed", call);
    }
    vec_remove_at(&g_mappings, (size_t)i);
    m->phys->map_count--;
    pthread_mutex_unlock(&g_lock);
    free(m);
    return ACL_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* Host memory, copies, memory info                                                             */

FAKE_EXPORT aclError aclrtMallocHost(void **hostPtr, size_t size)
{
    const char *call = "aclrtMallocHost";
    NEED_CONTEXT(call);
    if (hostPtr == NULL || size == 0) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: hostPtr is NULL or size is 0", call);
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "%s: out of host memory", call);
    }
    range_t *r = calloc(1, sizeof *r);
    int pushed = -1;
    if (r != NULL) {
        r->va = (uintptr_t)p;
        r->size = size;
        r->device = t_device;
        pthread_mutex_lock(&g_lock);
        pushed = vec_push(&g_host, r);
        pthread_mutex_unlock(&g_lock);
    }
    if (pushed != 0) {
        free(r);
        munmap(p, size);
        return fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "%s: out of host memory", call);
    }
    *hostPtr = p;
    return ACL_SUCCESS;
}

FAKE_EXPORT aclError aclrtFreeHost(void *hostPtr)
{
    const char *call = "aclrtFreeHost";
    NEED_CONTEXT(call);
    pthread_mutex_lock(&g_lock);
    long i = range_index_at(&g_host, (uintptr_t)hostPtr);
    if (i < 0) {
        pthread_mutex_unlock(&g_lock);
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: %p was not returned by aclrtMallocHost",
                    call, hostPtr);
    }
    range_t *r = g_host.items[i];
    vec_remove_at(&g_host, (size_t)i);
    pthread_mutex_unlock(&g_lock);
    munmap((void *)r->va, r->size);
    free(r);
    return ACL_SUCCESS;
}

FAKE_EXPORT aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count,
                                 aclrtMemcpyKind kind)
{
    const char *call = "aclrtMemcpy";
    NEED_CONTEXT(call);
    if (count > destMax) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: count %zu exceeds destMax %zu", call, count,
                    destMax);
    }
    if (count == 0) {
        return ACL_SUCCESS;
    }
    if (dst == NULL || src == NULL) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: NULL pointer", call);
    }
    uintptr_t d = (uintptr_t)dst;
    uintptr_t s = (uintptr_t)src;
    int dst_device;
    int src_device;
    switch (kind) {
    case ACL_MEMCPY_HOST_TO_HOST:
        dst_device = 0;
        src_device = 0;
        break;
    case ACL_MEMCPY_HOST_TO_DEVICE:
        dst_device = 1;
        src_device = 0;
        break;
    case ACL_MEMCPY_DEVICE_TO_HOST:
        dst_device = 0;
        src_device = 1;
        break;
    case ACL_MEMCPY_DEVICE_TO_DEVICE:
        dst_device = 1;
        src_device = 1;
        break;
    case ACL_MEMCPY_DEFAULT:
        dst_device = -1;
        src_device = -1;
        break;
    default:
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: kind %d not supported", call, (int)kind);
    }
    pthread_mutex_lock(&g_lock);
    aclError rc = ACL_SUCCESS;
    if (dst_device == 1 || (dst_device == -1 && touches_device(d, count))) {
        if (!fully_mapped(d, count)) {
            rc = fail(ACL_ERROR_RT_PARAM_INVALID, "%s: destination [%p, +%zu) is not mapped",
                      call, dst, count);
        }
    } else if (touches_device(d, count)) {
        rc = fail(ACL_ERROR_RT_PARAM_INVALID, "%s: destination %p is device memory", call, dst);
    }
    if (rc == ACL_SUCCESS) {
        if (src_device == 1 || (src_device == -1 && touches_device(s, count))) {
            if (!fully_mapped(s, count)) {
                rc = fail(ACL_ERROR_RT_PARAM_INVALID, "%s: source [%p, +%zu) is not mapped", call,
                          src, count);
            }
        } else if (touches_device(s, count)) {
            rc = fail(ACL_ERROR_RT_PARAM_INVALID, "%s: source %p is device memory", call, src);
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (rc == ACL_SUCCESS) {
        memmove(dst, src, count);
    }
    return rc;
}

FAKE_EXPORT aclError aclrtGetMemInfo(aclrtMemAttr attr, size_t *free_bytes, size_t *total)
{
    const char *call = "aclrtGetMemInfo";
    NEED_CONTEXT(call);
    if (free_bytes == NULL || total == NULL) {
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: NULL output", call);
    }
    int hbm;
    switch (attr) {
    case ACL_HBM_MEM:
    case ACL_HBM_MEM_HUGE:
    case ACL_HBM_MEM_NORMAL:
    case ACL_MEM_NORMAL:
    case ACL_MEM_HUGE:
        hbm = 1;
        break;
    case ACL_DDR_MEM:
    case ACL_DDR_MEM_HUGE:
    case ACL_DDR_MEM_NORMAL:
        hbm = 0;
        break;
    default:
        return fail(ACL_ERROR_RT_PARAM_INVALID, "%s: attr %d not supported", call, (int)attr);
    }
    if (!hbm) {
        *free_bytes = 0;
        *total = 0;
        return ACL_SUCCESS;
    }
    pthread_mutex_lock(&g_lock);
    size_t limit = mem_limit();
    size_t used = g_used[t_device];
    pthread_mutex_unlock(&g_lock);
    *free_bytes = used < limit ? limit - used : 0;
    *total = limit;
    return ACL_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* Test-only exports (not ACL)                                                                  */

FAKE_EXPORT void fake_acl_set_mem_limit(size_t bytes)
{
    pthread_mutex_lock(&g_lock);
    g_limit_override = bytes;
    pthread_mutex_unlock(&g_lock);
}

FAKE_EXPORT size_t fake_acl_mem_limit(void)
{
    return mem_limit();
}

FAKE_EXPORT void fake_acl_set_device_count(int count)
{
    g_device_count_override = count;
}

FAKE_EXPORT void fake_acl_set_require_init(int require)
{
    g_require_init = require;
}

FAKE_EXPORT int fake_acl_initialized(void)
{
    return g_initialized;
}

/* The emulated device's other memory user (the torch device's built-in allocator, which
 * stands in for torch_npu's caching allocator over aclrtMalloc) charges its bytes here, so
 * that one budget per device covers both, as one HBM does: delta > 0 takes memory (returns
 * ACL_ERROR_RT_MEMORY_ALLOCATION, taking nothing, past the limit), delta < 0 gives it back. */
FAKE_EXPORT int fake_acl_charge(int32_t device, int64_t delta)
{
    if (device < 0 || device >= FAKE_MAX_DEVICES) {
        return ACL_ERROR_RT_INVALID_DEVICEID;
    }
    int rc = ACL_SUCCESS;
    pthread_mutex_lock(&g_lock);
    if (delta >= 0) {
        size_t want = (size_t)delta;
        size_t limit = mem_limit();
        if (g_used[device] > limit || want > limit - g_used[device]) {
            rc = ACL_ERROR_RT_MEMORY_ALLOCATION;
        } else {
            g_used[device] += want;
        }
    } else {
        size_t give = (size_t)(-delta);
        g_used[device] = give > g_used[device] ? 0 : g_used[device] - give;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

FAKE_EXPORT size_t fake_acl_used_bytes(int32_t device)
{
    if (device < 0 || device >= FAKE_MAX_DEVICES) {
        return 0;
    }
    pthread_mutex_lock(&g_lock);
    size_t used = g_used[device];
    pthread_mutex_unlock(&g_lock);
    return used;
}

static size_t locked_len(const vec_t *v)
{
    pthread_mutex_lock(&g_lock);
    size_t n = v->len;
    pthread_mutex_unlock(&g_lock);
    return n;
}

FAKE_EXPORT size_t fake_acl_live_physical(void)
{
    return locked_len(&g_physical);
}

FAKE_EXPORT size_t fake_acl_live_mappings(void)
{
    return locked_len(&g_mappings);
}

FAKE_EXPORT size_t fake_acl_live_reservations(void)
{
    return locked_len(&g_reservations);
}

FAKE_EXPORT size_t fake_acl_live_host(void)
{
    return locked_len(&g_host);
}
