// Language features, each with its exact output (lang/tests/scripts.rs checks it in every
// collector mode at 1 and 2 Ps).

// Bitwise and shift operators on integers, with Go's precedence: & << >> bind as * does,
// | and ^ as + does.
print(6 & 3, 6 | 3, 6 ^ 3, 1 << 10, -16 >> 2, -1 >> 100, 3 + 4 << 1, 1 | 2 ^ 7)
let mask = 255
print(mask & 15 == 15, (mask >> 4) & 15)

// Float literals with exponents.
print(1e3, 2.5e-3, 6E+2, 1.5e1 * 2)

// write: no separators, no newline; format: Go's verbs.
write("x=", 1, ", y=", 2.5)
write("\n")
print(format("%.9f|%5d|%-4s|%x|%v|%05.1f|%q", 3.14159265358979, 42, "ab", 255, [1, 2], -2.5, "hi"))

// A statement ends at the end of its line: a receive on the next line is a statement of its
// own, not a send.
let done = chan(1)
done <- 7
print("got")
<-done
print("empty again:", len(done), "of", cap(done))

// yield lets the other goroutines run.
let turns = chan(10)
go fn() {
  for i in 0..3 {
    turns <- i
    yield()
  }
}()
print(<-turns, <-turns, <-turns)

// A select case on a nil channel is never ready: it turns the case off.
let ready = chan(1)
ready <- "ready"
let off = nil
select {
case v = <-off { print("nil channel received", v) }
case v = <-ready { print("select:", v) }
}
select {
case off <- 1 { print("nil channel sent") }
default { print("nothing ready but nil") }
}

// Strings: bytes by index, slices (of vectors too), and the string builtins.
let s = "hello, world"
print(s[0], s[1:5], s[:5], s[7:], len(s[:]), [1, 2, 3, 4][1:3])
print(ord("A"), chr(955), find(s, "world"), find(s, "xyz"))
print(split("a,b,,c", ","), split("héj", ""), join(["x", "y", "z"], "-"))
print(bytes("Hi"), from_bytes([80, 101, 98]), float("2.5") * 2, float(" 1e3 "))
let v = [3, 1.5, 2, -7]
sort(v)
let w = ["pear", "apple", "fig"]
sort(w)
print(v, w)
