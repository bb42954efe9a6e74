-- String building: numbers to text, concatenation, joining, splitting and searching.
-- lua strings.lua N
local n = tonumber(arg[1])
local parts = {}
for i = 0, n - 1 do
  parts[#parts + 1] = "item" .. i .. ":" .. (i * i % 97)
end
local s = table.concat(parts, ",")
local total, longest, count = 0, "", 0
for f in s:gmatch("[^,]+") do
  count = count + 1
  local k, v = f:match("([^:]*):(.*)")
  total = total + tonumber(v)
  if #k > #longest then longest = k end
end
local line = ""
for i = 0, 1999 do line = line .. string.char(97 + i % 26) end
local hits = 0
for i = 0, 199 do
  if s:find("item" .. (i * 7) .. ":", 1, true) then hits = hits + 1 end
end
print(table.concat({#s, count, total, longest, #line, line:sub(1, 30), hits}, " "))
