/* async.c: being written */
