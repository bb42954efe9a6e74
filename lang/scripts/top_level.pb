// Top-level variables: the ones no named function mentions live in the top-level code's
// registers, the others in globals; both behave the same. Each line's expected value is in
// its comment.
print(early)                 // nil: a variable named before its `let` is a global
let early = 1
print(early)                 // 1

// Named by a function: a global, seen and changed through the function.
let counter = 0
fn bump() { counter = counter + 1 return counter }
bump()
bump()
print(counter)               // 2

// Only top-level code and literals name these: registers.
let total = 0
let items = []
for i in 0..1000 {
    push(items, [i, str(i)])
    total = total + i
}
gc()                         // the vector lives only in a register of the top-level code
let sum = 0
for it in items { sum = sum + it[0] + len(it[1]) }
print(total, sum)            // 499500 502390

// Captured and assigned by a literal: a box shared by the literal and the top level.
let hits = 0
let hit = fn(n) { hits = hits + n }
hit(2)
hit(3)
hits = hits * 10
hit(1)
print(hits)                  // 51

// Captured and never assigned: a copy.
let base = "b"
let add = fn(s) { return base + s }
print(add("x"))              // bx

// A goroutine's literal shares the box too.
let done = chan()
let shared = 0
go fn() {
    for i in 0..100 { shared = shared + 1 }
    done <- true
}()
<-done
print(shared)                // 100

// Declared twice: a global (the second `let` assigns it).
let twice = 1
let f = fn() { return twice }
let twice = 2
print(f())                   // 2
