// The benchmarks game's fasta. pebble run fasta.pb N
let alu = "GGCCGGGCGCGGTGGCTCACGCCTGTAATCCCAGCACTTTGGGAGGCCGAGGCGGGCGGATCACCTGAGGTCAGGAGTTCGAGACCAGCCTGGCCAACATGGTGAAACCCCGTCTCTACTAAAAATACAAAAATTAGCCGGGCGTGGTGGCGCGCGCCTGTAATCCCAGCTACTCGGGAGGCTGAGGCAGGAGAATCGCTTGAACCCGGGAGGCGGAGGTTGCAGTGAGCCGAGATCGCGCCACTGCACTCCAGCCTGGGCGACAGAGCGAGACTCCGTCTCAAAAA"
let iub = [["a", 0.27], ["c", 0.12], ["g", 0.12], ["t", 0.27], ["B", 0.02], ["D", 0.02],
    ["H", 0.02], ["K", 0.02], ["M", 0.02], ["N", 0.02], ["R", 0.02], ["S", 0.02], ["V", 0.02],
    ["W", 0.02], ["Y", 0.02]]
let homosapiens = [["a", 0.3029549426680], ["c", 0.1979883004921], ["g", 0.1975473066391],
    ["t", 0.3015094502008]]
let last = 42

fn random(max) {
    last = (last * 3877 + 29573) % 139968
    return max * last / 139968.0
}

fn repeat_fasta(id, desc, s, n) {
    print(">" + id + " " + desc)
    let k = len(s)
    let s2 = s + s
    let i = 0
    while n > 0 {
        let m = n
        if m > 60 { m = 60 }
        print(s2[i:i + m])
        i = i + m
        if i >= k { i = i - k }
        n = n - m
    }
}

fn random_fasta(id, desc, table, n) {
    print(">" + id + " " + desc)
    let chars = []
    let probs = []
    let acc = 0.0
    for e in table {
        acc = acc + e[1]
        push(chars, e[0])
        push(probs, acc)
    }
    let nt = len(table)
    let line = vec(60, "")
    while n > 0 {
        let m = n
        if m > 60 { m = 60 }
        for i in 0..m {
            let r = random(1.0)
            let j = 0
            while j < nt - 1 and probs[j] < r { j = j + 1 }
            line[i] = chars[j]
        }
        if m < 60 { print(join(line[0:m], "")) } else { print(join(line, "")) }
        n = n - m
    }
}

let n = int(args()[0])
repeat_fasta("ONE", "Homo sapiens alu", alu, 2 * n)
random_fasta("TWO", "IUB ambiguity codes", iub, 3 * n)
random_fasta("THREE", "Homo sapiens frequency", homosapiens, 5 * n)
