/* main: the command line (docs/reference.md, "Command line").
 *
 *   moongate [-c FILE] [-t] [-s reload|stop|quit|reopen] [--pid FILE] [-V] [-h]
 *   moongate --explain "METHOD /path?query" [--header "Name: value"]... [--json] [-c FILE]
 *   moongate import-apache FILE
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "control.h"
#include "explain.h"
#include "import_apache.h"
#include "log.h"
#include "master.h"

static const char usage[] =
    "usage: moongate [-c FILE] [-t] [-s reload|stop|quit|reopen] [--pid FILE] [-V] [-h]\n"
    "       moongate --explain \"METHOD /path?query\" [--header \"Name: value\"]... [--json] [-c FILE]\n"
    "       moongate import-apache FILE\n"
    "       moongate member drain|enable|disable BALANCER URL [--wait] [-c FILE] [--pid FILE]\n"
    "\n"
    "  -c FILE     configuration script (default ./init.lua)\n"
    "  -t          check the configuration and exit: 0 when it loads, 1 with file:line otherwise\n"
    "  -s SIGNAL   send reload (HUP), stop (TERM), quit (QUIT) or reopen (USR1: reopen the log\n"
    "              files, for logrotate) to the running master\n"
    "  --pid FILE  pid file (default: mg.set{pid=...}, else moongate.pid beside the config)\n"
    "  -V          print the version\n"
    "  -h          this help\n"
    "  --explain   run a request through routing and the rewrite, access and balancer hooks\n"
    "              without contacting a backend; print the route, the hooks, the member and the\n"
    "              SCGI variables in order (--json: as one JSON object)\n"
    "  import-apache FILE  print the init.lua equivalent of an Apache configuration; exit 0\n"
    "              when all was translated, 3 when something was not (named on stderr), 1 on error\n"
    "  member      change a balancer member in the running master, every worker at once (drain:\n"
    "              no new requests but sticky ones; disable; enable); --wait returns when the\n"
    "              member has nothing in flight in any worker\n"
    "\n"
    "Signals to the master: HUP reloads the scripts (the old workers serve until the new ones\n"
    "accept), TERM/INT stop (in-flight requests get shutdown_timeout to finish; a worker still\n"
    "running a second later is killed), QUIT drains without a deadline.\n";

static char *default_pid(const mg_config_t *cfg, const char *file) {
  if (cfg && cfg->set.pid) return mg_strdup(cfg->set.pid);
  mg_buf_t b;
  mg_buf_init(&b);
  if (cfg) mg_buf_printf(&b, "%s/moongate.pid", cfg->dir);
  else {
    const char *slash = strrchr(file, '/');
    if (slash) mg_buf_printf(&b, "%.*s/moongate.pid", (int)(slash - file), file);
    else mg_buf_puts(&b, "moongate.pid");
  }
  return mg_buf_steal(&b);
}

static int send_signal(const char *pid_file, const char *name) {
  int sig = strcmp(name, "reload") == 0 ? SIGHUP : strcmp(name, "stop") == 0 ? SIGTERM : strcmp(name, "quit") == 0 ? SIGQUIT
          : strcmp(name, "reopen") == 0 ? SIGUSR1 : 0;
  if (!sig) {
    fprintf(stderr, "moongate: -s takes reload, stop, quit or reopen, not \"%s\"\n", name);
    return 1;
  }
  FILE *f = fopen(pid_file, "r");
  int pid = 0;
  if (!f || fscanf(f, "%d", &pid) != 1 || pid <= 0) {
    fprintf(stderr, "moongate: cannot read pid file %s: %s\n", pid_file, f ? "no pid in it" : strerror(errno));
    if (f) fclose(f);
    return 1;
  }
  fclose(f);
  if (kill(pid, sig) < 0) {
    fprintf(stderr, "moongate: cannot signal process %d from %s: %s\n", pid, pid_file, strerror(errno));
    return 1;
  }
  return 0;
}

/* `moongate member ACTION BALANCER URL [--wait] [-c FILE] [--pid FILE]` (control.h). */
static int member_command(int argc, char **argv) {
  const char *file = "init.lua", *pid_opt = NULL, *pos[3] = {NULL, NULL, NULL};
  int npos = 0, wait = 0;
  for (int i = 2; i < argc; i++) {
    if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) file = argv[++i];
    else if (strcmp(argv[i], "--pid") == 0 && i + 1 < argc) pid_opt = argv[++i];
    else if (strcmp(argv[i], "--wait") == 0) wait = 1;
    else if (argv[i][0] != '-' && npos < 3) pos[npos++] = argv[i];
    else npos = 4;
  }
  if (npos != 3 || (strcmp(pos[0], "drain") && strcmp(pos[0], "enable") && strcmp(pos[0], "disable")) ||
      strchr(pos[1], ' ') || strchr(pos[2], ' ')) {
    fprintf(stderr, "moongate: usage: moongate member drain|enable|disable BALANCER URL [--wait] [-c FILE] [--pid FILE]\n");
    return 1;
  }
  char *pid_file;
  if (pid_opt) {
    pid_file = mg_strdup(pid_opt);
  } else {
    char err[4096];
    mg_config_t *cfg = mg_config_load(file, err, sizeof err);
    pid_file = default_pid(cfg, file);
    mg_config_free(cfg);
  }
  mg_buf_t line;
  mg_buf_init(&line);
  mg_buf_printf(&line, "%s %s %s%s\n", pos[0], pos[1], pos[2], wait ? " wait" : "");
  char *text = mg_buf_steal(&line);
  int rc = mg_control_request(pid_file, text);
  free(text), free(pid_file);
  return rc;
}

