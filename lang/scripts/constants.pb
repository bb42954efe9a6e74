// Arithmetic and comparisons with a literal operand (read from the constants, on either
// side) give what the same operation on two registers gives.
let vals = [0, 1, -7, 3, 2.5, -0.5, 1e300, 1152921504606846976, "s", nil]
fn show(label, f) {
    let out = []
    for v in vals {
        try { push(out, str(f(v))) } catch e { push(out, "!" + e) }
    }
    print(label, join(out, " "))
}
show("v+1", fn(v) { return v + 1 })
show("1+v", fn(v) { return 1 + v })
show("v-2.5", fn(v) { return v - 2.5 })
show("2.5-v", fn(v) { return 2.5 - v })
show("v*3", fn(v) { return v * 3 })
show("3*v", fn(v) { return 3 * v })
show("v*1e300", fn(v) { return v * 1e300 })
show("v/2", fn(v) { return v / 2 })
show("7/v", fn(v) { return 7 / v })
show("v/0", fn(v) { return v / 0 })
show("v%3", fn(v) { return v % 3 })
show("7%v", fn(v) { return 7 % v })
show("v&6", fn(v) { return v & 6 })
show("1<<v", fn(v) { return 1 << v })
show("v>>1", fn(v) { return v >> 1 })
fn cmps(v) {
    let s = ""
    if v < 1 { s = s + "a" }
    if 1 < v { s = s + "b" }
    if v <= 2.5 { s = s + "c" }
    if 2.5 <= v { s = s + "d" }
    if v > 3 { s = s + "e" }
    if 3 > v { s = s + "f" }
    if v >= -0.5 { s = s + "g" }
    if -7 >= v { s = s + "h" }
    if v == 0 { s = s + "i" }
    if 1 != v { s = s + "j" }
    if v == 2.5 { s = s + "k" }
    return s
}
show("cmp", cmps)
let x = 0.0 / 0.0
print("nan", x < 1.0, 1.0 < x, x == 1.5, x != 1.5)
