/* `make install DESTDIR=...` installs every documented file with no DESTDIR
 * inside any of them, and the man pages format without a warning (groff is
 * skipped with a message when absent). */
#include "systemd_helpers.h"

/* ---- make install ---- */

/* Installed text files must not mention DESTDIR: they are read after the
 * staged tree is copied to /. */
static void assert_no_destdir(const char *path, const char *destdir)
{
    char *t = read_file(path);
    ck_assert_msg(!strstr(t, destdir), "%s mentions DESTDIR %s", path, destdir);
}

START_TEST(install_with_destdir)
{
    char dest[128], p[512];
    make_tmp();
    snprintf(dest, sizeof dest, "%s/stage", tmp_);
    make_install(dest, "/usr/local");

    /* Every documented file; text = 1 where the installed text names paths
     * (no DESTDIR may show in it). */
    static const struct {
        const char *path;
        int text;
    } files[] = {
        {"/usr/local/sbin/zknallocd", 0},
        {"/usr/local/bin/zknallocctl", 0},
        {"/usr/local/lib/libzknalloc.so.0", 0},
        {"/usr/local/lib/libzknalloc.so", 0},
        {"/usr/local/lib/libzknalloc.a", 0},
        {"/usr/local/include/zknalloc.h", 0},
        {"/usr/local/lib/pkgconfig/zknalloc.pc", 0},
        {"/usr/local/share/man/man1/zknallocctl.1", 0},
        {"/usr/local/share/man/man3/zknalloc.3", 0},
        {"/usr/local/share/man/man7/zknalloc.7", 0},
        {"/usr/local/share/man/man8/zknallocd.8", 0},
        {"/usr/local/lib/systemd/system/zknallocd.service", 1},
        {"/usr/local/lib/systemd/system/zknallocd.socket", 1},
        {"/usr/local/lib/systemd/user/zknallocd.service", 1},
        {"/usr/local/lib/systemd/user/zknallocd.socket", 1},
        {"/usr/local/lib/sysusers.d/zknalloc.conf", 1},
        {"/usr/local/share/zknalloc/zknalloc-thp.conf", 1},
        {"/usr/local/share/doc/zknalloc/systemd.md", 0},
    };
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        must_exist(dest, files[i].path);

    /* The THP snippet is opt-in: nowhere tmpfiles.d would read it. */
    snprintf(p, sizeof p, "%s/usr/local/lib/tmpfiles.d/zknalloc-thp.conf", dest);
    ck_assert_int_ne(access(p, F_OK), 0);

    snprintf(p, sizeof p, "%s/usr/local/lib/pkgconfig/zknalloc.pc", dest);
    assert_no_destdir(p, dest);
    ck_assert_ptr_nonnull(strstr(read_file(p), "prefix=/usr/local\n"));
    ck_assert_ptr_nonnull(strstr(read_file(p), "libdir=/usr/local/lib\n"));
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        if (!files[i].text)
            continue;
        snprintf(p, sizeof p, "%s%s", dest, files[i].path);
        assert_no_destdir(p, dest);
    }
    snprintf(p, sizeof p, "%s/usr/local/lib/systemd/system/zknallocd.service", dest);
    ck_assert_ptr_nonnull(strstr(read_file(p), "\nExecStart=/usr/local/sbin/zknallocd "));
    rm_tmp();

    /* Another prefix: ExecStart follows SBINDIR. */
    make_tmp();
    snprintf(dest, sizeof dest, "%s/stage", tmp_);
    make_install(dest, "/usr");
    must_exist(dest, "/usr/lib/systemd/system/zknallocd.service");
    snprintf(p, sizeof p, "%s/usr/lib/systemd/system/zknallocd.service", dest);
    ck_assert_ptr_nonnull(strstr(read_file(p), "\nExecStart=/usr/sbin/zknallocd "));
    snprintf(p, sizeof p, "%s/usr/lib/pkgconfig/zknalloc.pc", dest);
    assert_no_destdir(p, dest);
    ck_assert_ptr_nonnull(strstr(read_file(p), "prefix=/usr\n"));
    rm_tmp();
}
END_TEST

/* ---- man pages ---- */

START_TEST(man_pages_format_cleanly)
{
    SKIP_WITHOUT("groff");
    static const char *const pages[] = {"zknallocd.8", "zknallocctl.1", "zknalloc.3",
                                        "zknalloc.7"};
    for (size_t i = 0; i < sizeof pages / sizeof *pages; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s/man/%s", repo_root(), pages[i]);
        const char *argv[] = {"groff", "-man", "-Tutf8", "-ww", "-z", p, NULL};
        struct out *o = run(argv);
        ck_assert_msg(o->status == 0 && o->err[0] == '\0', "groff on %s (status %d):\n%s", p,
                      o->status, o->err);
    }
}
END_TEST


static Suite *systemd_install_suite(void)
{
    Suite *s = suite_create("systemd_install");
    TCase *i = zkn_test_tcase(s, "install", 180);
    tcase_add_test(i, install_with_destdir);
    tcase_add_test(i, man_pages_format_cleanly);
    return s;
}

ZKN_TEST_MAIN(systemd_install_suite)
