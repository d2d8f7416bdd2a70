/*
 * Unit tests for I/O vectors (block/iov.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <coblk/iov.h>

/* Builds a vector over buf cut into pieces of the given lengths (0-terminated). */
static void make_vec(IOVector *v, uint8_t *buf, const size_t *lens)
{
    size_t off = 0;

    iovector_init(v, 0);
    for (int i = 0; lens[i]; i++) {
        iovector_add(v, buf + off, lens[i]);
        off += lens[i];
    }
}

static void test_iov_init_buf_no_alloc(void **state)
{
    uint8_t buf[64];
    IOVector v;

    iovector_init_buf(&v, buf, sizeof(buf));
    assert_int_equal(v.niov, 1);
    assert_int_equal(v.size, sizeof(buf));
    assert_int_equal(v.nalloc, -1);
    assert_ptr_equal(v.iov, &v.local_iov);
    assert_ptr_equal(v.iov[0].iov_base, buf);
    iovector_reset(&v); /* borrowed: reset keeps it */
    assert_int_equal(v.size, sizeof(buf));
    iovector_destroy(&v);
}

static void test_iov_init_external(void **state)
{
    uint8_t a[10];
    uint8_t b[20];
    struct iovec iov[2] = { { a, sizeof(a) }, { b, sizeof(b) } };
    IOVector v;

    iovector_init_external(&v, iov, 2);
    assert_ptr_equal(v.iov, iov);
    assert_int_equal(v.niov, 2);
    assert_int_equal(v.size, 30);
    assert_int_equal(v.nalloc, -1);
    iovector_destroy(&v);
}

static void test_iov_add_grows(void **state)
{
    static uint8_t buf[1000];
    IOVector v;

    iovector_init(&v, 1);
    for (int i = 0; i < 100; i++) {
        iovector_add(&v, buf + i * 10, 10);
    }
    assert_int_equal(v.niov, 100);
    assert_int_equal(v.size, 1000);
    assert_true(v.nalloc >= 100);
    iovector_reset(&v);
    assert_int_equal(v.niov, 0);
    assert_int_equal(v.size, 0);
    iovector_destroy(&v);
}

static void test_iov_copy_roundtrip_across_pieces(void **state)
{
    static const size_t lens[] = { 3, 1, 7, 64, 5, 0 };
    uint8_t back[80];
    uint8_t src[80];
    uint8_t out[80];
    IOVector v;

    for (int i = 0; i < 80; i++) {
        src[i] = (uint8_t)(i * 7 + 1);
    }
    memset(back, 0, sizeof(back));
    make_vec(&v, back, lens);
    assert_int_equal(v.size, 80);
    for (size_t off = 0; off <= 80; off++) {
        for (size_t n = 0; off + n <= 80; n += 3) {
            memset(back, 0, sizeof(back));
            assert_int_equal(iovector_from_buf(&v, off, src, n), n);
            for (size_t i = 0; i < 80; i++) {
                uint8_t want = (i >= off && i < off + n) ? src[i - off] : 0;

                assert_int_equal(back[i], want);
            }
            memset(out, 0xee, sizeof(out));
            assert_int_equal(iovector_to_buf(&v, off, out, n), n);
            assert_memory_equal(out, src, n);
        }
    }
    /* Past the end: copies what fits. */
    assert_int_equal(iovector_to_buf(&v, 75, out, 10), 5);
    assert_int_equal(iovector_from_buf(&v, 90, src, 10), 0);
    iovector_destroy(&v);
}

