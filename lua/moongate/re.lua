-- moongate.re: mg.re (= ngx.re) as lua-resty-core's resty/core/regex.lua builds ngx.re: Lua
-- over LuaJIT's FFI, calling small C functions of src/lua/lua_re.c (mg_re_ffi_*, exported by
-- the binary), so that a loop calling ngx.re.match or find compiles into a trace with the
-- pattern's match a plain C call and the captures table built in Lua.
--
-- Without the JIT compiler (lua_max_run_time on, the default) an FFI call in the interpreter
-- costs more than a classic Lua C function, so each state chooses: the FFI when jit.status()
-- says the compiler is on, the classic C functions of lua_re.c when it is off. The choice is
-- made when the state is opened and again when a worker starts (mg_re_choose, once
-- lua_max_run_time has set the mode); both give the same results, down to the errors raised,
-- as tests/e2e/test_regex.py checks under both settings.
--
-- The "o" cache is lua_re.c's, one per state for both ways: a cached entry is found in C by
-- the pattern string's address and kept here, in `memo`, by option string and pattern, which
-- also keeps the pattern string alive while the entry lives (as long as the state). A pattern
-- compiled for one call is freed when the call ends, or by its ffi.gc finalizer when an error
-- (a failing replacement function) ends the call.
--
-- The builder is called once per state by mg_re_open with the classic functions and the
-- cache's address; it returns mg.re and the function that makes the choice again.
local ffi = require "ffi"
local bit = require "bit"
local jit = require "jit"

local band = bit.band
local byte, find, match, sub = string.byte, string.find, string.match, string.sub
local concat = table.concat
local floor = math.floor
local error, pcall, rawget, rawset, select, tonumber, tostring, type =
  error, pcall, rawget, rawset, select, tonumber, tostring, type
local loaded = package.loaded

local ok_new, new_tab = pcall(require, "table.new")
if not ok_new then new_tab = function() return {} end end

ffi.cdef [[
typedef struct mg_re_s mg_re_t;
int mg_re_ffi_get(void *state, const char *pat, size_t len, const char *opts, size_t olen,
                  long long max, mg_re_t **out, char *err);
void mg_re_ffi_free(mg_re_t *re);
int mg_re_ffi_exec(mg_re_t *re, const char *s, size_t len, int pos);
int mg_re_ffi_errcode(int rc);
void *mg_re_ffi_ovector(mg_re_t *re);
int mg_re_ffi_direct(mg_re_t *re, void **code, void **md, uint32_t *mopts);
int mg_re_ffi_ncap(const mg_re_t *re);
unsigned mg_re_ffi_flags(const mg_re_t *re);
int mg_re_ffi_name_count(const mg_re_t *re);
const char *mg_re_ffi_name(const mg_re_t *re, int i, int *group);
int mg_re_ffi_template_check(const char *t, size_t n);
]]

-- lua_re.h's MG_RE_DUPNAMES; and its cache's default size (regex_cache_max_entries).
local FLAG_DUPNAMES = 8
local DEFAULT_CACHE = 1024
local INT_MAX = 2147483647

-- The binary exports the functions (ENABLE_EXPORTS); a program built without (a fuzz target)
-- has only the classic ones.
local C = ffi.C
local have_ffi, re_get, re_free, re_exec, re_errcode, re_ovector, re_direct, re_ncap, re_flags,
  re_name_count, re_name, template_check = pcall(function()
    return C.mg_re_ffi_get, C.mg_re_ffi_free, C.mg_re_ffi_exec, C.mg_re_ffi_errcode, C.mg_re_ffi_ovector,
      C.mg_re_ffi_direct, C.mg_re_ffi_ncap, C.mg_re_ffi_flags, C.mg_re_ffi_name_count, C.mg_re_ffi_name,
      C.mg_re_ffi_template_check
  end)

-- A JIT-compiled pattern owing no UTF-8 check runs by a direct call of PCRE2's fast path (the
-- binary links libpcre2-8), one C call fewer; the others through mg_re_ffi_exec.
local jit_match = pcall(ffi.cdef, [[
int pcre2_jit_match_8(void *code, const char *s, size_t len, size_t pos, uint32_t opts, void *md,
                      void *mctx);
]]) and select(2, pcall(function() return C.pcre2_jit_match_8 end)) or nil
if type(jit_match) ~= "cdata" then jit_match = nil end
local BADOFFSET = -24 -- PCRE 8's number, as mg_re_ffi_exec gives it

