-- graylane A/B targeting for HAProxy 2.6 (Lua 5.3).
--
-- The match rules live in a map file that the runtime API edits (prepare/add/commit map), so rules
-- change without a reload. Header names are data here, which plain ACLs cannot do at runtime.
-- Map keys (written by functions/providers/routers/haproxy.py):
--   rules  comma-separated rules; each rule is kind|name|value|regex|digits|percent|salt|cidrs with
--          every field percent-encoded (so neither "|" nor "," nor spaces occur inside a field)
--   salt   the release's user-hash salt, used by user-hash rules without their own salt
--   affinity  the session-affinity cookie's name, while spec.sessionAffinity pins clients (and maxage its Max-Age)
-- source-ip rules are matched natively (`src -f sources.acl`); here they never match.
--
-- Registered:
--   fetch     lua.graylane_canary       -> 1 if the request matches any rule, else 0
--   converter lua.graylane_bucket(salt) -> MurmurHash3 x86_32(salt .. ":" .. input, seed 0) % 100
--   fetch     lua.graylane_client       -> the affinity cookie's value ("" without one, or without affinity)

local MASK = 0xffffffff
local rules_map = Map.new(os.getenv("GRAYLANE_RULES_MAP"), Map._str)

local function rotl(x, r)
  return ((x << r) | (x >> (32 - r))) & MASK
end

-- MurmurHash3 x86_32, bit for bit the same as Python's mmh3.hash(key, 0, signed=False).
local function murmur3_32(key, seed)
  local c1, c2 = 0xcc9e2d51, 0x1b873593
  local h = seed & MASK
  local len = #key
  local nblocks = len // 4
  for i = 0, nblocks - 1 do
    local b1, b2, b3, b4 = key:byte(i * 4 + 1, i * 4 + 4)
    local k = b1 | (b2 << 8) | (b3 << 16) | (b4 << 24)
    k = rotl((k * c1) & MASK, 15)
    h = h ~ ((k * c2) & MASK)
    h = (rotl(h, 13) * 5 + 0xe6546b64) & MASK
  end
  local tail, rem, k = nblocks * 4, len & 3, 0
  if rem == 3 then k = k ~ (key:byte(tail + 3) << 16) end
  if rem >= 2 then k = k ~ (key:byte(tail + 2) << 8) end
  if rem >= 1 then
    k = rotl(((k ~ key:byte(tail + 1)) * c1) & MASK, 15)
    h = h ~ ((k * c2) & MASK)
  end
  h = h ~ len
  h = ((h ~ (h >> 16)) * 0x85ebca6b) & MASK
  h = ((h ~ (h >> 13)) * 0xc2b2ae35) & MASK
  return h ~ (h >> 16)
end

local function bucket(user_id, salt)
  return murmur3_32(salt .. ":" .. user_id, 0) % 100
end

local function unquote(s)
  return (s:gsub("%%(%x%x)", function(hex) return string.char(tonumber(hex, 16)) end))
end

local function split(s, sep)
  local out = {}
  if s == "" then return out end
  for part in (s .. sep):gmatch("(.-)" .. sep) do out[#out + 1] = part end
  return out
end

local function parse_rule(text)
  local f = split(text, "|")
  for i = 1, #f do f[i] = unquote(f[i]) end
  local rule = {kind = f[1], name = (f[2] or ""):lower(), value = f[3] or "", regex = nil,
                digits = {}, percent = tonumber(f[6]) or 0, salt = f[7] or ""}
  if f[4] and f[4] ~= "" then
    local ok, re = Regex.new("^(?:" .. f[4] .. ")$", false)
    rule.regex = ok and re or false  -- a regex that does not compile never matches
  end
  for _, d in ipairs(split(f[5] or "", ",")) do rule.digits[d] = true end
  return rule
end

-- Parsed rules keyed by the raw map value: the map is read on every request, parsed once per change.
local parsed = {raw = nil, rules = {}}

local function current_rules()
  local raw = rules_map:lookup("rules") or ""
  if raw ~= parsed.raw then
    local rules = {}
    for _, text in ipairs(split(raw, ",")) do rules[#rules + 1] = parse_rule(text) end
    parsed = {raw = raw, rules = rules}
  end
  return parsed.rules
end

local function value_matches(rule, v)
  if rule.regex ~= nil then
    return rule.regex ~= false and rule.regex:exec(v)
  end
  return v == rule.value
end

local function cookies(headers)
  local out = {}
  for _, line in pairs(headers["cookie"] or {}) do
    for pair in line:gmatch("[^;]+") do
      local k, v = pair:match("^%s*([^=]-)%s*=%s*(.-)%s*$")
      if k then out[#out + 1] = {k, v} end
    end
  end
  return out
end

local function first(headers, name)
  local values = headers[name]
  return values and values[0] or nil
end

local function matches(rule, headers, salt)
  if rule.kind == "header" then
    for _, v in pairs(headers[rule.name] or {}) do
      if value_matches(rule, v) then return true end
    end
  elseif rule.kind == "cookie" then
    for _, kv in ipairs(cookies(headers)) do
      if kv[1] == rule.name and value_matches(rule, kv[2]) then return true end
    end
  elseif rule.kind == "user-id-digit" then
    local uid = first(headers, rule.name)
    return uid ~= nil and uid ~= "" and rule.digits[uid:sub(-1)] == true
  elseif rule.kind == "user-hash" then
    local uid = first(headers, rule.name)
    local s = rule.salt ~= "" and rule.salt or salt
    return uid ~= nil and uid ~= "" and bucket(uid, s) < rule.percent
  end
  return false
end

core.register_fetches("graylane_canary", function(txn)
  local rules = current_rules()
  if #rules == 0 then return 0 end
  local headers = txn.http:req_get_headers()
  local salt = unquote(rules_map:lookup("salt") or "")
  for _, rule in ipairs(rules) do
    if matches(rule, headers, salt) then return 1 end
  end
  return 0
end)

core.register_converters("graylane_bucket", function(user_id, salt)
  return bucket(user_id, salt or "")
end)

core.register_fetches("graylane_client", function(txn)
  local name = rules_map:lookup("affinity")
  if name == nil or name == "" then return "" end
  for _, kv in ipairs(cookies(txn.http:req_get_headers())) do
    if kv[1] == name then return kv[2]:sub(1, 64) end
  end
  return ""
end)
