// try/catch under collection: values made before a `try` and used only in its handler stay
// alive through collections in the frames the error unwinds (lang/tests/scripts.rs runs it with
// checkmark and poison).
fn build(d) { if d == 0 { return [d] } return [build(d - 1), build(d - 1), "s" + str(d)] }
fn fail(n, i) {
  if n == 0 {
    if i % 7 == 0 { gc() }
    error("e" + str(i))
  }
  let x = build(4)
  return fail(n - 1, i) + len(x)
}
let keep = []
let total = 0
let n = int(args()[0])
for i in 0..n {
  let a = build(3)
  let shared = 0
  let bump = fn() { shared = shared + 1 }
  try {
    let b = build(5)
    bump()
    fail(i % 20, i)
  } catch e {
    bump()
    total = total + shared + len(a) + len(e)
    if i % 100 == 0 { push(keep, [a, e]) }
  }
}
let check = 0
for k in keep { check = check + len(k[1]) }
print(total, len(keep), check)
