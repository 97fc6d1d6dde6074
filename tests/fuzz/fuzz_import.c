/* Fuzz target: `moongate import-apache`. The input is an Apache configuration, imported from a
 * scratch folder that also holds conf.d/ with two files, so that Include is reached. The
 * importer's output is data turned into code, so beyond "no crash" this checks that:
 *   - the exit status is 0, 1 or 3, never an internal error; with 1 nothing is printed;
 *   - stdout and stderr are printable ASCII lines: no byte of the input can end a comment or a
 *     string, or reach a terminal as a control;
 *   - the output loads in a Lua state where it can see only `require`, which gives a recording
 *     stand-in for "moongate" and nothing else; neither the output nor the hooks it hands to
 *     mg.* (called with a request of strings) touch any other global;
 *   - every statement is an mg.* call on a line of its own, and comments are inert: the output
 *     compiles to the same bytecode once the text of every comment is removed;
 *   - with exit status 0, moongate's loader (what `moongate -t` runs) accepts the output, but
 *     for a backend host that does not resolve on this machine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "config.h"
#include "import_apache.h"

static char dir[] = "/tmp/mg-fuzz-import-XXXXXX";
static char conf_path[128], out_path[128];

static const char *const seeds[][2] = {
    {"conf.d/10-app.conf", "ProxyPass /inc/ scgi://127.0.0.1:4000/ timeout=5\nSetEnv FROM_INCLUDE yes\n"},
    {"conf.d/20-bal.conf",
     "<Proxy balancer://inc>\n  BalancerMember scgi://127.0.0.1:4001 route=a\n  BalancerMember "
     "scgi://127.0.0.1:4002 route=b loadfactor=2\n</Proxy>\n"},
};

static void write_file(const char *path, const char *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(data, 1, len, f) != len) abort();
  fclose(f);
}

static void cleanup(void) {
  char p[256];
  for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
    snprintf(p, sizeof p, "%s/%s", dir, seeds[i][0]);
    unlink(p);
  }
  snprintf(p, sizeof p, "%s/conf.d", dir);
  rmdir(p);
  unlink(conf_path), unlink(out_path);
  rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  if (!mkdtemp(dir)) abort();
  char p[256];
  snprintf(p, sizeof p, "%s/conf.d", dir);
  if (mkdir(p, 0755) < 0) abort();
  for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
    snprintf(p, sizeof p, "%s/%s", dir, seeds[i][0]);
    write_file(p, seeds[i][1], strlen(seeds[i][1]));
  }
  snprintf(conf_path, sizeof conf_path, "%s/apache.conf", dir);
  snprintf(out_path, sizeof out_path, "%s/out.lua", dir);
  atexit(cleanup);
  return 0;
}

/* The checks on the output, in a Lua state of its own; raises with what was wrong. */
static const char harness[] =
    "local text = ...\n"
    "local calls, fns = 0, {}\n"
    "local function walk(v, seen)\n"
    "  if type(v) == 'function' then fns[#fns + 1] = v\n"
    "  elseif type(v) == 'table' and not seen[v] then\n"
    "    seen[v] = true\n"
    "    for k, x in pairs(v) do walk(k, seen); walk(x, seen) end\n"
    "  end\n"
    "end\n"
    "local in_hook = false\n"
    /* In hooks, mg.re finds nothing and mg.unescape_uri gives its argument back, uncounted. */
    "local hook_api = { re = { match = function() return nil end, find = function() return nil end },\n"
    "  unescape_uri = function(s) return s end }\n"
    "local stub = setmetatable({}, { __index = function(_, name)\n"
    "  if in_hook and hook_api[name] then return hook_api[name] end\n"
    "  return function(...)\n"
    "    calls = calls + 1\n"
    "    for i = 1, select('#', ...) do walk((select(i, ...)), {}) end\n"
    "  end\n"
    "end })\n"
    "local env = setmetatable({}, {\n"
    "  __index = function(_, k)\n"
    "    if k == 'require' and not in_hook then\n"
    "      return function(name)\n"
    "        if name ~= 'moongate' then error('the output requires ' .. tostring(name), 2) end\n"
    "        return stub\n"
    "      end\n"
    "    end\n"
    "    if k == 'string' and in_hook then return { find = string.find } end\n"
    "    error('the output reads the global ' .. tostring(k), 2)\n"
    "  end,\n"
    "  __newindex = function(_, k) error('the output sets the global ' .. tostring(k), 2) end,\n"
    "})\n"
    "local chunk, err = loadstring(text, '=out')\n"
    "if not chunk then error('the output does not parse: ' .. err) end\n"
    "setfenv(chunk, env)\n"
    "chunk()\n"
    "in_hook = true\n"
    "for _, fn in ipairs(fns) do\n"
    "  local req = { uri = '/a/b.php', raw_uri = '/a/b.php?q', method = 'GET', http_version = '1.1', remote_addr = '127.0.0.1',\n"
    "    env = {}, exit = function() return true end,\n"
    "    headers = setmetatable({}, { __index = function() return 'curl/7.x' end }) }\n"
    "  fn(req)\n"
    "end\n"
    "local stmts = 0\n"
    "for line in text:gmatch('[^\\n]*') do if line:sub(1, 3) == 'mg.' then stmts = stmts + 1 end end\n"
    "if stmts ~= calls then error(('%d mg.* lines but %d calls'):format(stmts, calls)) end\n"
    /* Comments removed by a lexer of the output's own syntax: "..." strings with escapes and
     * -- comments to the end of the line; nothing else may start a string or a comment. */
    "local out, i, n = {}, 1, #text\n"
    "while i <= n do\n"
    "  local j = text:find('[\"%-\\'%[]', i)\n"
    "  if not j then out[#out + 1] = text:sub(i); break end\n"
    "  out[#out + 1] = text:sub(i, j - 1)\n"
    "  local c = text:sub(j, j)\n"
    "  if c == '\"' then\n"
    "    local k = j + 1\n"
    "    while true do\n"
    "      local d = text:sub(k, k)\n"
    "      if d == '' then error('unterminated string') end\n"
    "      if d == '\\\\' then k = k + 2 elseif d == '\"' then break else k = k + 1 end\n"
    "    end\n"
    "    out[#out + 1] = text:sub(j, k); i = k + 1\n"
    "  elseif c == '-' and text:sub(j + 1, j + 1) == '-' then\n"
    "    i = text:find('\\n', j, true) or n + 1\n"
    "  elseif c == \"'\" or (c == '[' and text:sub(j + 1, j + 1):match('[%[=]')) then\n"
    "    error('a quote or long bracket outside a comment at byte ' .. j)\n"
    "  else\n"
    "    out[#out + 1] = c; i = j + 1\n"
    "  end\n"
    "end\n"
    "local bare = assert(loadstring(table.concat(out), '=bare'))\n"
    "if string.dump(chunk, true) ~= string.dump(bare, true) then\n"
    "  error('the comments of the output change its code')\n"
    "end\n";

