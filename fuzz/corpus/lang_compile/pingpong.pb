// Two goroutines bat a ball (a map) back and forth over unbuffered channels; a third
// channel says when the game is over. Uses select with a default and a timeout-free loop.

fn player(name, table, done) {
    for ball in table {
        ball.hits = ball.hits + 1
        if ball.hits == 10 {
            done <- ball
            return nil
        }
        table <- ball
    }
}

let table = chan()
let done = chan()
go player("ping", table, done)
go player("pong", table, done)
table <- {hits: 0, by: "referee"}
let ball = <-done
print("ball hit", ball.hits, "times")

// select: whichever channel is ready; the default when none is.
let a = chan(1)
let b = chan(1)
select {
case v = <-a { print("a", v) }
case v = <-b { print("b", v) }
default { print("nothing ready") }
}
b <- "hello"
select {
case v = <-a { print("a", v) }
case v = <-b { print("b", v) }
}
select {
case a <- 42 { print("sent 42 on a") }
}
print("a holds", <-a)
close(a)
print("closed a gives", <-a)