static void test_iov_memset_and_is_zero(void **state)
{
    static const size_t lens[] = { 5, 11, 100, 3, 0 };
    uint8_t back[119];
    IOVector v;

    memset(back, 0xff, sizeof(back));
    make_vec(&v, back, lens);
    assert_false(iovector_is_zero(&v, 0, v.size));
    assert_int_equal(iovector_memset(&v, 4, 0, 110), 110);
    assert_int_equal(back[3], 0xff);
    assert_int_equal(back[114], 0xff);
    assert_true(iovector_is_zero(&v, 4, 110));
    assert_false(iovector_is_zero(&v, 3, 110));
    assert_false(iovector_is_zero(&v, 4, 111));
    assert_true(iovector_is_zero(&v, 50, 0));
    back[60] = 1;
    assert_false(iovector_is_zero(&v, 4, 110));
    /* Asking beyond the end is not "all zero". */
    assert_false(iovector_is_zero(&v, 118, 10));
    iovector_destroy(&v);
}

static void test_iov_is_zero_long_unaligned(void **state)
{
    size_t len = 70000;
    uint8_t *buf = calloc(1, len + 1);
    IOVector v;

    iovector_init_buf(&v, buf + 1, len);
    assert_true(iovector_is_zero(&v, 0, len));
    for (size_t pos = 0; pos < len; pos += 4999) {
        buf[1 + pos] = 0x80;
        assert_false(iovector_is_zero(&v, 0, len));
        buf[1 + pos] = 0;
    }
    buf[len] = 1;
    assert_false(iovector_is_zero(&v, 0, len));
    assert_true(iovector_is_zero(&v, 0, len - 1));
    free(buf);
}

static void test_iov_concat_slices_by_reference(void **state)
{
    static const size_t lens[] = { 4, 4, 4, 4, 0 };
    uint8_t back[16];
    IOVector src;
    IOVector dst;

    for (int i = 0; i < 16; i++) {
        back[i] = (uint8_t)i;
    }
    make_vec(&src, back, lens);
    iovector_init(&dst, 0);
    iovector_concat(&dst, &src, 2, 9);
    assert_int_equal(dst.size, 9);
    assert_int_equal(dst.niov, 3);
    assert_ptr_equal(dst.iov[0].iov_base, back + 2);
    assert_int_equal(dst.iov[0].iov_len, 2);
    assert_int_equal(dst.iov[2].iov_len, 3);
    /* By reference: writing through dst changes src's memory. */
    iovector_memset(&dst, 0, 0xaa, 9);
    assert_int_equal(back[1], 1);
    assert_int_equal(back[2], 0xaa);
    assert_int_equal(back[10], 0xaa);
    assert_int_equal(back[11], 11);
    iovector_concat(&dst, &src, 16, 5); /* nothing past the end */
    assert_int_equal(dst.size, 9);
    iovector_destroy(&dst);
    iovector_destroy(&src);
}

static void test_iov_compare(void **state)
{
    static const size_t la[] = { 3, 9, 4, 0 };
    static const size_t lb[] = { 8, 8, 0 };
    uint8_t a[16];
    uint8_t b[16];
    IOVector va;
    IOVector vb;

    for (int i = 0; i < 16; i++) {
        a[i] = b[i] = (uint8_t)(i * 3);
    }
    make_vec(&va, a, la);
    make_vec(&vb, b, lb);
    assert_int_equal(iovector_compare(&va, &vb), -1);
    b[11] ^= 1;
    assert_int_equal(iovector_compare(&va, &vb), 11);
    b[11] ^= 1;
    b[0] ^= 1;
    assert_int_equal(iovector_compare(&va, &vb), 0);
    b[0] ^= 1;
    vb.iov[1].iov_len = 4;
    vb.size = 12;
    assert_int_equal(iovector_compare(&va, &vb), 12);
    iovector_destroy(&va);
    iovector_destroy(&vb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iov_init_buf_no_alloc),
        cmocka_unit_test(test_iov_init_external),
        cmocka_unit_test(test_iov_add_grows),
        cmocka_unit_test(test_iov_copy_roundtrip_across_pieces),
        cmocka_unit_test(test_iov_memset_and_is_zero),
        cmocka_unit_test(test_iov_is_zero_long_unaligned),
        cmocka_unit_test(test_iov_concat_slices_by_reference),
        cmocka_unit_test(test_iov_compare),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
