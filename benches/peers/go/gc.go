package main

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// gcRun measures a GC workload: wall time, peak RSS, GC cycles and pauses.
type gcRun struct {
	t0     time.Time
	pauses hist
	cycles uint64
}

// pauseMetric is the runtime's histogram of every GC stop-the-world pause
// (each cycle has two: sweep termination and mark termination), from the
// stop request until the world is restarted.
const pauseMetric = "/sched/pauses/total/gc:seconds"

func startGCRun() gcRun {
	return gcRun{t0: time.Now(), pauses: readHist(pauseMetric), cycles: readUint("/gc/cycles/total:gc-cycles")}
}

// fields: wall_ms (this workload, in process), peak_rss_kb (VmHWM, this
// process's own peak), gc_cycles (completed GC cycles: /gc/cycles/total, which is
// MemStats.NumGC without the extra stop ReadMemStats would cost),
// p99_pause_us and max_pause_us over the individual GC pauses of the run
// (pauseMetric; bucket upper bounds, see hist.percentileUs: up to 25% coarse).
func (r gcRun) fields() []field {
	wall := msSince(r.t0)
	h := readHist(pauseMetric).since(r.pauses)
	return []field{
		{"wall_ms", wall},
		{"peak_rss_kb", peakRSSKB()},
		{"gc_cycles", readUint("/gc/cycles/total:gc-cycles") - r.cycles},
		{"p99_pause_us", h.percentileUs(99)},
		{"max_pause_us", h.percentileUs(100)},
	}
}

// ---- binary-trees ---------------------------------------------------------

// btNode is the Benchmarks Game tree node: two children, no payload.
type btNode struct{ left, right *btNode }

// btBottomUp builds a perfect tree of depth d (depth 0 is one leaf node).
func btBottomUp(d int) *btNode {
	if d <= 0 {
		return &btNode{}
	}
	return &btNode{btBottomUp(d - 1), btBottomUp(d - 1)}
}

// check counts the nodes.
func (n *btNode) check() int {
	if n.left == nil {
		return 1
	}
	return 1 + n.left.check() + n.right.check()
}

// binary-trees N: the Benchmarks Game program (the usual Go form: one
// goroutine per depth of the depth loop, results printed in depth order).
// Prints the canonical output lines, then the summary and JSON lines.
func binaryTrees(args []string) {
	n := int(argNum(args, 0, 21))
	r := startGCRun()
	const minDepth = 4
	maxDepth := max(minDepth+2, n)
	stretch := maxDepth + 1
	fmt.Printf("stretch tree of depth %d\t check: %d\n", stretch, btBottomUp(stretch).check())

	long := btBottomUp(maxDepth)
	out := make([]string, (maxDepth-minDepth)/2+1)
	var wg sync.WaitGroup
	for d := minDepth; d <= maxDepth; d += 2 {
		wg.Add(1)
		go func(d int) {
			defer wg.Done()
			iters := 1 << (maxDepth - d + minDepth)
			chk := 0
			for i := 0; i < iters; i++ {
				chk += btBottomUp(d).check()
			}
			out[(d-minDepth)/2] = fmt.Sprintf("%d\t trees of depth %d\t check: %d\n", iters, d, chk)
		}(d)
	}
	wg.Wait()
	for _, s := range out {
		fmt.Print(s)
	}
	fmt.Printf("long lived tree of depth %d\t check: %d\n", maxDepth, long.check())
	emit("binary-trees", args, r.fields())
}

// ---- gcbench --------------------------------------------------------------

// gbNode is GCBench's node: two children and two (unused) ints.
type gbNode struct {
	left, right *gbNode
	i, j        int32
}

const (
	gbStretchDepth   = 18
	gbLongLivedDepth = 16
	gbArraySize      = 500000
	gbMinDepth       = 4
	gbMaxDepth       = 16
)

func gbTreeSize(d int) int { return (1 << (d + 1)) - 1 }

// gbNumIters: as many trees of depth d as make twice a stretch tree's nodes.
func gbNumIters(d int) int { return 2 * gbTreeSize(gbStretchDepth) / gbTreeSize(d) }

