-- _import_apache: `moongate import-apache FILE` (docs/migrating-from-apache.md): an Apache
-- httpd configuration's mod_proxy / mod_proxy_scgi / mod_proxy_balancer parts as an init.lua a
-- person would keep editing.
--
-- The command joins three pieces, each of its own file, and owns the one pass between the
-- last two:
--   the reader (lua/_apache_reader.lua)         the configuration into a tree of directives
--                                               and sections, as httpd reads it;
--   the translation (lua/_apache_translate.lua) the directive table: each directive of the
--                                               tree into the translation's state (scopes,
--                                               routes, balancers, settings);
--   the model (this file)                       what only the whole configuration decides:
--                                               which routes Apache could reach, what applies
--                                               to each, which balancers have no members;
--   the output (lua/_apache_output.lua)         the model as init.lua text, checked before it
--                                               is printed; it owns lit(), num() and note(),
--                                               the only ways configuration text reaches it.
--
-- run(path, sys) writes the init.lua with sys.out and returns the exit status: 0 when
-- everything that changes request handling was translated and the output passes moongate's
-- own checks (those of `moongate -t`), 3 when something was not or the output needs a hand
-- (each such directive is kept as a `-- not translated:` comment and named on stderr with
-- file:line), 1 on a syntax or read error (file:line on stderr, nothing on stdout), or when
-- the output would do more than configure moongate (a bug of the importer; nothing printed).
-- directives() lists the translation's directive table, for tests.
--
-- The C side (import_apache.c) passes `sys` with glob(pattern) -> sorted list, isdir(path),
-- exists(path), read(path, limit) -> text | nil, why | false (over the limit; a FIFO, device
-- or socket is refused without being read), lookup("user"|"group", name), re (mg.re, to check
-- the regular expressions the translation hands on) and
-- out(text) / err(text), the two output streams.
local M = {}

local reader = require "_apache_reader"
local translate = require "_apache_translate"
local output = require "_apache_output"
local errors = require "_apache_errors"

local fmt = string.format
local unpack = table.unpack or unpack

M.directives = translate.directives

-- ---- the model --------------------------------------------------------------------------------
--
-- model(t) turns the translation t (lua/_apache_translate.lua describes it) into the model
-- that lua/_apache_output.lua describes and writes.

-- A <Location> or <LocationMatch> that carries something.
local function carries(l)
  return next(l.opts) or #l.env > 0 or #l.setenvif > 0 or l.deny or next(l.errdocs or {})
end

-- A route whose match is a regular expression (ProxyPassMatch, or a prefix route narrowed to
-- a <LocationMatch>).
local function is_re(route) return route.path:sub(1, 1) == "~" end

