/*
 * mitunwrap.h - MIT's verdict on a received Kerberos token, for the tests
 * that compare it with the OpenSSL path's (check_cfx_diff.c, fuzz_cfx.c).
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#ifndef NEGSTREAM_TESTS_MITUNWRAP_H
#define NEGSTREAM_TESTS_MITUNWRAP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <gssapi/gssapi.h>

/*
 * What gss.c's GSSAPI path does with a token: gss_unwrap_iov in stream
 * mode for "05 04" (CFX), gss_unwrap otherwise, on a copy (MIT works in
 * place).  The plaintext goes to plain, which has room for len bytes.
 * Returns its length; -1 when MIT refuses the token; -2 when the copy
 * could not be allocated or MIT returned more plaintext than token (a
 * failure of the test, not a verdict).
 */
ssize_t mit_unwrap_into(gss_ctx_id_t ctx, const uint8_t *tok, size_t len,
                        uint8_t *plain);

#endif
