-- A closure pipeline: map, filter and fold written with function values, composed.
-- lua closures.lua N
local function map(v, f)
  local out = {}
  for i = 1, #v do out[#out + 1] = f(v[i]) end
  return out
end
local function filter(v, p)
  local out = {}
  for i = 1, #v do if p(v[i]) then out[#out + 1] = v[i] end end
  return out
end
local function fold(v, acc, f)
  for i = 1, #v do acc = f(acc, v[i]) end
  return acc
end
local function compose(f, g) return function(x) return g(f(x)) end end
local function adder(k) return function(x) return x + k end end
local n = tonumber(arg[1])
local xs = {}
for i = 0, 999 do xs[#xs + 1] = i end
local total = 0
for round = 0, n - 1 do
  local f = compose(adder(round), function(x) return x * 3 end)
  local ys = filter(map(xs, f), function(x) return x % 2 == 0 end)
  total = (total + fold(ys, 0, function(a, b) return a + b end)) % 1000000007
end
print(total)
