-- The benchmarks game's mandelbrot, printing a checksum of the bitmap's bytes instead of the
-- image. lua mandelbrot.lua N
local n = tonumber(arg[1])
local inside, sum = 0, 0
for y = 0, n - 1 do
  local ci = 2.0 * y / n - 1.0
  local bits, nbits = 0, 0
  for x = 0, n - 1 do
    local cr = 2.0 * x / n - 1.5
    local zr, zi, tr, ti = 0.0, 0.0, 0.0, 0.0
    local i = 0
    while i < 50 and tr + ti <= 4.0 do
      zi = 2.0 * zr * zi + ci
      zr = tr - ti + cr
      tr = zr * zr
      ti = zi * zi
      i = i + 1
    end
    bits = bits * 2
    if tr + ti <= 4.0 then
      bits = bits + 1
      inside = inside + 1
    end
    nbits = nbits + 1
    if nbits == 8 or x == n - 1 then
      while nbits < 8 do bits = bits * 2; nbits = nbits + 1 end
      sum = (sum * 31 + bits) % 1000000007
      bits, nbits = 0, 0
    end
  end
end
print("P4 " .. n .. " " .. n .. " inside " .. inside .. " checksum " .. sum)
