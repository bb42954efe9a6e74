// More language features, each with its exact output (lang/tests/scripts.rs checks it in every
// collector mode at 1 and 2 Ps). The first argument is a scratch file's path.

// Closures share the variables they capture: assigning one is seen by every closure of it and
// by the function that declared it.
fn counter() {
  let n = 0
  let inc = fn() {
    n = n + 1
    return n
  }
  return inc
}
let c1 = counter()
let c2 = counter()
c1()
c1()
gc()
print("counters:", c1(), c2())
fn pair() {
  let v = "start"
  let get = fn() { return v }
  let set = fn(x) { v = x }
  set("set " + str(1))
  return [get, set, fn() { return v + "!" }]
}
let p = pair()
print(p[0](), p[2]())
p[1]([1, 2, 3])
gc()
print(p[0](), type(p[0]()))
// A parameter captured and assigned; a loop variable captured per iteration (a copy each time).
fn acc(total) {
  let add = fn(x) { total = total + x }
  for i in 1..5 { add(i) }
  return total
}
let fs = []
for i in 0..3 { push(fs, fn() { return i * 10 }) }
print("acc:", acc(100), fs[0](), fs[1](), fs[2]())

// try/catch: an error in the block, or in anything it calls, continues in the handler.
fn deep(n, keep) {
  if n == 0 {
    gc()
    return keep[0] / 0
  }
  return deep(n - 1, [n, keep])
}
let before = ["allocated", "before", "the", "try"]
try {
  let during = [1, 2, 3]
  deep(100, [7])
} catch e {
  gc()
  print("caught:", e, "| still have", join(before, " "))
}
try { error("boom") } catch e { print("caught:", e) }
try { error([1, 2]) } catch e { print("caught:", e, type(e)) }
try { let x = nil + 1 } catch { print("caught one with no name") }
// Nested, rethrown, and left by break, continue and return.
try {
  try { error("inner") } catch e { error("rethrown " + e) }
} catch e { print("outer caught:", e) }
let sum = 0
for i in 0..6 {
  try {
    if i == 1 { continue }
    if i == 4 { break }
    sum = sum + i
  } catch e { print("never") }
}
fn early() {
  try { return "returned from try" } catch e { return "never" }
}
print("sum:", sum, "|", early())
try { error("after break and return, the handlers are gone") } catch e { print(e) }
// A goroutine contains its own errors.
let results = chan(3)
for g in 0..3 {
  go fn() {
    try {
      if g == 1 { error("goroutine " + str(g) + " failed") }
      results <- "goroutine " + str(g) + " ok"
    } catch e { results <- e }
  }()
}
let got = []
for k in 0..3 { push(got, <-results) }
sort(got)
print(join(got, ", "))

// Comma-ok receive: ok is false once the channel is closed and drained.
let ch = chan(2)
ch <- "a"
close(ch)
let v, ok = <-ch
print(v, ok)
v, ok = <-ch
print(v, ok)
let box = {}
box.v, box.ok = <-ch
print(box)
let ch2 = chan(1)
ch2 <- 5
select {
  case x, more = <-ch2 { print("select:", x, more) }
}
close(ch2)
select {
  case x, more = <-ch2 { print("select:", x, more) }
}

// sort with a comparator (stable), and vector literals of any length.
let people = [["ann", 31], ["bob", 25], ["cy", 31], ["dee", 19], ["eve", 25]]
sort(people, fn(a, b) { return a[1] < b[1] })
print(people)
let xs = []
for i in 0..300 { push(xs, (i * 7919) % 1000) }
sort(xs, fn(a, b) { return a > b })
print(xs[0], xs[1], xs[299], len(xs))
let long = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
  24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46,
  47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69,
  70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92,
  93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112,
  113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130, 131,
  132, 133, 134, 135, 136, 137, 138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148, 149, 150,
  151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169,
  170, 171, 172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188,
  189, 190, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207,
  208, 209, 210, "two hundred and eleven", [212]]
print(len(long), long[199], long[200], long[211], long[212])

// Files and memstats.
let path = args()[0]
write_file(path, "line one\nline two\n")
print(split(read_file(path), "\n"))
try { read_file(path + ".missing") } catch e { print("caught:", find(e, "read_file") == 0) }
let m = memstats()
print(type(m), m.num_gc > 0, m.heap_sys > 0, has(m, "mallocs"), has(m, "pause_total_ns"))

// Floats: immediate words in 2^-255 ..< 2^257, heap objects outside it (and -0.0, infinities);
// the same values either way, as numbers, map keys and text.
let huge = 1e300
let tiny = 1e-300
print(huge * 10 > huge, tiny / 1e10 < tiny, 0.5 + 0.25, -0.0 == 0.0, 2 == 2.0, huge == huge * 1.0)
let fm = {}
fm[1.5] = "a"
fm[huge] = "b"
fm[2.0] = "c"
print(fm[1.5], fm[1e300], fm[2], type(huge), type(0.5), 1e100 * 1e100 > 1e199, -0.0)
let x = 1.0
for i in 0..30 { x = x * 1e10 }
for i in 0..30 { x = x / 1e10 }
print(x, format("%.3f %.3e", 1e-200 * 1e200, 2.5e260 / 1e10), x * 1e400)

// Printing a graph of shared vectors is bounded (about a megabyte, then "...").
let dag = [1]
for i in 0..40 { dag = vec(30, dag) }
let text = str(dag)
print(len(text) < 1100000, text[0:12], text[len(text) - 3:])
