-- _apache_output: the init.lua text of `moongate import-apache` (docs/migrating-from-apache.md),
-- written from the model that lua/_import_apache.lua builds from the translation, and checked
-- before it is printed.
--
-- What it owns, and promises:
--   * What reaches the output. The output is Lua source made from text an attacker may have
--     written: the configuration and the names of the files it includes. Every piece of such
--     text reaches it through one of three functions -- lit() for a string literal, num() for a
--     number, note() for comment text (and for the text of a message on stderr) -- and nothing
--     else builds code from it. The translation (lua/_apache_translate.lua), which puts values
--     in the model as Lua source, makes them with these same functions.
--   * The layout. write(model) returns the init.lua a person would keep editing: grouped
--     (listeners, settings, balancers, routes, hooks, then what had no translation), each line
--     commented with the directive it comes from and its file:line; and where(n), the directive
--     that line n of it comes from. It decides nothing about what the configuration means.
--   * The check. check(text, sys) runs the text where only `require "moongate"` is visible,
--     then through moongate's own checks (those of `moongate -t`).
--
-- The model (all text in it is raw, for lit() and note(), but where it says Lua source):
--   root_name      the main file's name
--   listens        { addr =, src = }
--   settings_keys  the mg.set keys in order; settings[key] = { value (Lua source), src, note }
--   balancer_order the balancer names in order; balancers[name] = { src, notes = { text },
--                  method, sticky, maxattempts = { value, src, note }, members = { url,
--                  opts = { Lua source "key = value" }, notes = { parameter names }, src } }
--   routes         { path, target, src, notes, hosts = { host name | false (any host) },
--                  opts = { key, value (Lua source), src, fill_in (sendfile roots to name) },
--                  env = { name, value | false (unset), src }, access = { SetEnvIf rule },
--                  deny (src of a Require all denied) }
--   left_out       { src, by }: routes an earlier one hides
--   hooks          the server-wide SetEnvIf rules: { subject (Lua source), pattern, sets =
--                  { name, value | nil (unset) }, src }
--   comments, untranslated   texts for the two closing comment blocks
-- A `src` is the directive as it reads and its file:line (comment text).
local O = {}

local fmt = string.format

