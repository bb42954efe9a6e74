-- The benchmarks game's fasta. lua fasta.lua N
local alu = "GGCCGGGCGCGGTGGCTCACGCCTGTAATCCCAGCACTTTGGGAGGCCGAGGCGGGCGGATCACCTGAGGTCAGGAGTTCGAGACCAGCCTGGCCAACATGGTGAAACCCCGTCTCTACTAAAAATACAAAAATTAGCCGGGCGTGGTGGCGCGCGCCTGTAATCCCAGCTACTCGGGAGGCTGAGGCAGGAGAATCGCTTGAACCCGGGAGGCGGAGGTTGCAGTGAGCCGAGATCGCGCCACTGCACTCCAGCCTGGGCGACAGAGCGAGACTCCGTCTCAAAAA"
local iub = { {"a", 0.27}, {"c", 0.12}, {"g", 0.12}, {"t", 0.27}, {"B", 0.02}, {"D", 0.02},
  {"H", 0.02}, {"K", 0.02}, {"M", 0.02}, {"N", 0.02}, {"R", 0.02}, {"S", 0.02}, {"V", 0.02},
  {"W", 0.02}, {"Y", 0.02} }
local homosapiens = { {"a", 0.3029549426680}, {"c", 0.1979883004921}, {"g", 0.1975473066391},
  {"t", 0.3015094502008} }
local last = 42

local function random(max)
  last = (last * 3877 + 29573) % 139968
  return max * last / 139968.0
end

local function repeat_fasta(id, desc, s, n)
  print(">" .. id .. " " .. desc)
  local k = #s
  local s2 = s .. s
  local i = 0
  while n > 0 do
    local m = n < 60 and n or 60
    print(s2:sub(i + 1, i + m))
    i = i + m
    if i >= k then i = i - k end
    n = n - m
  end
end

local function random_fasta(id, desc, tbl, n)
  print(">" .. id .. " " .. desc)
  local chars, probs, acc = {}, {}, 0.0
  for _, e in ipairs(tbl) do
    acc = acc + e[2]
    chars[#chars + 1] = e[1]
    probs[#probs + 1] = acc
  end
  local nt = #tbl
  local line = {}
  while n > 0 do
    local m = n < 60 and n or 60
    for i = 1, m do
      local r = random(1.0)
      local j = 1
      while j < nt and probs[j] < r do j = j + 1 end
      line[i] = chars[j]
    end
    print(table.concat(line, "", 1, m))
    n = n - m
  end
end

local n = tonumber(arg[1])
repeat_fasta("ONE", "Homo sapiens alu", alu, 2 * n)
random_fasta("TWO", "IUB ambiguity codes", iub, 3 * n)
random_fasta("THREE", "Homo sapiens frequency", homosapiens, 5 * n)
