// A closure pipeline: map, filter and fold written with function values, composed.
// pebble run closures.pb N
fn map(v, f) {
    let out = []
    for x in v { push(out, f(x)) }
    return out
}
fn filter(v, p) {
    let out = []
    for x in v { if p(x) { push(out, x) } }
    return out
}
fn fold(v, acc, f) {
    for x in v { acc = f(acc, x) }
    return acc
}
fn compose(f, g) { return fn(x) { return g(f(x)) } }
fn adder(k) { return fn(x) { return x + k } }
let n = int(args()[0])
let xs = []
for i in 0..1000 { push(xs, i) }
let total = 0
for round in 0..n {
    let f = compose(adder(round), fn(x) { return x * 3 })
    let ys = filter(map(xs, f), fn(x) { return x % 2 == 0 })
    total = (total + fold(ys, 0, fn(a, b) { return a + b })) % 1000000007
}
print(total)
