// The demo: goroutines, channels and the collector at work.
fn make(d) {
    if d == 0 { return [nil, nil] }
    return [make(d - 1), make(d - 1)]
}

fn check(t) {
    if t[0] == nil { return 1 }
    return 1 + check(t[0]) + check(t[1])
}

// Workers build and drop trees; each sends its total on a channel.
let results = chan()
for w in 0..8 {
    go fn() {
        let total = 0
        for i in 0..200 {
            total = total + check(make(10))
        }
        results <- [w, total]
    }()
}
let sum = 0
for i in 0..8 {
    let r = <-results
    sum = sum + r[1]
}
print("8 workers built", 8 * 200, "trees of depth 10; nodes checked:", sum)
print("collections so far:", cycles())
