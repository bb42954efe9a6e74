package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// spawn N [BATCH] -> ns_per_op: wall time / N to spawn and join one goroutine.
//
// "Spawn and join one goroutine" is taken literally: with BATCH = 1 (the
// default, and what ours is to do) every iteration is
//
//	wg.Add(1); go func() { wg.Done() }(); wg.Wait()
//
// so each goroutine is created, scheduled, run, exited and joined before the
// next one is spawned; the figure is that whole round, with no overlap
// between goroutines (in Go the new goroutine goes to the spawning P's
// runnext slot and runs when the spawner blocks in Wait). With BATCH > 1 the
// loop spawns BATCH goroutines and then waits for all of them (the
// throughput form, where the other P can steal and run them in parallel);
// N is rounded down to a multiple of BATCH.
func spawn(args []string) {
	n := argNum(args, 0, 200000)
	batch := argNum(args, 1, 1)
	if batch < 1 {
		batch = 1
	}
	rounds := n / batch
	n = rounds * batch
	if n == 0 {
		fmt.Fprintln(os.Stderr, "spawn: N must be at least BATCH")
		os.Exit(2)
	}
	var wg sync.WaitGroup
	t0 := time.Now()
	for r := int64(0); r < rounds; r++ {
		for i := int64(0); i < batch; i++ {
			wg.Add(1)
			go func() { wg.Done() }()
		}
		wg.Wait()
	}
	el := time.Since(t0)
	emit("spawn", args, []field{{"ns_per_op", float64(el.Nanoseconds()) / float64(n)}})
}

// yield N -> ns_per_op: GOMAXPROCS(1), two goroutines each calling
// runtime.Gosched() N/2 times, so they hand the one P back and forth; wall
// time / (number of yields).
func yield(args []string) {
	n := argNum(args, 0, 1000000)
	runtime.GOMAXPROCS(1)
	per := n / 2
	var wg sync.WaitGroup
	start := make(chan struct{})
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := int64(0); i < per; i++ {
				runtime.Gosched()
			}
		}()
	}
	runtime.Gosched() // let both reach <-start
	t0 := time.Now()
	close(start)
	wg.Wait()
	el := time.Since(t0)
	emit("yield", args, []field{{"ns_per_op", float64(el.Nanoseconds()) / float64(2*per)}})
}

var spinSink atomic.Uint64

// pollPoint is the "tiny non-inlined function" of stw's poll mode. It must
// not be a leaf: Go's compiler drops the stack-bound check (which is where
// a goroutine notices a synchronous preemption request) from leaf functions
// with small frames, so pollPoint calls pollLeaf to keep its prologue check.
//
//go:noinline
func pollPoint(x uint64) uint64 { return pollLeaf(x) + 1 }

//go:noinline
func pollLeaf(x uint64) uint64 { return x ^ 0x5a }

const stwStops = 400

// stw K poll|nopoll -> p50_us p99_us max_us: K goroutines spin while the main
// goroutine requests 400 stop-the-worlds; the figure is the time from a stop
// request until every P is stopped.
//
// Spinners: `poll` calls pollPoint (a function with a stack-check prologue,
// i.e. a synchronous preemption point) every iteration; `nopoll` is a loop
// with no calls at all (an atomic load and an add) — note that Go still
// stops it, by asynchronous preemption (a signal). GOMAXPROCS is left at
// its default.
//
// The stops are runtime.ReadMemStats calls (each is one non-GC
// stop-the-world, reason "ReadMemStats"); the latencies come from the
// runtime's own histogram /sched/pauses/stopping/other:seconds (non-GC STW
// stopping time: from the stop request until all Ps are stopped), taken as
// the difference between snapshots before and after the 400 stops.
// Percentiles are bucket UPPER bounds (see hist.percentileUs: up to 25%
// coarse); max_us is the upper bound of the highest non-empty bucket.
func stw(args []string) {
	k := argNum(args, 0, 2)
	mode := argStr(args, 1, "poll")
	if mode != "poll" && mode != "nopoll" {
		fmt.Fprintln(os.Stderr, "stw: mode must be poll or nopoll")
		os.Exit(2)
	}
	var stop atomic.Bool
	var running atomic.Int64
	var wg sync.WaitGroup
	for i := int64(0); i < k; i++ {
		wg.Add(1)
		if mode == "poll" {
			go func() {
				defer wg.Done()
				running.Add(1)
				x := uint64(0)
				for !stop.Load() {
					x = pollPoint(x)
				}
				spinSink.Add(x)
			}()
		} else {
			go func() {
				defer wg.Done()
				running.Add(1)
				x := uint64(0)
				for !stop.Load() {
					x += 3
				}
				spinSink.Add(x)
			}()
		}
	}
	for running.Load() < k {
		runtime.Gosched()
	}
	time.Sleep(20 * time.Millisecond)
	const name = "/sched/pauses/stopping/other:seconds"
	before := readHist(name)
	var ms runtime.MemStats
	for i := 0; i < stwStops; i++ {
		runtime.ReadMemStats(&ms)
	}
	h := readHist(name).since(before)
	stop.Store(true)
	wg.Wait()
	if got := h.total(); got != stwStops {
		fmt.Fprintf(os.Stderr, "stw: note: %d non-GC stops recorded, expected %d\n", got, stwStops)
	}
	emit("stw", args, []field{
		{"p50_us", h.percentileUs(50)},
		{"p99_us", h.percentileUs(99)},
		{"max_us", h.percentileUs(100)},
	})
}

// parked N -> rss_kb_per_g: N goroutines blocked at once receiving from one
// channel; (RSS once all are blocked - RSS before spawning) / N, RSS from
// /proc/self/statm. A runtime.GC() runs first so the baseline is settled.
func parked(args []string) {
	n := argNum(args, 0, 100000)
	runtime.GC()
	before := rssKB()
	ch := make(chan struct{})
	var ready atomic.Int64
	var wg sync.WaitGroup
	for i := int64(0); i < n; i++ {
		wg.Add(1)
		go func() {
			ready.Add(1)
			<-ch
			wg.Done()
		}()
	}
	for ready.Load() < n {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // the last few reach the receive and park
	after := rssKB()
	close(ch)
	wg.Wait()
	emit("parked", args, []field{{"rss_kb_per_g", float64(after-before) / float64(n)}})
}
