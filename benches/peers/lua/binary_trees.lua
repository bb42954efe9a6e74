-- binary-trees, the same program as lang/scripts/binary_trees.pb, for Lua 5.4.
-- lua5.4 binary_trees.lua [DEPTH]   (default 10)

local function bottom_up(d)
  if d == 0 then return {nil, nil} end
  return {bottom_up(d - 1), bottom_up(d - 1)}
end

local function check(t)
  if t[1] == nil then return 1 end
  return 1 + check(t[1]) + check(t[2])
end

local n = tonumber(arg and arg[1]) or 10
local min_depth = 4
local max_depth = n
if min_depth + 2 > n then max_depth = min_depth + 2 end

local stretch = max_depth + 1
print("stretch tree of depth " .. stretch .. "\t check: " .. check(bottom_up(stretch)))

local long_lived = bottom_up(max_depth)

local d = min_depth
while d <= max_depth do
  local iterations = 1
  for _ = 1, max_depth - d + min_depth do iterations = iterations * 2 end
  local total = 0
  for _ = 1, iterations do total = total + check(bottom_up(d)) end
  print(iterations .. "\t trees of depth " .. d .. "\t check: " .. total)
  d = d + 2
end

print("long lived tree of depth " .. max_depth .. "\t check: " .. check(long_lived))
