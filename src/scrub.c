/*
 * scrub.c - wiping secrets before their memory is freed, and control
 * characters out of text from the peer (see scrub.h).
 *
 * What is wiped, and when (negstream(7), SECURITY):
 *  - the library's copy of a password (begin_authenticate_as_client
 *    copies the options): as soon as the credentials are acquired, and
 *    the whole copy again before it is freed;
 *  - the frame buffers (decrypted plaintext after an in-place unwrap; the
 *    plaintext itself in a Sign or None token): before they are freed or
 *    replaced by larger ones;
 *  - GSSAPI buffers that held plaintext (gss_unwrap's output, gss_wrap's
 *    output when it is not encrypted): before gss_release_buffer.
 */
#include "config.h"

#include <string.h>

#include "scrub.h"

void negstream__wipe(void *p, size_t n)
{
    if (p == NULL || n == 0)
        return;
#if HAVE_EXPLICIT_BZERO
    explicit_bzero(p, n);
#else
    {
        volatile unsigned char *v = p;

        while (n-- > 0)
            *v++ = 0;
    }
#endif
}

/*
 * Where text from the peer goes (negstream(7), SECURITY): the client's
 * name on a server (negstream_remote_identity) is scrubbed when it is
 * copied from GSSAPI; every error message and every trace line is
 * scrubbed as it is formatted, since GSSAPI's status texts may quote
 * names from the peer's tokens.
 */
size_t negstream__scrub(char *s, size_t n)
{
    size_t i, replaced = 0;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c < 0x20 || c == 0x7f) {
            s[i] = '?';
            replaced++;
        }
    }
    return replaced;
}
