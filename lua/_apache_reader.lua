-- _apache_reader: an Apache httpd configuration read into a tree, the way httpd reads it
-- (the reader of `moongate import-apache`, lua/_import_apache.lua; docs/migrating-from-apache.md).
--
-- What it owns: logical lines (a backslash as the very last character continues a line on the
-- next; whole-line comments), words (Apache's ap_getword_conf: white space, "..." and '...'
-- quotes), sections nested in sections, and Include/IncludeOptional expanded where they stand
-- (globs, folders read recursively, paths relative to ServerRoot once set, else to the main
-- file's folder). It knows no directive but those two and ServerRoot: what a directive means
-- is the translation's.
--
-- read(path, sys) returns the tree and the last ServerRoot seen (nil when none). A node is
-- { name (lower case), Name (as written), args (words), file, line, text (the line as
-- written, trimmed) } and, for a section, children (a list of nodes). An Include leaves a node
-- named "#include" (a name no configuration can write: "#" starts a comment) with `files`,
-- the files it read, in front of their nodes. A syntax or read error raises a SyntaxError
-- (syntax_message() gives its "file:line: what" text); nothing else is raised but a bug.
--
-- What a hostile or broken configuration may cost is bounded: a FIFO or /dev/zero is never
-- read (sys.read refuses what is not a regular file), no more than MAX_BYTES are read in all,
-- the Includes name no more than MAX_FILES files and folders in all, and sections and includes
-- nest only so deep, so the reader cannot hang, exhaust its memory or overflow its stack.
--
-- `sys` is the C side's (import_apache.c): glob(pattern) -> sorted list, isdir(path),
-- exists(path), read(path, limit) -> text | nil, why | false (over the limit).
local R = {}

local fmt = string.format

local MAX_BYTES = 16 * 1024 * 1024
local MAX_FILES = 4096
local MAX_INCLUDE_DEPTH = 32
local MAX_SECTION_DEPTH = 64

local SyntaxError = {}

-- Raises a SyntaxError at file:line; msg is a format string for the arguments that follow.
-- The translation raises it too, for a section where Apache refuses it.
function R.syntax(file, line, msg, ...)
  error(setmetatable({ msg = fmt("%s:%d: %s", file, line, fmt(msg, ...)) }, SyntaxError), 0)
end

-- The text of a SyntaxError; nil for any other error value.
function R.syntax_message(err)
  if getmetatable(err) == SyntaxError then return err.msg end
  return nil
end

function R.dirname(p) return p:match("^(.*)/[^/]*$") or "." end
function R.is_abs(p) return p:sub(1, 1) == "/" end

local syntax, is_abs = R.syntax, R.is_abs

-- Apache's ap_getword_conf: words split on white space; "..." or '...' quote a word, and a
-- backslash before the quote character inside it stands for that character.
local function words(text, file, line)
  local out, i, n = {}, 1, #text
  while true do
    i = text:find("%S", i)
    if not i then break end
    local c = text:sub(i, i)
    if c == '"' or c == "'" then
      local j, buf = i + 1, {}
      while true do
        if j > n then syntax(file, line, "unterminated %s quote", c) end
        local d = text:sub(j, j)
        if d == "\\" and text:sub(j + 1, j + 1) == c then
          buf[#buf + 1] = c; j = j + 2
        elseif d == c then
          j = j + 1; break
        else
          buf[#buf + 1] = d; j = j + 1
        end
      end
      out[#out + 1] = table.concat(buf)
      i = j
    else
      local j = text:find("%s", i) or n + 1
      out[#out + 1] = text:sub(i, j - 1)
      i = j
    end
  end
  return out
end

-- White space off both ends, in one pass (a pattern such as "^%s*(.-)%s*$" takes quadratic
-- time on a long run of spaces).
local function trim(s)
  local i = s:find("%S")
  if not i then return "" end
  local j = #s
  while s:find("^%s", j) do j = j - 1 end
  return s:sub(i, j)
end

-- Logical lines of one file: {text, line} with continuations joined (the line number is the
-- first one's). The parts of a continued line are joined once, at its end: linear in the
-- file's size.
local function logical_lines(src)
  local out, pending, first, ln = {}, nil, nil, 0
  for raw in (src .. "\n"):gmatch("([^\n]*)\n") do
    ln = ln + 1
    if raw:sub(-1) == "\r" then raw = raw:sub(1, -2) end
    if raw:sub(-1) == "\\" then
      pending = pending or {}
      pending[#pending + 1] = raw:sub(1, -2)
      first = first or ln
    else
      if pending then
        pending[#pending + 1] = raw
        raw = table.concat(pending)
      end
      out[#out + 1] = { text = raw, line = first or ln }
      pending, first = nil, nil
    end
  end
  if pending then out[#out + 1] = { text = table.concat(pending), line = first } end
  return out
end

-- One reading: what has been read so far counts against the limits.
local Reader = {}
Reader.__index = Reader

-- The text of `path`, counted against MAX_BYTES; nil and why when it cannot be read.
function Reader:read(path)
  local src, err = self.sys.read(path, MAX_BYTES - self.bytes)
  if src == false then
    return nil, fmt("more than %d MiB of configuration in all (the importer reads no more)", MAX_BYTES / 1048576)
  end
  if not src then return nil, err end
  self.bytes = self.bytes + #src
  return src
end

-- Parses `path` into `into` (a list of nodes); nil and why when it cannot be read. `nest` is
-- how many sections enclose the Include that names this file (0 for the main file): the depth
-- limit counts the sections of every file on the way.
function Reader:parse_file(path, into, depth, nest)
  if depth > MAX_INCLUDE_DEPTH then
    syntax(path, 1, "Include nested more than %d deep (an include loop?)", MAX_INCLUDE_DEPTH)
  end
  local src, err = self:read(path)
  if not src then return nil, err end
  -- Apache reads a line as a C string, up to a NUL byte; moongate's loader would cut a name or
  -- a path there. Neither reading is what the text says: a NUL is an error.
  local nul = src:find("%z")
  if nul then
    local _, lf = src:sub(1, nul):gsub("\n", "")
    syntax(path, lf + 1, "a NUL byte (the line cannot be read as Apache reads it)")
  end
  local stack = { { children = into, name = nil } }
  for _, l in ipairs(logical_lines(src)) do
    local t = trim(l.text)
    if t ~= "" and t:sub(1, 1) ~= "#" then
      local top = stack[#stack]
      if t:sub(1, 2) == "</" then
        local name = t:match("^</%s*([%w_:%-]+)%s*>$")
        if not name then syntax(path, l.line, "bad closing tag %s", t) end
        if not top.name then syntax(path, l.line, "</%s> without matching <%s> section", name, name) end
        if top.name ~= name:lower() then
          syntax(path, l.line, "</%s> closes <%s> (opened at line %d)", name, top.Name, top.line)
        end
        stack[#stack] = nil
      elseif t:sub(1, 1) == "<" then
        if t:sub(-1) ~= ">" then syntax(path, l.line, "section %s lacks its closing '>'", t) end
        local inner = t:sub(2, -2)
        local name, rest = inner:match("^([%w_:%-]+)(.*)$")
        if not name then syntax(path, l.line, "bad section %s", t) end
        if nest + #stack > MAX_SECTION_DEPTH then
          syntax(path, l.line, "sections nested more than %d deep", MAX_SECTION_DEPTH)
        end
        local node = { name = name:lower(), Name = name, args = words(rest, path, l.line), file = path,
                       line = l.line, text = t, children = {} }
        top.children[#top.children + 1] = node
        stack[#stack + 1] = node
      else
        local w = words(t, path, l.line)
        local name = table.remove(w, 1)
        if not name:match("^[%a][%w_]*$") then syntax(path, l.line, "bad directive name %q", name) end
        local node = { name = name:lower(), Name = name, args = w, file = path, line = l.line, text = t }
        if node.name == "include" or node.name == "includeoptional" then
          self:include(node, top.children, depth, nest + #stack - 1)
        else
          if node.name == "serverroot" and w[1] then self.server_root = w[1] end
          top.children[#top.children + 1] = node
        end
      end
    end
  end
  if #stack > 1 then
    local open = stack[#stack]
    syntax(path, open.line, "<%s> section is never closed", open.Name)
  end
  return true
end

local function has_wildcard(p) return p:find("[%*%?%[]") ~= nil end

-- Adds `path` to `list`, or every file below it when it is a folder; `node` is the Include.
function Reader:expand(path, list, node)
  self.entries = self.entries + 1
  if self.entries > MAX_FILES then
    syntax(node.file, node.line, "%s: more than %d files and folders to include in all", node.Name, MAX_FILES)
  end
  if self.sys.isdir(path) then
    for _, p in ipairs(self.sys.glob(path .. "/*")) do self:expand(p, list, node) end
  else
    list[#list + 1] = path
  end
end

function Reader:include(node, into, depth, nest)
  local optional = node.name == "includeoptional"
  local pat = node.args[1]
  if not pat then syntax(node.file, node.line, "%s needs a file or pattern", node.Name) end
  -- As httpd: relative to ServerRoot (once set), else to the main file's folder.
  if not is_abs(pat) then pat = (self.server_root or self.root_dir) .. "/" .. pat end
  local files = {}
  if has_wildcard(pat) then
    for _, p in ipairs(self.sys.glob(pat)) do self:expand(p, files, node) end
    if #files == 0 and not optional then
      syntax(node.file, node.line, "Include: no file matches the wildcard %s", pat)
    end
  elseif self.sys.isdir(pat) then
    self:expand(pat, files, node)
  elseif self.sys.exists(pat) then
    files[1] = pat
  elseif not optional then
    syntax(node.file, node.line, "Include: cannot open %s", pat)
  end
  into[#into + 1] = { name = "#include", Name = node.Name, args = node.args, file = node.file,
                      line = node.line, text = node.text, files = files }
  for _, p in ipairs(files) do
    local ok, err = self:parse_file(p, into, depth + 1, nest)
    if not ok then syntax(node.file, node.line, "Include: cannot read %s: %s", p, tostring(err)) end
  end
end

-- The tree of the configuration at `path` and its last ServerRoot; raises a SyntaxError.
function R.read(path, sys)
  local reader = setmetatable({ sys = sys, root_dir = R.dirname(path), bytes = 0, entries = 0 }, Reader)
  local tree = {}
  local ok, err = reader:parse_file(path, tree, 0, 0)
  if not ok then error(setmetatable({ msg = fmt("%s: %s", path, tostring(err)) }, SyntaxError), 0) end
  return tree, reader.server_root
end

return R
