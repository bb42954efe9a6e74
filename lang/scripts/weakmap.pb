// Weak-keyed maps (`weakmap()`), each step with its exact output (lang/tests/scripts.rs checks
// it in every collector mode, with checkmark and poison on). An entry lives while its key is
// reachable from elsewhere; its value does not keep the key alive, even when it references it.

let wm = weakmap()
let k1 = [1]
let k2 = {"a": 1}
let k3 = fn() { return 3 }
wm[k1] = "one"
wm[k2] = [2, 2]
wm[k3] = 3
wm[[9]] = "a key nobody holds"
print(type(wm), wm[k1], wm[k2], wm[k3], has(wm, k1), has(wm, [1]), wm[[1]])
gc()
gc()
print("after gc:", len(wm), wm[k1])

// A value that references its own key keeps neither alive.
let k4 = [4]
wm[k4] = [k4, "holds its key"]
print("self:", len(wm), wm[k4][1])
k4 = nil
k1 = nil
gc()
gc()
print("k1 and k4 dropped:", len(wm), has(wm, k2), has(wm, k3))

// delete, keys, iteration, assignment over an entry.
print("delete:", delete(wm, k2), delete(wm, k2), has(wm, k2), len(wm))
wm[k3] = "three"
print("keys:", len(keys(wm)), keys(wm)[0] == k3, wm[k3])
for k in wm { print("key", type(k), wm[k]) }

// A chain (Lua's gc.lua): entry i's value is key i + 1, so the whole chain lives exactly as
// long as its head key. Made in the worst order (the last link first), from a vector of the
// keys that is then dropped.
fn chain(wm, n) {
  let ks = []
  for i in 0..(n + 1) { push(ks, [i]) }
  let i = n - 1
  while i >= 0 {
    wm[ks[i]] = ks[i + 1]
    i = i - 1
  }
  return ks[0]
}
let links = weakmap()
let head = chain(links, 1000)
gc()
gc()
let n = 0
let x = head
while has(links, x) {
  x = links[x]
  n = n + 1
}
print("chain:", len(links), n, x[0])
x = nil
gc()
print("chain still:", len(links))
head = nil
gc()
gc()
print("chain gone:", len(links))

// Values in one weakmap keep the keys of another alive (a chain across maps).
let a = weakmap()
let b = weakmap()
let ka = [10]
let kb = [20]
a[ka] = kb
b[kb] = "via a"
kb = nil
gc()
gc()
print("across:", len(a), len(b), b[a[ka]])
ka = nil
gc()
gc()
print("across gone:", len(a), len(b))

// Many keys that die, with some that live: the table reuses their slots and stays small.
let keep = []
let churn = weakmap()
for i in 0..20000 {
  let k = [i]
  churn[k] = i
  if i % 1000 == 0 { push(keep, k) }
  if i % 5000 == 0 { gc() }
}
gc()
gc()
let sum = 0
for k in keep { sum = sum + churn[k] }
print("churn:", len(churn), sum)

// Keys are objects, compared by identity: anything else is an error.
for bad in [5, "s", 2.5, nil, true] {
  try { wm[bad] = 1 } catch e { print(e) }
}
try { print(has(wm, 7)) } catch e { print(e) }
try { print(wm["k"]) } catch e { print(e) }
try { delete(wm, 1) } catch e { print(e) }
try { delete([1], 1) } catch e { print(e) }

// delete on a plain map: the other keys are all still found.
let m = {}
for i in 0..100 { m[i] = i * i }
for i in 0..100 {
  if i % 3 == 0 { delete(m, i) }
}
let ok = true
for i in 0..100 {
  if has(m, i) != (i % 3 != 0) { ok = false }
  if i % 3 != 0 and m[i] != i * i { ok = false }
}
print("map delete:", len(m), ok, delete(m, 0), delete(m, 1), len(m), has(m, 1), m[1])
