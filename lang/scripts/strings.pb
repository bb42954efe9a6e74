// The string builtins at their edges: split, join, str, int, find and chr read strings in
// place and make their results straight from them; bytes that are not UTF-8 take the path
// that reads them as text (a replacement character for each bad byte).
print(split("a,b,,c", ","), split("", ","), split("abc", ""), split("aXYbXY", "XY"))
print(split("héllo wörld", "ö"), split(",", ","), split("abc", "abcd"))
let bad = from_bytes([255, 44, 97])
print(len(split(bad, ",")), len(split(bad, ",")[0]), split(bad, ",")[1])
print(join(["a", "b", "c"], "-"), join([], ","), join(["x"], ", "), len(join([bad, bad], "")))
print(str(0), str(-5), str(1234567890123), str(-2305843009213693951 - 1), str(1.5), str(nil))
print(int("42"), int(" -7 "), int("0"), int("2305843009213693951"))
print(find("hello", "ll"), find("hello", ""), find("hello", "z"), find("", "a"))
print(find("aaab", "ab"), find("ab", "abc"), find("abab", "b"), find(bad, "a"))
print(chr(97), chr(233), len(chr(8364)))
for s in ["x1", "99999999999999999999", "2305843009213693952", ""] {
    try { print(int(s)) } catch e { print(e) }
}
try { print(join([1], ",")) } catch e { print(e) }
try { print(split(1, ",")) } catch e { print(e) }
