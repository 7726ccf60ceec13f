/* The one test runner every check suite uses in place of its own main():
 *
 *     static Suite *suite(void)
 *     {
 *         Suite *s = suite_create("name");
 *         TCase *t = zkn_test_tcase(s, "case", 60);
 *         tcase_add_checked_fixture(t, setup, teardown);   (optional)
 *         tcase_add_test(t, a_test);
 *         return s;
 *     }
 *     ZKN_TEST_MAIN(suite)            suites that do not link libzknalloc
 *     ZKN_TEST_CLIENT_MAIN(suite)     suites that do
 *
 * Every test runs in its own forked process under check's timeout (the one
 * given to zkn_test_tcase; 0 keeps check's default), wrapped in an fd-leak
 * check: a checked fixture, added before the suite's own, notes the open fds
 * when the test process starts and, after the suite's teardown, fails the test
 * for every fd it left open. Client suites first hand the library's cache back
 * (zkn_release_cache) and may keep the library's one daemon connection (a
 * non-blocking AF_UNIX SOCK_SEQPACKET socket); the harness's own sockets are
 * blocking, so a test that leaks one still fails.
 *
 * Results go to stdout (check's CK_NORMAL text) and as TAP to $ZKN_TEST_TAP,
 * by default $ZKN_BUILD_DIR/tests/<program>.tap, which build-aux/run-tests.sh
 * reads. The exit status is 0 when every test passed. */
#ifndef ZKN_TEST_RUNNER_H
#define ZKN_TEST_RUNNER_H

#include <check.h>

/* Creates a test case with the runner's fd-leak fixture, adds it to s, and
 * sets its timeout (seconds; 0 keeps check's default). */
TCase *zkn_test_tcase(Suite *s, const char *name, double timeout_s);

/* Runs the suite make() builds; release, when not NULL, is the linked
 * library's zkn_release_cache. Returns main()'s exit status. */
int zkn_test_main(Suite *(*make)(void), void (*release)(void));

#define ZKN_TEST_MAIN(make)                                                                        \
    int main(void) { return zkn_test_main(make, NULL); }
#define ZKN_TEST_CLIENT_MAIN(make)                                                                 \
    int main(void) { return zkn_test_main(make, zkn_release_cache); }

#endif
