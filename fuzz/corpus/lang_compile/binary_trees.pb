// The benchmarks game's binary-trees: allocate and check many perfect binary trees.
// pebble run binary_trees.pb [DEPTH]   (default 10)

fn bottom_up(d) {
    if d == 0 { return [nil, nil] }
    return [bottom_up(d - 1), bottom_up(d - 1)]
}

fn check(t) {
    if t[0] == nil { return 1 }
    return 1 + check(t[0]) + check(t[1])
}

let n = 10
if len(args()) > 0 { n = int(args()[0]) }
let min_depth = 4
let max_depth = n
if min_depth + 2 > n { max_depth = min_depth + 2 }

let stretch = max_depth + 1
print("stretch tree of depth " + str(stretch) + "\t check: " + str(check(bottom_up(stretch))))

let long_lived = bottom_up(max_depth)

let d = min_depth
while d <= max_depth {
    let iterations = 1
    for i in 0..(max_depth - d + min_depth) { iterations = iterations * 2 }
    let total = 0
    for i in 0..iterations { total = total + check(bottom_up(d)) }
    print(str(iterations) + "\t trees of depth " + str(d) + "\t check: " + str(total))
    d = d + 2
}

print("long lived tree of depth " + str(max_depth) + "\t check: " + str(check(long_lived)))
