// Go's concurrent prime sieve: a pipeline of filter goroutines, one per prime found.
// Prints the first 100 primes.

fn generate(ch) {
    let i = 2
    while true {
        ch <- i
        i = i + 1
    }
}

fn filter(src, dst, prime) {
    for i in src {
        if i % prime != 0 { dst <- i }
    }
}

let ch = chan()
go generate(ch)
for i in 0..100 {
    let prime = <-ch
    print(prime)
    let next = chan()
    go filter(ch, next, prime)
    ch = next
}