-- ---- what reaches the output ------------------------------------------------------------------
--
-- lit(s) is a Lua string literal holding exactly the bytes of s; note(s) is s as comment text;
-- num(n) is a finite number as Lua source. Their results are printable ASCII (0x20-0x7e) only:
-- every other byte is written \ddd -- CR and LF, which would end a comment; NUL and the other
-- control bytes; and bytes of 0x80 and above, among which are the bidirectional controls that
-- can make a reader see a line other than the one Lua runs. In a literal `"` and `\` are
-- escaped as well, so a literal ends only where lit() ends it.

local function esc(c) return fmt("\\%03d", c:byte()) end

function O.lit(s)
  assert(type(s) == "string", "lit() takes a string")
  local body = s:gsub('[%c"\\\128-\255]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    return esc(c)
  end)
  return '"' .. body .. '"'
end

function O.note(s)
  return (tostring(s):gsub("[%c\128-\255]", esc))
end

function O.num(n)
  assert(type(n) == "number" and n == n and n ~= math.huge and n ~= -math.huge, "num() takes a finite number")
  if n == math.floor(n) and n > -2 ^ 53 and n < 2 ^ 53 then return fmt("%d", n) end
  return fmt("%.17g", n)
end

local lit, note, num = O.lit, O.note, O.num

-- A line of output: CODE (the importer's own words, lit() and num() results) and a comment.
local function code_line(code, comment)
  if comment then return code .. "  -- " .. note(comment) end
  return code
end

local function comment_line(indent, text) return indent .. "-- " .. note(text) end

-- ---- writing ------------------------------------------------------------------------------------

-- ProxySCGISendfile: the importer cannot know where the application's files are, so a route
-- that sends files gets a commented-out sendfile_roots line to fill in (the translation names
-- the directive on stderr; moongate refuses to start until the roots are set).
local SENDFILE_PLACEHOLDER = '  -- sendfile_roots = { "/FILL/IN/the/folder/of/the/files" },'

-- A SetEnvIf rule: with a Lua pattern, string.find; with a regex (r.re), mg.re.match, whose
-- groups the values' $1.. read (s.expr, Lua source).
local function setenvif_lines(lines, r, indent)
  lines[#lines + 1] = comment_line(indent, r.src)
  local body = {}
  for _, s in ipairs(r.sets) do
    local v = s.value and (r.re and s.expr or lit(s.value)) or "false"
    body[#body + 1] = fmt("req.env[%s] = %s", lit(s.name), v)
  end
  if r.re then
    lines[#lines + 1] = fmt("%sdo local m = mg.re.match(%s, %s, %s) if m then %s end end", indent, r.subject, lit(r.re),
      lit(r.flags), table.concat(body, "; "))
  else
    lines[#lines + 1] = fmt("%sif string.find(%s, %s) then %s end", indent, r.subject, lit(r.pattern), table.concat(body, "; "))
  end
end

-- The path ProxyPassMatch and <LocationMatch> match in Apache: decoded (see
-- lua/_apache_translate.lua, DECODED_PATH).
local DECODED_PATH = 'mg.unescape_uri((req.uri:gsub("%+", "%%2B")))'

-- A <LocationMatch> step of an access hook (lua/_import_apache.lua, locmatch_step).
local function locmatch_lines(lines, st, indent)
  lines[#lines + 1] = comment_line(indent, st.src)
  lines[#lines + 1] = fmt("%sdo", indent)
  lines[#lines + 1] = fmt("%s  local m = mg.re.match(%s, %s, \"jos\")", indent, DECODED_PATH, lit(st.re))
  lines[#lines + 1] = fmt("%s  if m then", indent)
  local inner = indent .. "    "
  for _, n in ipairs(st.names) do
    lines[#lines + 1] = fmt("%sif m[%s] then req.env[%s] = m[%s] end", inner, lit(n), lit("MATCH_" .. n:upper()), lit(n))
  end
  for _, e in ipairs(st.env) do
    lines[#lines + 1] = code_line(fmt("%sreq.env[%s] = %s", inner, lit(e.name), e.value and lit(e.value) or "false"), e.src)
  end
  for _, r in ipairs(st.rules) do setenvif_lines(lines, r, inner) end
  if st.deny then
    lines[#lines + 1] = comment_line(inner, st.deny)
    lines[#lines + 1] = inner .. 'return req:exit(403, "Forbidden\\n")'
  end
  lines[#lines + 1] = fmt("%s  end", indent)
  lines[#lines + 1] = fmt("%send", indent)
end

-- proxy-scgi-pathinfo on a ProxyPassMatch route: Apache's PATH_INFO and SCRIPT_NAME, computed
-- by apache_pathinfo (PATHINFO_HELPER) from the decoded path and the URL's path as the match
-- fills it in (st.expr, Lua source reading `m` and `uri`).
local function pathinfo_lines(lines, st, indent)
  lines[#lines + 1] = comment_line(indent, "proxy-scgi-pathinfo: PATH_INFO is the path of the URL of " .. st.src
    .. " as the match fills it in, SCRIPT_NAME what comes before it in the path (Apache's reading)")
  local inner = indent
  if not st.always then
    lines[#lines + 1] = fmt('%sif req.env["proxy-scgi-pathinfo"] then', indent)
    inner = indent .. "  "
  end
  lines[#lines + 1] = fmt("%slocal uri = %s", inner, DECODED_PATH)
  lines[#lines + 1] = fmt("%slocal m = mg.re.match(uri, %s, \"jos\")", inner, lit(st.re))
  lines[#lines + 1] = fmt('%sif m then req.env["SCRIPT_NAME"], req.env["PATH_INFO"] = apache_pathinfo(uri, %s) end', inner, st.expr)
  if not st.always then lines[#lines + 1] = indent .. "end" end
end

-- Apache's split of a path into SCRIPT_NAME and PATH_INFO when PATH_INFO is a URL's path:
-- the path encoded as mod_proxy encodes a URL path (ap_proxy_canonenc), and SCRIPT_NAME the
-- decoded path up to where PATH_INFO's tail stops matching it, then on to the next "/"
-- (ap_find_path_info). Only string methods: the function reads no global.
local PATHINFO_HELPER = {
  "-- proxy-scgi-pathinfo on ProxyPassMatch routes: Apache's SCRIPT_NAME and PATH_INFO.",
  "local function apache_pathinfo(uri, path)",
  [[  local pi = path:gsub("[^%w/~$!*'(),;:@&=+._-]", function(c) return ("%%%02X"):format(c:byte()) end)]],
  [[  if pi:sub(1, 1) ~= "/" then pi = "/" .. pi end]],
  "  local lu, lp = #uri, #pi",
  "  while true do",
  "    if lu == 0 then lu = -1 break end",
  "    lu = lu - 1",
  "    if lp == 0 then break end",
  "    lp = lp - 1",
  "    local c = uri:byte(lu + 1)",
  "    if c ~= pi:byte(lp + 1) then break end",
  "    if c == 47 then while lu > 0 and uri:byte(lu) == 47 do lu = lu - 1 end end",
  "  end",
  "  if lu < 0 then lu = 0 end",
  "  while lu < #uri and uri:byte(lu + 1) ~= 47 do lu = lu + 1 end",
  "  return uri:sub(1, lu), pi",
  "end",
}

-- One mg.route call: the route `r` for `host` (nil for any host).
local function route_lines(add, r, host)
  local lines = {}
  if host then lines[#lines + 1] = "  host = " .. lit(host) .. "," end
  for _, o in ipairs(r.opts) do
    lines[#lines + 1] = code_line(fmt("  %s = %s,", o.key, o.value), o.src)
    if o.fill_in then
      lines[#lines + 1] = code_line(SENDFILE_PLACEHOLDER, "to fill in: Apache sends any file it can read")
    end
  end
  if #r.env > 0 then
    lines[#lines + 1] = "  env = {"
    for _, e in ipairs(r.env) do
      lines[#lines + 1] = code_line(fmt("    [%s] = %s,", lit(e.name), e.value and lit(e.value) or "false"), e.src)
    end
    lines[#lines + 1] = "  },"
  end
  if #r.access > 0 or r.deny then
    lines[#lines + 1] = "  hooks = {"
    lines[#lines + 1] = "    access = function(req)"
    for _, st in ipairs(r.access) do
      if st.kind == "setenvif" then setenvif_lines(lines, st.rule, "      ")
      elseif st.kind == "locmatch" then locmatch_lines(lines, st, "      ")
      else pathinfo_lines(lines, st, "      ") end
    end
    -- Last: a return ends a Lua block.
    if r.deny then
      lines[#lines + 1] = comment_line("      ", r.deny)
      lines[#lines + 1] = '      return req:exit(403, "Forbidden\\n")'
    end
    lines[#lines + 1] = "    end,"
    lines[#lines + 1] = "  },"
  end
  add(comment_line("", r.src), r.src)
  for _, nte in ipairs(r.notes) do add(comment_line("", "  " .. nte), r.src) end
  if r.exclusion then
    -- ProxyPassMatch RE !: Apache serves such paths itself, from a document root moongate does not have.
    add(fmt('mg.route(%s, function() return 404, "Not Found\\n" end)', lit(r.path)), r.src)
  elseif #lines == 0 then
    add(fmt("mg.route(%s, %s)", lit(r.path), lit(r.target)), r.src)
  else
    add(fmt("mg.route(%s, %s, {", lit(r.path), lit(r.target)), r.src)
    for _, l in ipairs(lines) do add(l, r.src) end
    add("})", r.src)
  end
end

local function balancer_lines(add, name, b)
  local src = b.src or (b.members[1] and b.members[1].src)
  if b.src then add(comment_line("", b.src), src) end
  for _, nte in ipairs(b.notes) do add(comment_line("", nte), src) end
  add(fmt("mg.balancer(%s, {", lit(name)), src)
  if b.method then add(code_line(fmt("  method = %s,", lit(b.method.value)), b.method.src), b.method.src) end
  if b.sticky then
    add(code_line(fmt("  stickysession = %s,", lit(b.sticky.value)), b.sticky.src .. (b.sticky.note and (" -- " .. b.sticky.note) or "")), b.sticky.src)
  end
  if b.maxattempts then
    add(code_line(fmt("  maxattempts = %s,", num(b.maxattempts.value)), b.maxattempts.src .. " -- " .. b.maxattempts.note), b.maxattempts.src)
  end
  if b.passive then
    local p, codes = b.passive, {}
    for i, n in ipairs(p.statuses) do codes[i] = num(n) end
    add(code_line(fmt("  passive = { fails = 1, statuses = { %s }, timeouts = %s, eject = 60, max_ejected = \"100%%\" },",
        table.concat(codes, ", "), p.timeouts and "true" or "false"),
      p.src .. " -- Apache's failonstatus/failontimeout: the member out at the first such answer, for 60 s (Apache's retry); here a repeat within 10 minutes doubles it"), p.src)
  end
  add("  members = {", src)
  for _, m in ipairs(b.members) do
    local o = #m.opts > 0 and (", " .. table.concat(m.opts, ", ")) or ""
    add(code_line(fmt("    { %s%s },", lit(m.url), o),
      m.src .. (#m.notes > 0 and (" -- no counterpart needed: " .. table.concat(m.notes, ", ")) or "")), m.src)
  end
  add("  },", src)
  add("})", src)
end

-- The init.lua text of `model`, and where(n): the src of the directive that line n comes from
-- (the nearest line at or above it that has one), or nil.
function O.write(model)
  local out, srcmap = {}, {}
  local function add(line, src)
    out[#out + 1] = line
    if src then srcmap[#out] = src end
  end
  add(comment_line("", "init.lua imported from " .. model.root_name .. " by `moongate import-apache`."))
  add("-- Each line names the Apache directive it comes from (file:line). See docs/migrating-from-apache.md.")
  add('local mg = require "moongate"')
  add("")
  if model.pathinfo_helper then
    for _, l in ipairs(PATHINFO_HELPER) do add(l) end
    add("")
  end
  if #model.listens > 0 then
    add("-- Listeners")
    for _, l in ipairs(model.listens) do add(code_line(fmt("mg.listen(%s)", lit(l.addr)), l.src), l.src) end
    add("")
  end
  add('-- Apache\'s MPM settings do not carry over: one worker by default, mg.workers("auto") for one per core.')
  add("")
  if #model.settings_keys > 0 then
    add("-- Settings")
    add("mg.set {")
    for _, k in ipairs(model.settings_keys) do
      local s = model.settings[k]
      add(code_line(fmt("  %s = %s,", k, s.value), s.src .. (s.note and (" -- " .. s.note) or "")), s.src)
    end
    add("}")
    add("")
  end
  if not model.settings.client_max_body_size then
    add("-- Apache's default LimitRequestBody is 1 GiB; moongate's client_max_body_size is 1m unless set.")
    add("")
  end
  if #model.balancer_order > 0 then
    add("-- Balancers")
    for _, name in ipairs(model.balancer_order) do balancer_lines(add, name, model.balancers[name]) end
    add("")
  end
  if #model.routes > 0 then add("-- Routes (ProxyPass, ProxyPassMatch: regex routes are tried before prefix routes)") end
  for _, r in ipairs(model.routes) do
    for _, host in ipairs(r.hosts) do route_lines(add, r, host or nil) end
  end
  for _, s in ipairs(model.left_out) do
    add(comment_line("", fmt("left out: %s -- unreachable in Apache, where %s comes first", s.src, s.by)), s.src)
  end
  if #model.routes > 0 then add("") end
  if #model.hooks > 0 then
    local src = model.hooks[1].src
    add("-- Hooks (SetEnvIf)")
    add('mg.on("rewrite", function(req)', src)
    local lines = {}
    for _, r in ipairs(model.hooks) do setenvif_lines(lines, r, "  ") end
    for _, l in ipairs(lines) do add(l, src) end
    add("end)", src)
    add("")
  end
  if #model.comments > 0 then
    add("-- No meaning for a gateway, or moongate's default:")
    for _, c in ipairs(model.comments) do add(comment_line("", c)) end
    add("")
  end
  if #model.untranslated > 0 then
    add("-- Changes request handling and was not translated (also named on stderr):")
    for _, c in ipairs(model.untranslated) do add(comment_line("", c)) end
    add("")
  end
  local function where(n)
    for i = math.min(n, #out), 1, -1 do
      if srcmap[i] then return srcmap[i] end
    end
    return nil
  end
  return table.concat(out, "\n") .. "\n", where
end

-- ---- checking -----------------------------------------------------------------------------------
--
-- The output is run twice, each time in an environment holding only `require`, which gives a
-- moongate module and nothing else: first with a stand-in whose every function accepts
-- anything, so that every statement runs; then as `moongate -t` runs an init.lua, with a
-- fresh copy of the real module, whose checks are -t's. Hooks are not called (they run at
-- request time).

local Trap = {}

local function trap(what) error(setmetatable({ msg = what }, Trap), 0) end

local function run_output(chunk, mg)
  setfenv(chunk, setmetatable({}, {
    __index = function(_, k)
      if k == "require" then
        return function(name)
          if name ~= "moongate" then trap("it requires " .. tostring(name)) end
          return mg
        end
      end
      trap("it reads the global " .. tostring(k))
    end,
    __newindex = function(_, k) trap("it sets the global " .. tostring(k)) end,
  }))
  return pcall(chunk)
end

-- nil when `text` passes; "code", why when it reads or writes any other global or requires
-- any other module (it would run code of its own: a bug of the importer); "fails", message
-- when moongate's checks refuse it. sys.lookup is the user and group lookup of those checks.
function O.check(text, sys)
  local chunk, perr = loadstring(text, "=init.lua")
  if not chunk then return "code", "it does not parse: " .. tostring(perr) end
  local stand_in = setmetatable({}, { __index = function() return function() end end })
  local ok, err = run_output(chunk, stand_in)
  if not ok then return "code", getmetatable(err) == Trap and err.msg or tostring(err) end
  package.loaded.moongate = nil
  local mg = require "moongate"
  mg._lookup = sys.lookup
  ok, err = run_output(chunk, mg)
  if ok and mg._finish then ok, err = pcall(mg._finish) end
  package.loaded.moongate = nil
  if ok then return nil end
  if getmetatable(err) == Trap then return "code", err.msg end
  return "fails", tostring(err)
end

return O
