/* handshake.c: being written */
