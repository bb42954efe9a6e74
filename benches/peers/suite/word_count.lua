-- A map-heavy word count: pseudo-random words, counted in a map, the most frequent printed.
-- lua word_count.lua N
local syllables = {"ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zu", "pe", "qua", "ri"}
local seed = 7
local function next(k)
  seed = seed * 48271 % 2147483647
  return seed % k
end
local n = tonumber(arg[1])
local counts = {}
for _ = 1, n do
  local w = syllables[next(12) + 1] .. syllables[next(12) + 1]
  if next(3) == 0 then w = w .. syllables[next(12) + 1] end
  counts[w] = (counts[w] or 0) + 1
end
local words = {}
for w in pairs(counts) do words[#words + 1] = w end
table.sort(words, function(a, b)
  if counts[a] ~= counts[b] then return counts[a] > counts[b] end
  return a < b
end)
print(#words .. " distinct words")
for i = 1, 10 do print(words[i] .. " " .. counts[words[i]]) end
