/* pool.c: being written */
