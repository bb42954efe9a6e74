// Churns the heap from 100 goroutines while collections run: each builds and drops trees,
// vectors, maps and strings, and checks what it built. Run it with
// SAFEPOINT_DEBUG=gctrace=1,gccheckmark=1 to see every cycle, checked.

fn tree(d) {
    if d == 0 { return {v: 1} }
    return {l: tree(d - 1), r: tree(d - 1), v: d}
}

fn sum(t) {
    if t.l == nil { return t.v }
    return t.v + sum(t.l) + sum(t.r)
}

fn work(id, out) {
    let keep = []
    let total = 0
    for round in 0..40 {
        let t = tree(6)
        total = total + sum(t)
        let words = []
        for i in 0..20 { push(words, "w" + str(i * id)) }
        if round % 10 == 0 { push(keep, t) }
        let f = 1.5 * float(round)
        total = total + int(f) - int(f)
    }
    for t in keep { total = total + sum(t) }
    out <- total
}

let out = chan(100)
for id in 0..100 { go work(id, out) }
let grand = 0
for i in 0..100 { grand = grand + <-out }
print("100 goroutines, total", grand)
