// A map-heavy word count: pseudo-random words, counted in a map, the most frequent printed.
// pebble run word_count.pb N
let syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zu", "pe", "qua", "ri"]
let seed = 7
fn next(k) {
    seed = seed * 48271 % 2147483647
    return seed % k
}
let n = int(args()[0])
let counts = {}
for i in 0..n {
    let w = syllables[next(12)] + syllables[next(12)]
    if next(3) == 0 { w = w + syllables[next(12)] }
    if has(counts, w) { counts[w] = counts[w] + 1 } else { counts[w] = 1 }
}
let words = keys(counts)
sort(words, fn(a, b) {
    if counts[a] != counts[b] { return counts[a] > counts[b] }
    return a < b
})
print(len(words), "distinct words")
for i in 0..10 { print(words[i], counts[words[i]]) }