return function(classic, state)
  local c_match, c_find, c_gmatch, c_sub, c_gsub =
    classic.match, classic.find, classic.gmatch, classic.sub, classic.gsub
  local st = ffi.cast("void *", state)
  local use_ffi, forced, chosen = false, nil, nil

  local function choose()
    if forced then use_ffi = forced == "ffi"
    else use_ffi = have_ffi and (jit.status()) or false end
  end
  choose()

  -- Reused by every compile: no Lua code runs between their write and their read.
  local errbuf = ffi.new("char[128]")
  local outp = ffi.new("mg_re_t *[1]")
  local group = ffi.new("int[1]")
  local codep, mdp, moptsp = ffi.new("void *[1]"), ffi.new("void *[1]"), ffi.new("uint32_t[1]")
  local ovector_t = ffi.typeof("intptr_t *")

  -- The classic functions raise from C, with no file:line: so do these (level 0).
  local function type_error(idx, fn, want, v)
    error("bad argument #" .. idx .. " to '" .. fn .. "' (" .. want .. " expected, got " .. type(v) .. ")", 0)
  end

  local function compare_error(v)
    error("attempt to compare " .. type(v) .. " with number", 0)
  end

  -- regex_cache_max_entries as mg.set recorded it, read when an entry may be added (rare).
  local function cache_max()
    local v = loaded.moongate
    v = type(v) == "table" and v._state
    v = type(v) == "table" and v.settings
    v = type(v) == "table" and v.regex_cache_max_entries
    return (type(v) == "number" or type(v) == "string") and tonumber(v) or DEFAULT_CACHE
  end

  -- memo[opts][pattern]: the cached entries, as tables read from Lua without a C call.
  local memo = {}

  local function entry(h, cached)
    local nn = re_name_count(h)
    local names = false
    if nn > 0 then
      names = new_tab(2 * nn, 0)
      for i = 0, nn - 1 do
        names[2 * i + 2] = ffi.string(re_name(h, i, group))
        names[2 * i + 1] = group[0]
      end
    end
    local fast = re_direct(h, codep, mdp, moptsp) ~= 0 and jit_match ~= nil
    return {
      re = h, ov = ffi.cast(ovector_t, re_ovector(h)), ncap = re_ncap(h), nn = nn, names = names,
      dup = band(re_flags(h), FLAG_DUPNAMES) ~= 0, cached = cached,
      fast = fast, code = codep[0], md = mdp[0], mopts = moptsp[0],
    }
  end

  -- mg_re_ffi_exec's results.
  local function exec(e, subj, len, pos)
    if e.fast then
      if pos > len then return BADOFFSET end
      local rc = jit_match(e.code, subj, len, pos, e.mopts, e.md, nil)
      if rc < -1 then return re_errcode(rc) end
      return rc
    end
    return re_exec(e.re, subj, len, pos)
  end

  -- The entry for (regex, opts) past the memo: checks the arguments as the classic functions
  -- do. Returns the entry, or nil and the compile error.
  local function compile(regex, opts, opt_idx, fn)
    if type(regex) ~= "string" then type_error(2, fn, "string", regex) end
    if opts == nil then opts = ""
    elseif type(opts) ~= "string" then type_error(opt_idx, fn, "string", opts) end
    local rc = re_get(st, regex, #regex, opts, #opts, cache_max(), outp, errbuf)
    if rc <= -2 then
      error('unknown flag "' .. sub(opts, -1 - rc, -1 - rc) .. '" (flags "' .. opts .. '")', 0)
    end
    if rc == -1 then return nil, ffi.string(errbuf) end
    if rc == 0 then return entry(ffi.gc(outp[0], re_free), false) end
    local e = entry(outp[0], true)
    local m = memo[opts]
    if not m then
      m = {}
      memo[opts] = m
    end
    m[regex] = e
    return e
  end

  local function release(e)
    if not e.cached and e.re then
      re_free(ffi.gc(e.re, nil))
      e.re = nil
    end
  end

  local function exec_error(rc)
    if rc == 0 then return "capture size too small" end
    return "pcre_exec() failed: " .. rc
  end

  -- ctx.pos (1-based) as the offset to start at, as lua_re.c's ctx_pos reads it.
  local function ctx_pos(ctx)
    local pos = ctx.pos
    if type(pos) == "number" then
      if pos > INT_MAX then return INT_MAX end
      if pos >= 1 then return floor(pos - 1) end
      return 0
    end
    if pos then compare_error(pos) end
    return 0
  end

  local function collect(e, rc, subj, res)
    local ov, ncap = e.ov, e.ncap
    if not res then res = new_tab(ncap, e.nn) end
    for i = 0, ncap do
      local from = i < rc and tonumber(ov[2 * i]) or -1
      if from >= 0 then rawset(res, i, sub(subj, from + 1, tonumber(ov[2 * i + 1])))
      else rawset(res, i, false) end
    end
    local names = e.names
    if names then
      local dup = e.dup
      for k = 1, 2 * e.nn, 2 do
        local name, cap = names[k + 1], rawget(res, names[k])
        if not dup then
          res[name] = cap
        elseif cap then
          local old = res[name]
          if type(old) == "table" then rawset(old, #old + 1, cap)
          else res[name] = { cap } end
        end
      end
    end
    return res
  end

  local function re_match(subj, regex, opts, ctx, res)
    if not use_ffi then return c_match(subj, regex, opts, ctx, res) end
    if type(subj) ~= "string" then subj = tostring(subj) end
    if ctx and type(ctx) ~= "table" then type_error(4, "match", "table", ctx) end
    if res and type(res) ~= "table" then type_error(5, "match", "table", res) end
    local m = memo[opts]
    local e = m and m[regex]
    if not e then
      local err
      e, err = compile(regex, opts, 3, "match")
      if not e then return nil, err end
    end
    local rc = exec(e, subj, #subj, ctx and ctx_pos(ctx) or 0)
    if rc <= 0 then
      release(e)
      if rc == -1 then return nil end
      return nil, exec_error(rc)
    end
    if ctx then ctx.pos = tonumber(e.ov[1]) + 1 end
    res = collect(e, rc, subj, res or nil)
    release(e)
    return res
  end

  local function re_find(subj, regex, opts, ctx, nth)
    if not use_ffi then return c_find(subj, regex, opts, ctx, nth) end
    if type(subj) ~= "string" then subj = tostring(subj) end
    if ctx and type(ctx) ~= "table" then type_error(4, "find", "table", ctx) end
    local n = 0
    if nth then
      if type(nth) ~= "number" then compare_error(nth) end
      n = nth
    end
    local m = memo[opts]
    local e = m and m[regex]
    if not e then
      local err
      e, err = compile(regex, opts, 3, "find")
      if not e then return nil, nil, err end
    end
    local rc = exec(e, subj, #subj, ctx and ctx_pos(ctx) or 0)
    if rc <= 0 then
      release(e)
      if rc == -1 then return nil end
      return nil, nil, exec_error(rc)
    end
    local ov = e.ov
    if ctx then ctx.pos = tonumber(ov[1]) + 1 end
    -- lua-resty-core indexes its ovector with nth * 2, a fraction included
    if not (n >= 0) then n = 0 end
    local ncap = e.ncap
    if n > ncap then
      release(e)
      return nil, nil, "nth out of bound"
    end
    local from, to = -1, -1
    if n < rc then
      local fi = floor(n * 2)
      if fi + 1 < 2 * rc then from, to = tonumber(ov[fi]), tonumber(ov[fi + 1]) end
    end
    release(e)
    if from < 0 or to < 0 then return nil, nil end
    return from + 1, to
  end

  local function re_gmatch(subj, regex, opts)
    if not use_ffi then return c_gmatch(subj, regex, opts) end
    if type(subj) ~= "string" then subj = tostring(subj) end
    local m = memo[opts]
    local e = m and m[regex]
    if not e then
      local err
      e, err = compile(regex, opts, 3, "gmatch")
      if not e then return nil, err end
    end
    local len, pos, done = #subj, 0, false
    return function()
      if done then return nil end
      local rc = exec(e, subj, len, pos)
      if rc <= 0 then
        done = true
        release(e)
        if rc == -1 then return nil end
        return nil, exec_error(rc)
      end
      local ov = e.ov
      local nxt = tonumber(ov[1])
      if nxt == tonumber(ov[0]) then
        nxt = nxt + 1
        if nxt > len then done = true end
      end
      pos = nxt
      local res = collect(e, rc, subj)
      if done then release(e) end
      return res
    end
  end

  -- A checked template ($$, $N, ${N}) as pieces: strings, and group numbers.
  local function parse_template(t)
    local p, n, i, len = {}, 0, 1, #t
    while i <= len do
      local j = find(t, "$", i, true)
      if not j then
        n = n + 1
        p[n] = sub(t, i)
        break
      end
      if j > i then
        n = n + 1
        p[n] = sub(t, i, j - 1)
      end
      n = n + 1
      if byte(t, j + 1) == 36 then -- $$
        p[n] = "$"
        i = j + 2
      else
        local bracket = byte(t, j + 1) == 123 -- ${N}
        local s = bracket and j + 2 or j + 1
        local digits = match(t, "^%d+", s)
        p[n] = tonumber(digits)
        i = s + #digits + (bracket and 1 or 0)
      end
    end
    return p, n
  end

  local function sub_helper(subj, regex, replace, opts, global, fn)
    if type(subj) ~= "string" then subj = tostring(subj) end
    local func = type(replace) == "function"
    local t
    if not func then
      t = replace
      if type(t) ~= "string" then t = tostring(t) end
    end
    local m = memo[opts]
    local e = m and m[regex]
    if not e then
      local err
      e, err = compile(regex, opts, 4, fn)
      if not e then return nil, nil, err end
    end
    local pieces, np
    if not func then
      if template_check(t, #t) < 0 then
        release(e)
        return nil, nil, "failed to compile the replacement template"
      end
      pieces, np = parse_template(t)
    end
    local out, no = {}, 0
    local len, pos, cp, count = #subj, 0, 0, 0
    while true do
      local rc = exec(e, subj, len, pos)
      if rc == -1 then break end
      if rc <= 0 then
        release(e)
        return nil, nil, exec_error(rc)
      end
      count = count + 1
      local ov = e.ov
      -- A replacement function may use this pattern again, which reuses its ovector: what
      -- is needed afterwards is read first.
      local m0, m1 = tonumber(ov[0]), tonumber(ov[1])
      no = no + 1
      out[no] = sub(subj, cp + 1, m0)
      if func then
        no = no + 1
        out[no] = tostring(replace(collect(e, rc, subj)))
      else
        for k = 1, np do
          local x = pieces[k]
          if type(x) == "string" then
            no = no + 1
            out[no] = x
          elseif x < rc then
            local from = tonumber(ov[2 * x])
            if from >= 0 then
              no = no + 1
              out[no] = sub(subj, from + 1, tonumber(ov[2 * x + 1]))
            end
          end
        end
      end
      cp, pos = m1, m1
      if pos == m0 then
        pos = pos + 1
        if pos > len then break end
      end
      if not global then break end
    end
    release(e)
    if count == 0 then return subj, 0 end
    out[no + 1] = sub(subj, cp + 1, len)
    return concat(out), count
  end

  -- A replacement function always runs from here, in Lua, so that it may wait (mg.sleep, a
  -- cosocket) as under lua-resty-core: the classic functions would call it from C.
  local function re_sub(subj, regex, replace, opts)
    if not use_ffi and (not have_ffi or type(replace) ~= "function") then
      return c_sub(subj, regex, replace, opts)
    end
    return sub_helper(subj, regex, replace, opts, false, "sub")
  end

  local function re_gsub(subj, regex, replace, opts)
    if not use_ffi and (not have_ffi or type(replace) ~= "function") then
      return c_gsub(subj, regex, replace, opts)
    end
    return sub_helper(subj, regex, replace, opts, true, "gsub")
  end

  -- _impl(): which way this state runs, "ffi" or "c"; _impl("ffi" | "c") forces one (kept
  -- across the worker's start), _impl("auto") goes back to the JIT's choice. For tests and
  -- bench/re_loop.py.
  local function impl(which)
    if which ~= nil then
      if which ~= "ffi" and which ~= "c" and which ~= "auto" then
        error("mg.re._impl: \"ffi\", \"c\" or \"auto\" expected, got " .. tostring(which), 2)
      end
      if which == "ffi" and not have_ffi then
        error("mg.re._impl: this program does not export the mg_re_ffi_* functions to the FFI", 2)
      end
      forced = which ~= "auto" and which or nil
      chosen()
    end
    return use_ffi and "ffi" or "c"
  end

  -- mg.re's fields follow the choice: a function read from it while the JIT is off is the
  -- classic C function itself, without the Lua call in front (sub and gsub keep theirs, for a
  -- replacement function). A function read before (in init.lua, which runs with the JIT on) is
  -- the Lua one, which asks at each call.
  local re = { _impl = impl, sub = re_sub, gsub = re_gsub }
  local function choose_fields()
    choose()
    if use_ffi then
      re.match, re.find, re.gmatch = re_match, re_find, re_gmatch
    else
      re.match, re.find, re.gmatch = c_match, c_find, c_gmatch
    end
    if not have_ffi then re.sub, re.gsub = c_sub, c_gsub end
  end
  chosen = choose_fields
  choose_fields()
  return re, choose_fields
end