int main(int argc, char **argv) {
  const char *file = "init.lua", *signal_name = NULL, *pid_opt = NULL;
  int test = 0, json = 0;
  const char *explain = NULL;
  const char *headers[argc > 0 ? argc : 1];
  int nheaders = 0;
  if (argc >= 2 && strcmp(argv[1], "import-apache") == 0) {
    if (argc != 3) {
      fprintf(stderr, "moongate: usage: moongate import-apache FILE\n");
      return 1;
    }
    return mg_import_apache(argv[2]);
  }
  if (argc >= 2 && strcmp(argv[1], "member") == 0) return member_command(argc, argv);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-c") == 0 && i + 1 < argc) file = argv[++i];
    else if (strcmp(a, "-t") == 0) test = 1;
    else if (strcmp(a, "--explain") == 0 && i + 1 < argc) explain = argv[++i];
    else if (strcmp(a, "--header") == 0 && i + 1 < argc) headers[nheaders++] = argv[++i];
    else if (strcmp(a, "--json") == 0) json = 1;
    else if (strcmp(a, "-s") == 0 && i + 1 < argc) signal_name = argv[++i];
    else if (strcmp(a, "--pid") == 0 && i + 1 < argc) pid_opt = argv[++i];
    else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
      printf("moongate/%s\n", MG_VERSION);
      return 0;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      fputs(usage, stdout);
      return 0;
    } else {
      fprintf(stderr, "moongate: unknown or incomplete option \"%s\"\n%s", a, usage);
      return 1;
    }
  }
  char err[4096];
  mg_config_t *cfg = mg_config_load(file, err, sizeof err);
  if (signal_name) {
    char *pid_file = pid_opt ? mg_strdup(pid_opt) : default_pid(cfg, file);
    int rc = send_signal(pid_file, signal_name);
    free(pid_file);
    mg_config_free(cfg);
    return rc;
  }
  if (!cfg) {
    fprintf(stderr, "moongate: %s\n", err);
    return 1;
  }
  if ((nheaders || json) && !explain) {
    fprintf(stderr, "moongate: --header and --json go with --explain\n");
    mg_config_free(cfg);
    return 1;
  }
  if (explain) {
    /* The error log (hook errors, request errors) goes to stderr; the explanation to stdout. */
    mg_log_open(NULL, "off", cfg->set.log_level);
    int rc = mg_explain_run(cfg, explain, headers, nheaders, json);
    mg_config_free(cfg);
    return rc;
  }
  if (test) {
    printf("moongate: configuration ok\n");
    mg_config_free(cfg);
    return 0;
  }
  mg_master_set_log_owner(cfg);
  int rc = mg_log_open(cfg->set.error_log, cfg->set.access_log, cfg->set.log_level);
  mg_log_access_format(cfg->set.access_log_json);
  if (rc < 0) {
    fprintf(stderr, "moongate: cannot open logs (error_log %s, access_log %s): %s\n",
            cfg->set.error_log ? cfg->set.error_log : "stderr", cfg->set.access_log, strerror(-rc));
    mg_config_free(cfg);
    return 1;
  }
  char *pid_file = pid_opt ? mg_strdup(pid_opt) : default_pid(cfg, file);
  rc = mg_master_run(cfg, pid_file);
  free(pid_file);
  return rc;
}
