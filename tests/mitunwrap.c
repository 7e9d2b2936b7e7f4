/*
 * mitunwrap.c - MIT's verdict on a received Kerberos token (mitunwrap.h).
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <gssapi/gssapi.h>
#ifdef HAVE_GSSAPI_GSSAPI_EXT_H      /* MIT; Heimdal: all in gssapi.h */
# include <gssapi/gssapi_ext.h>
#endif

#include "mitunwrap.h"

ssize_t mit_unwrap_into(gss_ctx_id_t ctx, const uint8_t *tok, size_t len,
                        uint8_t *plain)
{
    OM_uint32 major, minor, tmp;
    uint8_t *buf = malloc(len + 1);
    ssize_t rc = -1;

    if (buf == NULL)
        return -2;
    memcpy(buf, tok, len);
    if (len >= 2 && buf[0] == 0x05 && buf[1] == 0x04) {
        gss_iov_buffer_desc iov[2];
        int conf = 0;
        gss_qop_t qop = 0;

        memset(iov, 0, sizeof(iov));
        iov[0].type = GSS_IOV_BUFFER_TYPE_STREAM;
        iov[0].buffer.value = buf;
        iov[0].buffer.length = len;
        iov[1].type = GSS_IOV_BUFFER_TYPE_DATA;
        major = gss_unwrap_iov(&minor, ctx, &conf, &qop, iov, 2);
        if (major == GSS_S_COMPLETE && iov[1].buffer.length > len)
            rc = -2;
        else if (major == GSS_S_COMPLETE)
            rc = (ssize_t)iov[1].buffer.length;
        if (rc > 0)
            memcpy(plain, iov[1].buffer.value, (size_t)rc);
        gss_release_iov_buffer(&tmp, iov, 2);
    } else {
        gss_buffer_desc in, out = GSS_C_EMPTY_BUFFER;

        in.value = buf;
        in.length = len;
        major = gss_unwrap(&minor, ctx, &in, &out, NULL, NULL);
        if (major == GSS_S_COMPLETE && out.length > len)
            rc = -2;
        else if (major == GSS_S_COMPLETE)
            rc = (ssize_t)out.length;
        if (rc > 0)
            memcpy(plain, out.value, (size_t)rc);
        gss_release_buffer(&tmp, &out);
    }
    free(buf);
    return rc;
}