-- The chain of scopes that apply to a route, outermost first: main, virtual host, and the
-- <Location> sections (of both) whose path covers the route's path. A regex route may serve
-- any path: a <Location> other than "/" that carries something cannot apply to part of it,
-- and is named (once per route). The <LocationMatch> a narrowed route stands for comes last.
local function route_scopes(t, route)
  local chain = { t.main }
  if route.scope.kind == "virtualhost" then chain[#chain + 1] = route.scope end
  local locs = {}
  local path = route.sub_of and route.sub_of.path or route.path
  for _, s in ipairs(chain) do
    for _, l in ipairs(s.locations) do
      if is_re(route) and not route.sub_of then
        if l.path == "/" then locs[#locs + 1] = l
        elseif carries(l) then
          t:untranslated(l.node, "its directives cannot apply to part of the requests of the regular-expression route "
            .. route.src .. "; test req.uri in that route's access hook")
        end
      elseif path:sub(1, #l.path) == l.path then locs[#locs + 1] = l end
    end
  end
  table.sort(locs, function(x, y) return x.order < y.order end)
  for _, l in ipairs(locs) do chain[#chain + 1] = l end
  if route.lm then chain[#chain + 1] = route.lm end
  return chain
end

-- The <LocationMatch> sections that may apply to a route's requests, in the order Apache
-- merges them: the main server's and its virtual host's.
local function route_locmatches(t, route)
  local out = {}
  for _, l in ipairs(t.main.locmatches) do out[#out + 1] = l end
  if route.scope.kind == "virtualhost" then
    for _, l in ipairs(route.scope.locmatches) do out[#out + 1] = l end
  end
  table.sort(out, function(x, y) return x.order < y.order end)
  return out
end

-- The literal start of an anchored regex ("^/api/v" of "^/api/v(\\d+)/"), or nil: what every
-- path it matches starts with. Two regexes (or a regex and a prefix) whose literal starts
-- differ before either ends match no path in common.
local function literal_head(re)
  if re:sub(1, 1) ~= "^" then return nil end
  local head = re:match("^%^([%w/_%-]*)")
  -- A character followed by a quantifier or an alternation is not certain.
  local after = re:sub(#head + 2, #head + 2)
  if after:match("[%?%*{]") then head = head:sub(1, -2) end
  if after == "|" or re:find("|", 1, true) then return nil end
  return head
end

local function disjoint(a, b)
  return a ~= nil and b ~= nil and a:sub(1, #b) ~= b and b:sub(1, #a) ~= a
end

-- Whether a <LocationMatch> may apply to a route's requests (nothing proves the contrary).
local function may_overlap(lm, route)
  local head = literal_head(lm.regex)
  if route.regex then return not disjoint(head, literal_head(route.regex)) end
  local p = (route.sub_of or route).path
  if is_re(route) and not route.sub_of then return true end
  return not disjoint(head, p)
end

-- PCRE's named groups of `re`: Apache sets MATCH_NAME (upper case) from each that took part.
local function group_names(re)
  local names = {}
  for n in re:gmatch("%(%?P?<([%a_][%w_]*)>") do names[#names + 1] = n end
  for n in re:gmatch("%(%?'([%a_][%w_]*)'") do names[#names + 1] = n end
  return names
end

-- The access-hook step of a <LocationMatch> for a route: its MATCH_ variables, SetEnv and
-- SetEnvIf, and Require all denied, when the decoded path matches; nil when it has none.
local function locmatch_step(t, lm)
  local names = group_names(lm.regex)
  local rules = {}
  for _, r in ipairs(lm.setenvif) do if not r.pathinfo then rules[#rules + 1] = r end end
  if #names == 0 and #lm.env == 0 and #rules == 0 and not lm.deny then return nil end
  return { kind = "locmatch", re = lm.regex, src = t:where(lm.node), names = names, env = lm.env, rules = rules, deny = lm.deny }
end

-- ProxySCGISendfile: Apache sends any file the server can read. The importer cannot know
-- where the application's files are, and "/" would let a backend (or whoever controls its
-- X-Sendfile header) send /etc/shadow; so the route gets a commented-out sendfile_roots
-- line to fill in (an option with fill_in), the output does not pass `moongate -t` until it
-- is ("sendfile is on but sendfile_roots is not set"), and the directive is named on stderr
-- (exit 3), once however many routes it applies to.
local SENDFILE_WHY = "name the folders the backend may send files from in sendfile_roots and uncomment it"
  .. " (Apache sends any file the server can read; moongate refuses to start without the roots)"

-- A route of the model: `route` with the options, environment and access rules of its scopes,
-- for each host name it answers. `named` holds the ProxySCGISendfile nodes already named.
local function route_model(t, route, named)
  local opts, okeys, env, envkeys, sifs, deny = {}, {}, {}, {}, {}, nil
  local function set(k, v)
    if not opts[k] then okeys[#okeys + 1] = k end
    opts[k] = v
  end
  for k, v in pairs(route.opts) do set(k, v) end
  for _, s in ipairs(route_scopes(t, route)) do
    for _, k in ipairs({ "internal_redirect", "sendfile", "pathinfo", "client_max_body_size", "intercept_errors" }) do
      if s.opts[k] then set(k, s.opts[k]) end
    end
    if s.kind ~= "locationmatch" then
      for _, e in ipairs(s.env) do
        if env[e.name] == nil then envkeys[#envkeys + 1] = e.name end
        env[e.name] = e
      end
    end
    for _, r in ipairs(s.setenvif) do
      if r.pathinfo then set("pathinfo", { value = "true", src = r.src })
      elseif s ~= t.main and s.kind ~= "locationmatch" then sifs[#sifs + 1] = { kind = "setenvif", rule = r } end
    end
    if s.deny and s.kind ~= "locationmatch" then deny = s.deny end
  end
  -- <LocationMatch> sections: what they set is tested in the access hook, request by request.
  for _, lm in ipairs(route_locmatches(t, route)) do
    local step = (lm == route.lm or may_overlap(lm, route)) and locmatch_step(t, lm)
    if step then sifs[#sifs + 1] = step end
  end
  -- proxy-scgi-pathinfo on a ProxyPassMatch route: Apache's PATH_INFO is the path of the
  -- backend URL once the match fills it in, so it is computed in the access hook.
  if route.regex and not route.exclusion and (opts.pathinfo or t.uses_pathinfo) then
    if route.bname then
      -- Only when proxy-scgi-pathinfo is set for the route itself; set by a SetEnvIf rule, a
      -- balancer route gets moongate's split (docs/migrating-from-apache.md says so).
      if opts.pathinfo then
        t:untranslated(route.node, "proxy-scgi-pathinfo with a balancer:// ProxyPassMatch: Apache's PATH_INFO then follows the member chosen")
      end
    else
      local expr, changes = translate.template_expr(route.url_path)
      if not changes then expr = expr .. " .. uri" end
      sifs[#sifs + 1] = { kind = "pathinfo", re = route.regex, expr = expr, always = opts.pathinfo ~= nil, src = route.src }
      t.pathinfo_helper = true
    end
    opts.pathinfo = nil
    for i, k in ipairs(okeys) do if k == "pathinfo" then table.remove(okeys, i) break end end
  end
  -- ErrorDocument: the route's merged table when it is not the main server's (mg.set's).
  local chain = route_scopes(t, route)
  local merged = errors.merge(chain)
  if not errors.same(merged, errors.merge({ t.main })) then
    local value, src = errors.source(merged)
    set("error_pages", { value = value, src = src or route.src })
  end
  table.sort(okeys)
  local m = { path = route.path, target = route.target, src = route.src, notes = route.notes, hosts = { false },
              opts = {}, env = {}, access = sifs, deny = deny, exclusion = route.exclusion }
  for _, k in ipairs(okeys) do
    local o = opts[k]
    local fill_in = k == "sendfile" and o.value ~= "false"
    m.opts[#m.opts + 1] = { key = k, value = o.value, src = o.src, fill_in = fill_in }
    if fill_in and o.node and not named[o.node] then
      named[o.node] = true
      t:untranslated(o.node, SENDFILE_WHY, "to finish by hand")
    end
  end
  for _, name in ipairs(envkeys) do m.env[#m.env + 1] = env[name] end
  local names = route.scope.kind == "virtualhost" and route.scope.names or {}
  if #names > 0 then
    m.hosts = {}
    for _, h in ipairs(names) do m.hosts[#m.hosts + 1] = h end
    -- The first virtual host answers requests for any other host name.
    if route.scope.index == 1 then m.hosts[#m.hosts + 1] = false end
  end
  return m
end

-- Routes that an earlier, shorter one covers: Apache takes the first ProxyPass that matches,
-- moongate the longest prefix, so such a route was unreachable in Apache and is left out.
-- A route's path is looked up by its prefixes that end at a segment boundary, so this is
-- linear in the routes (not quadratic: a configuration may hold 100,000 of them).
local function split_shadowed(all)
  local routes, shadowed, seen = {}, {}, {}
  for _, r in ipairs(all) do
    local by_scope = seen[r.scope]
    if not by_scope then by_scope = {}; seen[r.scope] = by_scope end
    local hidden = by_scope[r.path]
    local i = 0
    while true do
      i = r.path:find("/", i + 1, true)
      if not i then break end
      -- A prefix ending in "/" at i, and one followed by "/" at i.
      for _, p in ipairs({ r.path:sub(1, i), r.path:sub(1, i - 1) }) do
        local e = p ~= "" and by_scope[p]
        if e and (not hidden or e.order < hidden.order) then hidden = e end
      end
    end
    if hidden then shadowed[#shadowed + 1] = { r = r, by = hidden }
    else
      routes[#routes + 1] = r
      by_scope[r.path] = r
    end
  end
  return routes, shadowed
end

local function covered_by_route(path, routes)
  for _, r in ipairs(routes) do if path:sub(1, #r.path) == r.path then return true end end
  return false
end

-- A <Location> deeper than its route, carrying options of its own, becomes a route of its
-- own; one with no route under its path changes nothing, and says so (unless a regex route
-- may serve it: then route_scopes names it).
local function location_routes(t, routes, has_re)
  local extra = {}
  for _, scope in ipairs({ t.main, unpack(t.vhosts) }) do
    for _, l in ipairs(scope.locations) do
      local has = carries(l)
      local exact
      for _, r in ipairs(routes) do
        if r.path == l.path then exact = true end
      end
      if has and not exact then
        local parent
        for _, r in ipairs(routes) do
          if (r.scope == scope or r.scope == t.main) and l.path:sub(1, #r.path) == r.path and (not parent or #r.path > #parent.path) then parent = r end
        end
        if parent then
          extra[#extra + 1] = { path = l.path, target = parent.target, src = t:where(l.node), scope = parent.scope,
            opts = parent.opts, notes = { "the options of this <Location> below " .. parent.path .. " make it a route of its own" },
            order = parent.order + 0.5 }
        elseif not covered_by_route(l.path, routes) and not has_re then
          t.out_comments[#t.out_comments + 1] = t:where(l.node) .. " -- no proxied route under this path: its directives change nothing here"
        end
      end
    end
  end
  return extra
end

-- A PCRE matching what the prefix route `path` matches, from the start of the path: under it
-- when it ends in "/", else itself and under it at a segment boundary. The part it consumes
-- is the path without the trailing slash, as moongate's pathinfo splits a prefix route.
local function prefix_re(path)
  local function esc(p) return (p:gsub("[^%w/\128-\255]", "\\%0")) end
  if path:sub(-1) == "/" then return esc(path:sub(1, -2)) .. "(?=/)" end
  return esc(path) .. "(?=/|$)"
end

-- Apache tries ProxyPass and ProxyPassMatch in the order written (a ProxyPass inside a
-- <Location> first); moongate tries regex routes before prefix routes. So a ProxyPassMatch
-- route leaves out the paths of the prefix routes Apache tries before it: "~RE" becomes
-- "~^(?!P1|P2...).*?\K(?:RE)", which matches where RE does (\K keeps the match RE's).
local function regex_path(r, routes)
  local before = {}
  for _, p in ipairs(routes) do
    if p.scope == r.scope and (p.from_location or p.order < r.order) then before[#before + 1] = prefix_re(p.path) end
  end
  if #before == 0 then return r.path end
  return "~^(?!" .. table.concat(before, "|") .. ").*?\\K(?:" .. r.regex .. ")"
end

-- A <LocationMatch> carrying route options (ProxySCGI*, LimitRequestBody, pathinfo) over a
-- prefix route: a regex route of its own, "~^(?=.*?(?:RE))PREFIX", with the parent's target,
-- tried after the ProxyPassMatch routes (which leave the prefix routes before them alone) and
-- longest prefix first. Over a regex route it has no translation.
local function locmatch_routes(t, routes, regex)
  local subs = {}
  for _, p in ipairs(routes) do
    local first
    for _, lm in ipairs(route_locmatches(t, p)) do
      if may_overlap(lm, p) and (next(lm.opts) or (function() for _, r in ipairs(lm.setenvif) do if r.pathinfo then return true end end end)()) then
        if not first then
          first = lm
          subs[#subs + 1] = { path = "~^(?=.*?(?:" .. lm.regex .. "))" .. prefix_re(p.path), target = p.target, src = t:where(lm.node),
            scope = p.scope, opts = p.opts, bname = p.bname, order = p.order, sub_of = p, lm = lm,
            notes = { "the route options of this <LocationMatch> narrow " .. p.src .. " to the paths it matches" } }
        else
          t:untranslated(lm.node, "a second <LocationMatch> with route options over " .. p.src .. " (" .. t:where(first.node) .. " comes first)")
        end
      end
    end
  end
  table.sort(subs, function(x, y)
    if #x.sub_of.path ~= #y.sub_of.path then return #x.sub_of.path > #y.sub_of.path end
    return x.lm.order < y.lm.order
  end)
  for _, r in ipairs(regex) do
    for _, lm in ipairs(route_locmatches(t, r)) do
      if next(lm.opts) and not r.exclusion and may_overlap(lm, r) then
        t:untranslated(lm.node, "its route options cannot apply to part of the regular-expression route " .. r.src)
      end
    end
  end
  return subs
end

local function model(t)
  local plain, regex = {}, {}
  for _, r in ipairs(t.routes) do
    if is_re(r) then regex[#regex + 1] = r else plain[#plain + 1] = r end
  end
  local routes, shadowed = split_shadowed(plain)
  for _, e in ipairs(location_routes(t, routes, #regex > 0)) do routes[#routes + 1] = e end
  for _, r in ipairs(regex) do r.path = regex_path(r, routes) end
  local subs = locmatch_routes(t, routes, regex)
  for _, r in ipairs(regex) do routes[#routes + 1] = r end
  for _, r in ipairs(subs) do routes[#routes + 1] = r end
  local model_routes, left_out, hooks, named = {}, {}, {}, {}
  for _, r in ipairs(routes) do model_routes[#model_routes + 1] = route_model(t, r, named) end
  for _, s in ipairs(shadowed) do left_out[#left_out + 1] = { src = s.r.src, by = s.by.src } end
  -- Server-wide SetEnvIf: a rewrite hook for every request.
  for _, r in ipairs(t.main.setenvif) do if not r.pathinfo then hooks[#hooks + 1] = r end end
  for _, name in ipairs(t.balancer_order) do
    if #t.balancers[name].members == 0 then
      t.untranslated_n = t.untranslated_n + 1
      t.out_untranslated[#t.out_untranslated + 1] = fmt("not translated: balancer://%s has no members", name)
      t.warn(fmt("balancer://%s has no BalancerMember", name))
    end
  end
  -- A local ErrorDocument URL that no route serves: Apache takes it from the DocumentRoot,
  -- which moongate does not have; the page must get a route.
  local scopes = { t.main }
  for _, v in ipairs(t.vhosts) do scopes[#scopes + 1] = v end
  for i = 1, #scopes do for _, l in ipairs(scopes[i].locations) do scopes[#scopes + 1] = l end end
  for _, s in ipairs(scopes) do
    for _, e in pairs(s.errdocs or {}) do
      local path = e.uri and e.uri:gsub("[?#].*$", "")
      if path and not covered_by_route(path, routes) then
        t:untranslated(e.node, "no route serves " .. path .. " (Apache takes it from the DocumentRoot): add mg.route(PREFIX, { root = DIR }) for it")
      end
    end
  end
  -- The main server's ErrorDocument table: mg.set's error_pages.
  local main_pages, main_src = errors.source(errors.merge({ t.main }))
  if main_pages ~= "false" then
    t.settings.error_pages = { value = main_pages, src = main_src,
      note = "a page that answers 2xx is sent with the error's status (Apache sends a proxied page's own)" }
    t.settings_keys[#t.settings_keys + 1] = "error_pages"
  end
  return {
    root_name = t.root_name, listens = t.listens, settings = t.settings, settings_keys = t.settings_keys,
    balancers = t.balancers, balancer_order = t.balancer_order, routes = model_routes, left_out = left_out,
    hooks = hooks, comments = t.out_comments, untranslated = t.out_untranslated, pathinfo_helper = t.pathinfo_helper,
  }
end

-- ---- the command ------------------------------------------------------------------------------

-- Runs f(...) and returns true; on a SyntaxError, names it on stderr and returns false. Any
-- other error is a bug and goes on up.
local function syntax_checked(warn, f, ...)
  local ok, err = pcall(f, ...)
  if ok then return true end
  local msg = reader.syntax_message(err)
  if not msg then error(err, 0) end
  warn(msg)
  return false
end

function M.run(path, sys)
  translate.re = sys.re
  local function warn(msg) sys.err("moongate import-apache: " .. output.note(msg) .. "\n") end
  local tree, server_root, t
  if not syntax_checked(warn, function() tree, server_root = reader.read(path, sys) end) then return 1 end
  if not syntax_checked(warn, function() t = translate.translate(tree, path, reader.dirname(path), server_root, warn) end) then
    return 1
  end
  local text, where = output.write(model(t))
  local kind, why = output.check(text, sys)
  if kind == "code" then
    warn("internal error: the output would do more than configure moongate (" .. why .. "); nothing is printed")
    return 1
  end
  sys.out(text)
  if kind == "fails" then
    -- mg.set names the setting it refuses; other calls are found by their line.
    local n = tonumber(why:match("^init%.lua:(%d+):"))
    local key = why:match("^init%.lua:%d+: ([%w_]+):")
    local src = key and t.settings[key] and t.settings[key].src or n and where(n)
    warn(fmt("%sthe output does not pass `moongate -t` as it stands: %s", src and ("from " .. src .. ": ") or "", why))
    return 3
  end
  return t.untranslated_n > 0 and 3 or 0
end

return M
