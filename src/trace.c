/* trace.c: being written */