// gbPopulate grows a tree of depth d top-down under an existing node.
func gbPopulate(d int, n *gbNode) {
	if d <= 0 {
		return
	}
	d--
	n.left, n.right = &gbNode{}, &gbNode{}
	gbPopulate(d, n.left)
	gbPopulate(d, n.right)
}

// gbMakeTree builds a tree of depth d bottom-up.
func gbMakeTree(d int) *gbNode {
	if d <= 0 {
		return &gbNode{}
	}
	return &gbNode{left: gbMakeTree(d - 1), right: gbMakeTree(d - 1)}
}

// gbTemp holds the tree being built, as GCBench's tempTree local does
// (a package variable, so the compiler can't keep a root on the stack).
var gbTemp *gbNode

// gcbench: Boehm's GCBench shape, single-threaded: a stretch tree of depth
// 18 built and dropped; a long-lived tree of depth 16 (top-down) and an
// array of 500,000 doubles (first half set to 1/i) kept to the end; then for
// depth 4, 6, ..., 16: gbNumIters(depth) trees built top-down
// (gbPopulate) and as many bottom-up (gbMakeTree), each dropped at once.
func gcbench(args []string) {
	r := startGCRun()
	gbTemp = gbMakeTree(gbStretchDepth)
	gbTemp = nil

	long := &gbNode{}
	gbPopulate(gbLongLivedDepth, long)
	array := make([]float64, gbArraySize)
	for i := 0; i < gbArraySize/2; i++ {
		array[i] = 1.0 / float64(i)
	}

	for d := gbMinDepth; d <= gbMaxDepth; d += 2 {
		iters := gbNumIters(d)
		for i := 0; i < iters; i++ {
			gbTemp = &gbNode{}
			gbPopulate(d, gbTemp)
			gbTemp = nil
		}
		for i := 0; i < iters; i++ {
			gbTemp = gbMakeTree(d)
			gbTemp = nil
		}
	}
	if long.left == nil || array[1000] != 1.0/1000 {
		fmt.Fprintln(os.Stderr, "gcbench: failed (long-lived data lost)")
		os.Exit(1)
	}
	runtime.KeepAlive(long)
	runtime.KeepAlive(array)
	emit("gcbench", args, r.fields())
}

// ---- churn ----------------------------------------------------------------

// chNode is churn's node. The tree definition (ours must match it):
//
//   - a tree of depth d has d+1 levels: the root has height d, the leaves
//     height 0 (depth 8 = 511 nodes, depth 14 = 32767 nodes);
//   - a leaf holds value 1; a node of height h >= 1 holds value h;
//   - a tree's sum is the sum of all its nodes' values, so
//     sum(0) = 1 and sum(h) = h + 2*sum(h-1): sum(8) = 758, sum(14) = 49136.
type chNode struct {
	left, right *chNode
	value       int64
}

func chBuild(h int) *chNode {
	if h == 0 {
		return &chNode{value: 1}
	}
	return &chNode{left: chBuild(h - 1), right: chBuild(h - 1), value: int64(h)}
}

func (n *chNode) sum() int64 {
	if n.left == nil {
		return n.value
	}
	return n.value + n.left.sum() + n.right.sum()
}

func chSumFormula(h int) int64 {
	s := int64(1)
	for i := 1; i <= h; i++ {
		s = int64(i) + 2*s
	}
	return s
}

const (
	churnLongTrees = 64
	churnLongDepth = 14
	churnTrees     = 200
	churnTreeDepth = 8
)

// churnLong is the long-lived set, reachable from a global throughout.
var churnLong []*chNode

