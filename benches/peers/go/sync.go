package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// pingpong N -> ns_per_op: N round trips between the main goroutine and an
// echo goroutine over two unbuffered channels (main sends on ping, echo
// receives and sends back on pong, main receives). GOMAXPROCS default.
// ns_per_op is wall time / N, i.e. per round trip (two channel hand-offs).
func pingpong(args []string) {
	n := argNum(args, 0, 200000)
	ping, pong := make(chan int64), make(chan int64)
	go func() {
		for v := range ping {
			pong <- v
		}
	}()
	t0 := time.Now()
	for i := int64(0); i < n; i++ {
		ping <- i
		if <-pong != i {
			panic("pingpong: wrong value")
		}
	}
	el := time.Since(t0)
	close(ping)
	emit("pingpong", args, []field{{"ns_per_op", float64(el.Nanoseconds()) / float64(n)}})
}

// chan N -> ns_per_op: GOMAXPROCS(2); one goroutine sends N integers into a
// channel with a 128-slot buffer, another receives them. ns_per_op is wall
// time / N, i.e. per item (one send plus one receive).
func chanWorkload(args []string) {
	n := argNum(args, 0, 2000000)
	runtime.GOMAXPROCS(2)
	ch := make(chan int64, 128)
	start := make(chan struct{})
	var sum int64
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		<-start
		for i := int64(0); i < n; i++ {
			ch <- i
		}
	}()
	go func() {
		defer wg.Done()
		<-start
		var s int64
		for i := int64(0); i < n; i++ {
			s += <-ch
		}
		sum = s
	}()
	t0 := time.Now()
	close(start)
	wg.Wait()
	el := time.Since(t0)
	if sum != n*(n-1)/2 {
		fmt.Fprintln(os.Stderr, "chan: wrong sum")
		os.Exit(1)
	}
	emit("chan", args, []field{{"ns_per_op", float64(el.Nanoseconds()) / float64(n)}})
}

// mutex N -> ns_per_op: GOMAXPROCS(2); 4 goroutines contend on one
// sync.Mutex, each doing N/4 rounds of Lock; counter++; Unlock. ns_per_op
// is wall time / (total rounds).
func mutex(args []string) {
	n := argNum(args, 0, 4000000)
	runtime.GOMAXPROCS(2)
	const workers = 4
	per := n / workers
	var mu sync.Mutex
	var counter int64
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := int64(0); i < per; i++ {
				mu.Lock()
				counter++
				mu.Unlock()
			}
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	el := time.Since(t0)
	if counter != per*workers {
		fmt.Fprintln(os.Stderr, "mutex: lost updates")
		os.Exit(1)
	}
	emit("mutex", args, []field{{"ns_per_op", float64(el.Nanoseconds()) / float64(per*workers)}})
}

// timers N -> p50_late_us p99_late_us max_late_us: N goroutines (10,000 by
// default) are released at once; each notes the time, sleeps 1 ms
// (time.Sleep), and records how much longer than 1 ms it was away
// (lateness = elapsed - 1 ms: timer slack plus the wait for a P once woken).
// Percentiles are exact over the N samples (report.rs's nearest rank).
// GOMAXPROCS default.
func timers(args []string) {
	n := argNum(args, 0, 10000)
	late := make([]float64, n)
	start := make(chan struct{})
	var ready atomic.Int64
	var wg sync.WaitGroup
	for i := int64(0); i < n; i++ {
		wg.Add(1)
		go func(i int64) {
			defer wg.Done()
			ready.Add(1)
			<-start
			t := time.Now()
			time.Sleep(time.Millisecond)
			late[i] = float64((time.Since(t) - time.Millisecond).Nanoseconds()) / 1e3
		}(i)
	}
	for ready.Load() < n {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(5 * time.Millisecond)
	close(start)
	wg.Wait()
	emit("timers", args, []field{
		{"p50_late_us", percentile(late, 50)},
		{"p99_late_us", percentile(late, 99)},
		{"max_late_us", percentile(late, 100)},
	})
}
