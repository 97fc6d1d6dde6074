/* import_apache: `moongate import-apache FILE` prints the init.lua equivalent of an Apache
 * httpd configuration's mod_proxy_scgi parts (docs/migrating-from-apache.md). */
#ifndef MG_IMPORT_APACHE_H
#define MG_IMPORT_APACHE_H

#include <stdio.h>

/* Translates FILE to stdout; untranslated directives and syntax errors go to stderr with
 * file:line. Returns the exit status: 0 all translated, 3 something was not, 1 an error. */
int mg_import_apache(const char *file);

/* The same with the init.lua written to `out` and the messages to `err` (the fuzz target
 * captures both). Nothing is written to `out` when the status is 1. */
int mg_import_apache_run(const char *file, FILE *out, FILE *err);

#endif