// churn G: first 64 trees of depth 14 are built and kept alive throughout
// (a global); then G goroutines are started at once, each building 200
// trees of depth 8 one after another, summing each and dropping it. check
// is the total of the G*200 sums (the long-lived trees are not counted:
// their sums are only verified at the end), so check = G*200*758
// (151600000 at G = 1000). GOMAXPROCS default. wall_ms covers building the
// long-lived set too.
func churn(args []string) {
	g := argNum(args, 0, 1000)
	r := startGCRun()
	churnLong = make([]*chNode, churnLongTrees)
	for i := range churnLong {
		churnLong[i] = chBuild(churnLongDepth)
	}
	var total atomic.Int64
	var wg sync.WaitGroup
	for i := int64(0); i < g; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s int64
			for t := 0; t < churnTrees; t++ {
				s += chBuild(churnTreeDepth).sum()
			}
			total.Add(s)
		}()
	}
	wg.Wait()
	want := chSumFormula(churnLongDepth)
	for _, t := range churnLong {
		if t.sum() != want {
			fmt.Fprintln(os.Stderr, "churn: long-lived tree corrupted")
			os.Exit(1)
		}
	}
	if total.Load() != g*churnTrees*chSumFormula(churnTreeDepth) {
		fmt.Fprintln(os.Stderr, "churn: wrong check")
		os.Exit(1)
	}
	emit("churn", args, append(r.fields(), field{"check", total.Load()}))
}

// ---- markrate -------------------------------------------------------------

// mrNode is markrate's object: 32 bytes, two pointers and two words.
type mrNode struct {
	left, right *mrNode
	a, b        int64
}

const markrateChildEnv = "STRESS_GO_MARKRATE_CHILD"

var gctraceClock = regexp.MustCompile(`: ([0-9.]+)\+([0-9.]+)\+([0-9.]+) ms clock.*?(\d+)->(\d+)->(\d+) MB`)

// markrate MB -> mb_per_s mark_ms gc_ms (approximate, as Go exposes no mark
// timer): MB megabytes of 32-byte objects (MB*32768 of them) are allocated
// in a row, then linked in shuffled order into one binary tree — the object
// in (shuffled) slot i points at those in slots 2i+1 and 2i+2 — so marking
// follows pointers to random addresses, with plenty of width for parallel
// mark workers. Only the root stays reachable. Then runtime.GC() twice (the
// first one frees the shuffling array and settles the heap); the figure is
// the SECOND cycle's concurrent mark phase, wall clock, as GODEBUG=gctrace=1
// prints it (the middle of "A+B+C ms clock"); to read that the program runs
// itself again as a child with gctrace on and parses the child's stderr.
// mb_per_s = MB / mark seconds; gc_ms is the wall time of that runtime.GC()
// call (which includes both pauses and the sweep). GOMAXPROCS default.
func markrate(args []string) {
	mb := argNum(args, 0, 256)
	if os.Getenv(markrateChildEnv) != "" {
		markrateChild(mb)
		return
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "markrate:", err)
		os.Exit(1)
	}
	cmd := exec.Command(exe, append([]string{"markrate"}, args...)...)
	godebug := "gctrace=1"
	if old := os.Getenv("GODEBUG"); old != "" {
		godebug = old + "," + godebug
	}
	cmd.Env = append(os.Environ(), "GODEBUG="+godebug, markrateChildEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		fmt.Fprintf(os.Stderr, "markrate child: %v\n%s", err, stderr.String())
		os.Exit(1)
	}
	gcMs := -1.0
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "gc_ms="); ok {
			gcMs, _ = strconv.ParseFloat(v, 64)
		}
	}
	var last string
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.Contains(line, "(forced)") {
			last = line
		}
	}
	m := gctraceClock.FindStringSubmatch(last)
	if m == nil || gcMs < 0 {
		fmt.Fprintf(os.Stderr, "markrate: could not read the child's gctrace:\n%s%s", out, stderr.String())
		os.Exit(1)
	}
	markMs, _ := strconv.ParseFloat(m[2], 64)
	if markMs <= 0 {
		markMs = math.SmallestNonzeroFloat64
	}
	emit("markrate", args, []field{
		{"mb_per_s", float64(mb) / (markMs / 1000)},
		{"mark_ms", markMs},
		{"gc_ms", gcMs},
	})
}

