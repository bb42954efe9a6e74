// Conditions of `if` and `while`: `and`, `or` and `not` compile to jumps; each case prints
// what the same expression as a value says, and which operands ran.
let trace = []
fn t(name, v) { push(trace, name) return v }
fn check(label, got, want) {
    let ran = join(trace, "")
    trace = []
    print(label, got == want, ran)
}
let vals = [true, false, nil, 0, "", 1.5]
let n = 0
for a in vals {
    for b in vals {
        for c in vals {
            let want = (a and b) or not c
            let got = false
            if (t("a", a) and t("b", b)) or not t("c", c) { got = true }
            let w2 = not (a or b) and c
            let got2 = false
            if not (t("a", a) or t("b", b)) and t("c", c) { got2 = true } else { got2 = false }
            if got != (want != false and want != nil) { print("wrong", a, b, c) }
            if got2 != (w2 != false and w2 != nil) { print("wrong2", a, b, c) }
            n = n + 1
        }
    }
}
trace = []
print(n, "combinations")
if t("a", 1) and t("b", nil) { print("no") }
check("and stops at nil", true, true)
if t("a", nil) and t("b", 1) { print("no") }
check("and skips b", true, true)
if t("a", 0) or t("b", 1) { check("or stops at 0", true, true) }
if not t("a", false) { check("not false", true, true) }
let nan = 0.0 / 0.0
let x = 0
if not (nan < 1.0) { x = x + 1 }
if not (nan >= 1.0) { x = x + 1 }
if nan < 1.0 or nan >= 1.0 { x = x + 100 }
print("nan", x)
let i = 0
while true {
    i = i + 1
    if i >= 5 and not (i < 5) { break }
}
let j = 0
while j < 10 and (j != 3 or i == 0) { j = j + 1 }
print(i, j)
// A `for` loop's variable: assigned in the body, it is a copy (the loop still counts);
// captured, each iteration's own.
let steps = 0
for k in 0..5 {
    k = k * 100
    steps = steps + k
}
let fs = []
for k in 0..3 { push(fs, fn() { return k }) }
print(steps, fs[0](), fs[1](), fs[2]())
