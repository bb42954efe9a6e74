// String building: numbers to text, concatenation, joining, splitting and searching.
// pebble run strings.pb N
let n = int(args()[0])
let parts = []
for i in 0..n {
    push(parts, "item" + str(i) + ":" + str(i * i % 97))
}
let s = join(parts, ",")
let fields = split(s, ",")
let total = 0
let longest = ""
for f in fields {
    let kv = split(f, ":")
    total = total + int(kv[1])
    if len(kv[0]) > len(longest) { longest = kv[0] }
}
let line = ""
for i in 0..2000 { line = line + chr(97 + i % 26) }
let hits = 0
for i in 0..200 {
    if find(s, "item" + str(i * 7) + ":") >= 0 { hits = hits + 1 }
}
print(len(s), len(fields), total, longest, len(line), line[0:30], hits)
