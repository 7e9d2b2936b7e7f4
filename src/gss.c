/* gss.c: being written */
