/*
 * freeport.c - print a port on 127.0.0.1 that is free for both UDP and TCP.
 *
 * tests/kdc/with-realm needs one port for krb5kdc's kdc_ports and
 * kdc_tcp_ports.  Asking the kernel for port 0 is the only race-free way
 * to pick one while several realms start at once under "make -j check":
 * a fixed or random port would clash.  We bind UDP to port 0, then try TCP
 * on the port the kernel chose; if another process holds that TCP port we
 * ask again.  Both sockets are closed before we print, so a small window
 * remains before krb5kdc binds; with-realm retries the KDC start when it
 * loses that race.
 *
 * Usage: freeport        prints one port number and a newline, exit 0;
 *                        on failure a message on stderr, exit 1.
 *
 * Copyright (c) 2026 the libnegstream authors.  MIT licence (COPYING).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ATTEMPTS 50

/* Bind a socket of 'type' to 127.0.0.1:'port' (0: any).  Returns the fd,
 * or -1 with errno set. */
static int bind_loopback(int type, unsigned short port)
{
    struct sockaddr_in sin;
    int fd;
    int saved;

    fd = socket(AF_INET, type, 0);
    if (fd < 0)
        return -1;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons(port);
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* The port a bound socket got from the kernel, or 0 on failure. */
static unsigned short bound_port(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);

    if (getsockname(fd, (struct sockaddr *)&sin, &len) != 0)
        return 0;
    return ntohs(sin.sin_port);
}

int main(void)
{
    int attempt;
    int ufd = -1, tfd = -1;
    unsigned short port = 0;
    int rc = 1;

    for (attempt = 0; attempt < ATTEMPTS; attempt++) {
        ufd = bind_loopback(SOCK_DGRAM, 0);
        if (ufd < 0) {
            fprintf(stderr, "freeport: cannot bind a UDP socket to "
                    "127.0.0.1: %s\n", strerror(errno));
            goto out;
        }
        port = bound_port(ufd);
        if (port == 0) {
            fprintf(stderr, "freeport: getsockname failed: %s\n",
                    strerror(errno));
            goto out;
        }
        tfd = bind_loopback(SOCK_STREAM, port);
        if (tfd >= 0)
            break;
        if (errno != EADDRINUSE) {
            fprintf(stderr, "freeport: cannot bind TCP 127.0.0.1:%u: %s\n",
                    (unsigned)port, strerror(errno));
            goto out;
        }
        /* TCP side taken by someone else: try another UDP port. */
        close(ufd);
        ufd = -1;
    }
    if (tfd < 0) {
        fprintf(stderr, "freeport: no port free for both UDP and TCP on "
                "127.0.0.1 after %d attempts\n", ATTEMPTS);
        goto out;
    }
    if (printf("%u\n", (unsigned)port) < 0 || fflush(stdout) != 0) {
        fprintf(stderr, "freeport: cannot write to stdout: %s\n",
                strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (tfd >= 0)
        close(tfd);
    if (ufd >= 0)
        close(ufd);
    return rc;
}
