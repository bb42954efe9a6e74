package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"
	"time"
)

// runChild runs this binary again with args, passing its output through.
func runChild(args []string) {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stress-go:", err)
		os.Exit(1)
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "stress-go %s: %v\n", strings.Join(args, " "), err)
	}
}

// rssKB is the resident set size of this process in KiB, from /proc/self/statm
// (second field, in pages), as report.rs's rss_kb.
func rssKB() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize()) / 1024
}

// peakRSSKB is VmHWM of /proc/self/status, KiB: this address space's own
// peak (getrusage's ru_maxrss would carry a large parent's peak across exec).
func peakRSSKB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// percentile is report.rs's percentile: the nearest-rank element
// round(p/100*(n-1)) of v (sorted here), in v's unit.
func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	sort.Float64s(v)
	i := int(math.Round(p / 100 * float64(len(v)-1)))
	if i >= len(v) {
		i = len(v) - 1
	}
	return v[i]
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Nanoseconds()) / 1e6 }

// hist is a snapshot of a runtime/metrics histogram of seconds.
type hist struct {
	counts  []uint64
	buckets []float64 // len(counts)+1 boundaries
}

// readHist reads the runtime/metrics histogram called name.
func readHist(name string) hist {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		fmt.Fprintf(os.Stderr, "stress-go: metric %s not supported by this Go\n", name)
		os.Exit(1)
	}
	h := s[0].Value.Float64Histogram()
	return hist{counts: append([]uint64(nil), h.Counts...), buckets: h.Buckets}
}

// since is the histogram of what was recorded after the snapshot old.
func (h hist) since(old hist) hist {
	d := hist{counts: make([]uint64, len(h.counts)), buckets: h.buckets}
	for i := range h.counts {
		d.counts[i] = h.counts[i]
		if i < len(old.counts) {
			d.counts[i] -= old.counts[i]
		}
	}
	return d
}

func (h hist) total() uint64 {
	var n uint64
	for _, c := range h.counts {
		n += c
	}
	return n
}

// percentileUs is the p-th percentile of h in microseconds, picked like
// report.rs's percentile (the sample of rank round(p/100*(n-1))), and reported
// as the UPPER bound of the bucket that sample fell in: the runtime keeps
// only bucket counts (4 sub-buckets per power of two, so a bound is at most
// 25% above the true value). p = 100 gives the upper bound of the highest
// non-empty bucket, i.e. the max. For the open-ended last bucket the lower
// bound is used.
func (h hist) percentileUs(p float64) float64 {
	n := h.total()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Round(p / 100 * float64(n-1)))
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum > rank {
			ub := h.buckets[i+1]
			if math.IsInf(ub, 1) {
				ub = h.buckets[i]
			}
			return ub * 1e6
		}
	}
	return 0
}

// readUint reads a runtime/metrics counter.
func readUint(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
