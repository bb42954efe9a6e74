// The benchmarks game's spectral-norm. pebble run spectral_norm.pb N
fn a(i, j) {
    let ij = i + j
    return 1.0 / (ij * (ij + 1) / 2 + i + 1)
}
fn mul_av(n, v, av) {
    for i in 0..n {
        let s = 0.0
        for j in 0..n { s = s + a(i, j) * v[j] }
        av[i] = s
    }
}
fn mul_atv(n, v, atv) {
    for i in 0..n {
        let s = 0.0
        for j in 0..n { s = s + a(j, i) * v[j] }
        atv[i] = s
    }
}
fn mul_atav(n, v, out, tmp) {
    mul_av(n, v, tmp)
    mul_atv(n, tmp, out)
}
let n = int(args()[0])
let u = vec(n, 1.0)
let v = vec(n, 0.0)
let t = vec(n, 0.0)
for i in 0..10 {
    mul_atav(n, u, v, t)
    mul_atav(n, v, u, t)
}
let vbv = 0.0
let vv = 0.0
for i in 0..n {
    vbv = vbv + u[i] * v[i]
    vv = vv + v[i] * v[i]
}
print(format("%0.9f", sqrt(vbv / vv)))
