/*
 * Unit test: qcow2 allocating writes do not allocate memory in the steady
 * state (the project rule "no allocation in the steady-state request path").
 *
 * The test binary is linked with -Wl,--wrap for malloc, calloc, realloc,
 * posix_memalign and aligned_alloc, so every call the library makes (it is
 * linked in statically) goes through the counters below. Each case keeps a
 * queue of allocating writes in flight (a new write is submitted from the
 * completion of the previous one, as a guest does), lets a first stretch
 * warm the pools (coroutines, AIOCBs, COW buffers, L2 cache, file growth),
 * then counts the allocations of every thread over the next stretch and
 * asserts there were none. The cases cover the batched data writes of
 * wbatch.c (64 KiB sequential, qd 32), lone allocations at qd 1 and
 * scattered 4 KiB writes that copy the rest of their cluster from a backing
 * file. The written bytes are read back and qemu-img check must be clean.
 *
 * With the pools off (-Dpools=false, the sanitizer build) coroutines and
 * AIOCBs are allocated fresh on purpose: the count is then only reported.
 */
#include <stdatomic.h>

#include "drv-test-util.h"

#include "block/block-int.h"
#include "coblk-config.h"
#include "drivers/format/qcow2/qcow2.h"

#define KiB 1024LL
#define MiB (1024 * KiB)
#define CS (64 * KiB)
#define GUEST (64 * MiB)
#define QD_MAX 32

/* ---- allocation counters (-Wl,--wrap=...) ---- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t m);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t m);
void *__wrap_realloc(void *p, size_t n);
int __wrap_posix_memalign(void **p, size_t a, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);

static atomic_bool counting;
static atomic_long nallocs;

static void note_alloc(void)
{
    if (atomic_load_explicit(&counting, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&nallocs, 1, memory_order_relaxed);
    }
}

void *__wrap_malloc(size_t n)
{
    note_alloc();
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t m)
{
    note_alloc();
    return __real_calloc(n, m);
}

void *__wrap_realloc(void *p, size_t n)
{
    note_alloc();
    return __real_realloc(p, n);
}

int __wrap_posix_memalign(void **p, size_t a, size_t n)
{
    note_alloc();
    return __real_posix_memalign(p, a, n);
}

void *__wrap_aligned_alloc(size_t a, size_t n)
{
    note_alloc();
    return __real_aligned_alloc(a, n);
}

/* ---- a queue of writes kept full from the completions ---- */

static char img[4096], back[4096];
static bool have_qemu;

typedef struct Stream Stream;

typedef struct Slot {
    Stream *st;
    IOVector qiov;
} Slot;

/* Writes of len bytes at first, first + step, ...; up to qd in flight. */
struct Stream {
    BlockBackend *blk;
    uint8_t *buf;           /* the data of every write (one pattern) */
    int64_t next, step, len, end;
    int inflight, errors;
    Slot slots[QD_MAX];
};

static void stream_cb(void *opaque, int ret);

static void stream_submit(Slot *sl)
{
    Stream *st = sl->st;

    iovector_init_buf(&sl->qiov, st->buf, (size_t)st->len);
    st->inflight++;
    assert_non_null(blk_aio_pwritev(st->blk, st->next, &sl->qiov, 0, stream_cb, sl));
    st->next += st->step;
}

static void stream_cb(void *opaque, int ret)
{
    Slot *sl = opaque;
    Stream *st = sl->st;

    st->inflight--;
    st->errors += ret < 0;
    if (st->next + st->len <= st->end) {
        stream_submit(sl);
    }
}

/* Writes [from, to) of the stream's offsets at queue depth qd; returns the allocations. */
static long stream_run(Stream *st, int qd, int64_t from, int64_t to, bool count)
{
    AioContext *ctx = blk_get_aio_context(st->blk);
    long n;

    st->next = from;
    st->end = to;
    atomic_store(&nallocs, 0);
    atomic_store(&counting, count);
    for (int i = 0; i < qd && st->next + st->len <= st->end; i++) {
        st->slots[i].st = st;
        stream_submit(&st->slots[i]);
    }
    while (st->inflight) {
        aio_poll(ctx, true);
    }
    atomic_store(&counting, false);
    n = atomic_load(&nallocs);
    assert_int_equal(st->errors, 0);
    return n;
}

