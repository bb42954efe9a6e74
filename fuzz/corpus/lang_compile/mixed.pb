let x = {a: [1, 2.5, "s"], b: fn() { return nil }}
select {
case v = <-c { }
default { }
}
