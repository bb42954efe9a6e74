// The benchmarks game's mandelbrot, printing a checksum of the bitmap's bytes instead of the
// image. pebble run mandelbrot.pb N
let n = int(args()[0])
let inside = 0
let sum = 0
for y in 0..n {
    let ci = 2.0 * y / n - 1.0
    let bits = 0
    let nbits = 0
    for x in 0..n {
        let cr = 2.0 * x / n - 1.5
        let zr = 0.0
        let zi = 0.0
        let tr = 0.0
        let ti = 0.0
        let i = 0
        while i < 50 and tr + ti <= 4.0 {
            zi = 2.0 * zr * zi + ci
            zr = tr - ti + cr
            tr = zr * zr
            ti = zi * zi
            i = i + 1
        }
        bits = bits * 2
        if tr + ti <= 4.0 {
            bits = bits + 1
            inside = inside + 1
        }
        nbits = nbits + 1
        if nbits == 8 or x == n - 1 {
            while nbits < 8 {
                bits = bits * 2
                nbits = nbits + 1
            }
            sum = (sum * 31 + bits) % 1000000007
            bits = 0
            nbits = 0
        }
    }
}
print("P4 " + str(n) + " " + str(n) + " inside " + str(inside) + " checksum " + str(sum))
