// The benchmarks game's fannkuch-redux. pebble run fannkuch_redux.pb N
let n = int(args()[0])
let perm = vec(n, 0)
let perm1 = vec(n, 0)
let count = vec(n, 0)
for i in 0..n { perm1[i] = i }
let maxflips = 0
let checksum = 0
let permcount = 0
let r = n
let done = false
while not done {
    while r != 1 {
        count[r - 1] = r
        r = r - 1
    }
    for i in 0..n { perm[i] = perm1[i] }
    let flips = 0
    let k = perm[0]
    while k != 0 {
        let i = 0
        let j = k
        while i < j {
            let t = perm[i]
            perm[i] = perm[j]
            perm[j] = t
            i = i + 1
            j = j - 1
        }
        flips = flips + 1
        k = perm[0]
    }
    if flips > maxflips { maxflips = flips }
    if permcount % 2 == 0 { checksum = checksum + flips } else { checksum = checksum - flips }
    while true {
        if r == n {
            done = true
            break
        }
        let perm0 = perm1[0]
        for i in 0..r { perm1[i] = perm1[i + 1] }
        perm1[r] = perm0
        count[r] = count[r] - 1
        if count[r] > 0 { break }
        r = r + 1
    }
    permcount = permcount + 1
}
print(checksum)
print("Pfannkuchen(" + str(n) + ") = " + str(maxflips))