static void fail(const char *what, const char *detail, const char *out) {
  fprintf(stderr, "fuzz_import: %s: %s\n--- output ---\n%s\n", what, detail, out ? out : "");
  abort();
}

static void check_ascii(const char *what, const char *s, size_t len, const char *out) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c != '\n' && (c < 0x20 || c > 0x7e)) {
      char d[64];
      snprintf(d, sizeof d, "byte %u at offset %zu", c, i);
      fail(what, d, out);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  write_file(conf_path, (const char *)data, size);
  char *out = NULL, *err = NULL;
  size_t out_len = 0, err_len = 0;
  FILE *o = open_memstream(&out, &out_len), *e = open_memstream(&err, &err_len);
  if (!o || !e) abort();
  int rc = mg_import_apache_run(conf_path, o, e);
  fclose(o), fclose(e);
  if (rc != 0 && rc != 1 && rc != 3) fail("exit status", "not 0, 1 or 3", out);
  /* A message of the importer's own starts every line; only its internal error starts so. */
  for (const char *l = err; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
    if (strncmp(l, "moongate import-apache: internal error", 38) == 0) fail("the importer failed", err, out);
  check_ascii("stderr", err, err_len, out);
  if (rc == 1 && out_len) fail("exit 1", "but an output was printed", out);
  if (rc != 1) {
    check_ascii("stdout", out, out_len, out);
    lua_State *L = luaL_newstate();
    if (!L) abort();
    luaL_openlibs(L);
    if (luaL_loadbuffer(L, harness, sizeof harness - 1, "=harness") != 0) fail("harness", lua_tostring(L, -1), out);
    lua_pushlstring(L, out, out_len);
    if (lua_pcall(L, 1, 0, 0) != 0) fail("the output", lua_tostring(L, -1), out);
    lua_close(L);
  }
  if (rc == 0) {
    write_file(out_path, out, out_len);
    char msg[2048];
    mg_config_t *cfg = mg_config_load(out_path, msg, sizeof msg);
    if (cfg) mg_config_free(cfg);
    else if (!strstr(msg, "cannot resolve backend host")) fail("exit 0 but moongate -t refuses the output", msg, out);
  }
  free(out), free(err);
  return 0;
}
