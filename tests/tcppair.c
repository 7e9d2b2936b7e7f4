/*
 * tcppair.c - a connected TCP pair on 127.0.0.1 (tcppair.h).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcppair.h"

int tcp_pair_open(int fds[2], const char **what)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    int lst, c = -1, s = -1, one = 1, rc = -1, saved;

    *what = "socket";
    lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lst < 0)
        return -1;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    *what = "bind";
    if (bind(lst, (struct sockaddr *)&a, sizeof(a)) < 0)
        goto out;
    *what = "listen";
    if (listen(lst, 1) < 0)
        goto out;
    *what = "getsockname";
    if (getsockname(lst, (struct sockaddr *)&a, &alen) < 0)
        goto out;
    *what = "socket";
    c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0)
        goto out;
    *what = "connect";
    if (connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
        goto out;
    *what = "accept";
    s = accept4(lst, NULL, NULL, SOCK_CLOEXEC);
    if (s < 0)
        goto out;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fds[0] = c;
    fds[1] = s;
    *what = NULL;
    rc = 0;
out:
    saved = errno;
    if (rc < 0 && c >= 0)
        close(c);
    close(lst);
    errno = saved;
    return rc;
}