/*
 * On a new image (over backing file bk when non-NULL): writes of len bytes
 * every step bytes at queue depth qd, a warm-up stretch over the first
 * quarter of the image, then a counted stretch over the next half; checks
 * the bytes of the counted stretch and the image, and returns the count.
 */
static long steady_allocs(const char *bk, int qd, int64_t step, int64_t len, uint64_t *joined)
{
    Stream st = { .step = step, .len = len };
    char opts[8192];
    uint8_t *got;
    long n;

    if (bk) {
        snprintf(opts, sizeof(opts), "size=%lld,backing_file=%s,backing_fmt=raw",
                 (long long)GUEST, bk);
    } else {
        snprintf(opts, sizeof(opts), "size=%lld", (long long)GUEST);
    }
    assert_int_equal(drv_test_create("qcow2", img, opts, NULL, 0), 0);
    st.blk = drv_test_open_image("qcow2", img, BDRV_O_RDWR);
    st.buf = malloc((size_t)len);
    got = malloc((size_t)len);
    assert_non_null(st.buf);
    assert_non_null(got);
    drv_test_pattern(st.buf, (size_t)len, 0x5a);

    stream_run(&st, qd, 0, GUEST / 4, false);
    n = stream_run(&st, qd, GUEST / 4, 3 * GUEST / 4, true);
    *joined = ((BDRVQcow2State *)blk_bs(st.blk)->opaque)->wbatch_joined;

    for (int64_t off = GUEST / 4; off + len <= 3 * GUEST / 4; off += step) {
        assert_int_equal(blk_pread(st.blk, off, len, got, 0), 0);
        assert_memory_equal(got, st.buf, (size_t)len);
    }
    blk_unref(st.blk);
    if (have_qemu) {
        assert_int_equal(drv_test_sh("qemu-img check -q '%s'", img), 0);
    }
    free(got);
    free(st.buf);
    return n;
}

/* The count must be zero where the pools make it possible; else it is only shown. */
static void assert_none(const char *what, long n)
{
    printf("# %s: %ld allocations in the counted stretch\n", what, n);
    if (COBLK_POOLS) {
        assert_int_equal(n, 0);
    }
}

/* The counters see the library's allocations (the control for the cases below). */
static void test_steady_counter_sees_library(void **state)
{
    IOVector v;

    atomic_store(&nallocs, 0);
    atomic_store(&counting, true);
    iovector_init(&v, 4);
    atomic_store(&counting, false);
    iovector_destroy(&v);
    assert_int_equal(atomic_load(&nallocs), 1);
}

/* 64 KiB sequential writes at qd 32: the data writes batch (wbatch.c). */
static void test_steady_seq64k_qd32(void **state)
{
    uint64_t joined;

    assert_none("64 KiB seq qd 32", steady_allocs(NULL, 32, CS, CS, &joined));
    assert_true(joined > 0);
}

/* 64 KiB sequential writes at qd 1: lone allocations, never batched. */
static void test_steady_seq64k_qd1(void **state)
{
    uint64_t joined;

    assert_none("64 KiB seq qd 1", steady_allocs(NULL, 1, CS, CS, &joined));
    assert_int_equal(joined, 0);
}

/* 4 KiB writes into every other cluster at qd 8: each allocates a cluster of its own. */
static void test_steady_scatter4k_qd8(void **state)
{
    uint64_t joined;

    assert_none("4 KiB scattered qd 8",
                steady_allocs(NULL, 8, 2 * CS + 4 * KiB, 4 * KiB, &joined));
}

/* 4 KiB writes inside clusters over a backing file: head and tail are copied from it. */
static void test_steady_cow_backing_qd8(void **state)
{
    uint64_t joined;

    drv_test_make_file(back, GUEST, 7);
    assert_none("4 KiB COW from backing qd 8",
                steady_allocs(back, 8, CS + 8 * KiB, 4 * KiB, &joined));
}

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "qcow2steady-img");
    drv_test_path(back, sizeof(back), "qcow2steady-back");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(back);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steady_counter_sees_library),
        cmocka_unit_test_setup_teardown(test_steady_seq64k_qd32, setup, teardown),
        cmocka_unit_test_setup_teardown(test_steady_seq64k_qd1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_steady_scatter4k_qd8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_steady_cow_backing_qd8, setup, teardown),
    };

    have_qemu = drv_test_sh("command -v qemu-img >/dev/null") == 0;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