func markrateChild(mb int64) {
	count := int(mb << 20 / 32)
	nodes := make([]*mrNode, count)
	for i := range nodes {
		nodes[i] = &mrNode{a: int64(i)}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	rng.Shuffle(count, func(i, j int) { nodes[i], nodes[j] = nodes[j], nodes[i] })
	for i, n := range nodes {
		if l := 2*i + 1; l < count {
			n.left = nodes[l]
		}
		if r := 2*i + 2; r < count {
			n.right = nodes[r]
		}
	}
	root := nodes[0]
	nodes = nil
	runtime.GC()
	t0 := time.Now()
	runtime.GC()
	gcMs := msSince(t0)
	runtime.KeepAlive(root)
	fmt.Printf("markrate-child gc_ms=%.3f\n", gcMs)
}

// ---- gpause ---------------------------------------------------------------

// gpNode is gpause's tree node: two children, no payload (binary-trees' node).
type gpNode struct{ left, right *gpNode }

func gpBuild(d int) *gpNode {
	if d == 0 {
		return &gpNode{}
	}
	return &gpNode{left: gpBuild(d - 1), right: gpBuild(d - 1)}
}

func (n *gpNode) count() int64 {
	if n.left == nil {
		return 1
	}
	return 1 + n.left.count() + n.right.count()
}

const (
	gpCycles       = 50
	gpParkedDepth  = 3
	gpChurnDepth   = 6
	gpParkedNodes  = 1<<(gpParkedDepth+1) - 1
	gpChurnedNodes = 1<<(gpChurnDepth+1) - 1
)

// gpause G: G goroutines each build a tree of depth 3 (15 nodes, kept in a
// local variable) and park receiving on one channel; one more goroutine
// builds, counts and drops trees of depth 6 in a loop. When all G are
// parked, 50 runtime.GC() calls in a row (each returns once the cycle and
// its sweep are done), each timed; then the channel is closed and every
// parked goroutine checks its tree. cycle_ms is the median of the 50 wall
// times, cycle_us_per_g that over G in microseconds; the pause percentiles
// are over every GC stop-the-world recorded while the 50 ran (pauseMetric:
// two per cycle, bucket upper bounds); gc_cycles counts those cycles.
// GOMAXPROCS default.
func gpause(args []string) {
	g := argNum(args, 0, 10000)
	park := make(chan struct{})
	var ready, bad atomic.Int64
	var wg sync.WaitGroup
	for i := int64(0); i < g; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := gpBuild(gpParkedDepth)
			ready.Add(1)
			<-park
			if t.count() != gpParkedNodes {
				bad.Add(1)
			}
		}()
	}
	for ready.Load() < g {
		time.Sleep(time.Millisecond)
	}
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		for !stop.Load() {
			if gpBuild(gpChurnDepth).count() != gpChurnedNodes {
				fmt.Fprintln(os.Stderr, "gpause: churned tree corrupted")
				os.Exit(1)
			}
		}
		close(done)
	}()
	p0 := readHist(pauseMetric)
	c0 := readUint("/gc/cycles/total:gc-cycles")
	times := make([]float64, 0, gpCycles)
	for i := 0; i < gpCycles; i++ {
		t := time.Now()
		runtime.GC()
		times = append(times, msSince(t))
	}
	h := readHist(pauseMetric).since(p0)
	cycles := readUint("/gc/cycles/total:gc-cycles") - c0
	stop.Store(true)
	<-done
	close(park)
	wg.Wait()
	if bad.Load() != 0 {
		fmt.Fprintln(os.Stderr, "gpause: a parked goroutine's tree changed")
		os.Exit(1)
	}
	cycleMs := percentile(times, 50)
	emit("gpause", args, []field{
		{"cycle_ms", cycleMs},
		{"cycle_us_per_g", cycleMs * 1e3 / float64(max(g, 1))},
		{"p50_pause_us", h.percentileUs(50)},
		{"p99_pause_us", h.percentileUs(99)},
		{"max_pause_us", h.percentileUs(100)},
		{"gc_cycles", cycles},
	})
}
