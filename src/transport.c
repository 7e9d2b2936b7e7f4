/* transport.c: being written */
