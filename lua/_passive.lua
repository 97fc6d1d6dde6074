-- _passive: checks a balancer's `passive` and `retries` tables (SPEC 20) for moongate.lua and
-- returns them normalised (times in milliseconds, percentages as numbers), with init.lua
-- file:line errors. Private: mg.balancer calls it.
local M = {}

local function fail(at, fmt, ...)
  error(at .. ": " .. string.format(fmt, ...), 0)
end

local function whole(at, key, v, lo, hi)
  if type(v) ~= "number" or v ~= math.floor(v) or v < lo or v > hi then
    fail(at, "%s: expected a whole number from %d to %d, got %s", key, lo, hi, tostring(v))
  end
  return v
end

-- "50%" -> 50, nil; a number n -> nil, n (a count of members).
local function share(at, key, v)
  if type(v) == "number" then return nil, whole(at, key, v, 0, 100000) end
  local n = type(v) == "string" and v:match("^%s*(%d+)%%%s*$")
  if not n or tonumber(n) > 100 then fail(at, "%s: expected a percentage like \"50%%\" (0%% to 100%%) or a count of members, got %s", key, tostring(v)) end
  return tonumber(n), nil
end

local function statuses(at, key, list)
  -- An empty list is allowed: then only timeouts count (Apache's failontimeout alone).
  if type(list) ~= "table" then fail(at, "%s: expected a list of statuses like { 502, 503, 504 }, got %s", key, type(list)) end
  if #list > 16 then fail(at, "%s: at most 16 statuses", key) end
  local out = {}
  for i, s in ipairs(list) do
    whole(at, string.format("%s[%d]", key, i), tonumber(s) or s, 400, 599)
    out[i] = tonumber(s)
  end
  return out
end

local passive_keys = { fails = true, window = true, statuses = true, timeouts = true, eject = true, max_ejected = true }

-- spec.passive: true (every default) or a table.
function M.passive(at, v, parse_time)
  if v == true then v = {} end
  if type(v) ~= "table" then fail(at, "passive: expected a table like { fails = 5, eject = \"30s\" } or true, got %s", type(v)) end
  for k in pairs(v) do if not passive_keys[k] then fail(at, "passive: unknown option %q", tostring(k)) end end
  local p = {
    fails = whole(at, "passive.fails", v.fails or 5, 1, 1000),
    window = parse_time(at, "passive.window", v.window or 10),
    statuses = statuses(at, "passive.statuses", v.statuses or { 502, 503, 504 }),
    eject = parse_time(at, "passive.eject", v.eject or 30),
  }
  if v.timeouts ~= nil and type(v.timeouts) ~= "boolean" then fail(at, "passive.timeouts: expected true or false, got %s", type(v.timeouts)) end
  p.timeouts = v.timeouts ~= false
  if p.window == 0 then fail(at, "passive.window: must be longer than 0") end
  if p.eject == 0 then fail(at, "passive.eject: must be longer than 0") end
  -- Ten times the longest ejection must still fit a timer (24.8 days).
  if p.eject * 10 > 2147483647 then fail(at, "passive.eject: at most 2.4 days (ten times it must fit a timer)") end
  p.max_ejected_pct, p.max_ejected_count = share(at, "passive.max_ejected", v.max_ejected or "50%")
  return p
end

local retries_keys = { on = true, tries = true, methods = true, budget = true }

function M.retries(at, v)
  if v == true then v = {} end
  if type(v) ~= "table" then fail(at, "retries: expected a table like { tries = 2 } or true, got %s", type(v)) end
  for k in pairs(v) do if not retries_keys[k] then fail(at, "retries: unknown option %q", tostring(k)) end end
  local r = { statuses = {}, tries = whole(at, "retries.tries", v.tries or 2, 1, 100), methods = {} }
  local on = v.on or { "connect", "502", "503", "504", "timeout" }
  if type(on) ~= "table" or #on == 0 then fail(at, "retries.on: expected a non-empty list like { \"connect\", \"503\", \"timeout\" }") end
  for i, c in ipairs(on) do
    local key = string.format("retries.on[%d]", i)
    if c == "connect" then r.connect = true
    elseif c == "timeout" then r.timeout = true
    else
      local n = tonumber(c)
      if not n or n ~= math.floor(n) or n < 400 or n > 599 then
        fail(at, "%s: expected \"connect\", \"timeout\" or a status from 400 to 599, got %s", key, tostring(c))
      end
      if #r.statuses == 16 then fail(at, "retries.on: at most 16 statuses") end
      r.statuses[#r.statuses + 1] = n
    end
  end
  local methods = v.methods or { "GET", "HEAD", "OPTIONS" }
  if type(methods) ~= "table" or #methods == 0 then fail(at, "retries.methods: expected a non-empty list like { \"GET\", \"HEAD\" }") end
  if #methods > 16 then fail(at, "retries.methods: at most 16 methods") end
  for i, m in ipairs(methods) do
    if type(m) ~= "string" or not m:match("^[%u]+$") then fail(at, "retries.methods[%d]: expected a method in capitals like \"GET\", got %s", i, tostring(m)) end
    r.methods[i] = m
  end
  local pct = share(at, "retries.budget", v.budget or "20%")
  if not pct then fail(at, "retries.budget: expected a percentage like \"20%%\", got %s", tostring(v.budget)) end
  r.budget = pct
  return r
end

return M
