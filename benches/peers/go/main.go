// stress-go: the Go peer of safepoint's `stress` benchmark tool.
//
// Same command line as `cargo run --release -p safepoint-benches --bin stress --
// WORKLOAD ARGS...` and the same output convention (benches/src/report.rs): one
// readable line, then, last, exactly one JSON line
// {"workload":"...","args":"...",field:value,...}. Integers print as integers,
// reals with 3 decimals in the JSON and 2 in the readable line.
//
// Standard library only: there is no module proxy to fetch anything else.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

const usage = `usage: stress-go WORKLOAD ARGS...
  spawn N [BATCH]    spawn and join N goroutines             -> ns_per_op
  yield N            N yields, two goroutines on one P       -> ns_per_op
  stw K poll|nopoll  400 stops with K spinners               -> p50_us p99_us max_us
  parked N           N goroutines parked at once             -> rss_kb_per_g
  pingpong N         N round trips over two unbuffered chans -> ns_per_op
  chan N             N items through a 128-slot channel      -> ns_per_op
  mutex N            N lock+unlock, 4 goroutines on 2 Ps     -> ns_per_op
  timers N           N goroutines sleeping 1 ms at once      -> p50_late_us p99_late_us max_late_us
  binary-trees N     Benchmarks Game binary-trees            -> wall_ms peak_rss_kb gc_cycles p99_pause_us max_pause_us
  gcbench            Boehm's GCBench shape                   -> (same as binary-trees)
  churn G            G goroutines churning depth-8 trees     -> (same) + check
  gpause G           G parked goroutines holding small trees, one churning, 50 collections
                     -> cycle_ms cycle_us_per_g p50_pause_us p99_pause_us max_pause_us gc_cycles
  markrate MB        mark MB of shuffled small objects       -> mb_per_s mark_ms
  all                every workload above at default sizes`

// field is one figure of a result; value is int64, float64 or string.
type field struct {
	key   string
	value any
}

// emit prints the readable line, then the JSON line, last (as report.rs does).
func emit(workload string, args []string, fields []field) {
	a := strings.Join(args, " ")
	var human, js strings.Builder
	fmt.Fprintf(&human, "%-10s %-16s", workload, a)
	fmt.Fprintf(&js, `{"workload":"%s","args":"%s"`, workload, a)
	for _, f := range fields {
		switch v := f.value.(type) {
		case int:
			fmt.Fprintf(&human, "  %s=%d", f.key, v)
			fmt.Fprintf(&js, `,"%s":%d`, f.key, v)
		case int64:
			fmt.Fprintf(&human, "  %s=%d", f.key, v)
			fmt.Fprintf(&js, `,"%s":%d`, f.key, v)
		case uint64:
			fmt.Fprintf(&human, "  %s=%d", f.key, v)
			fmt.Fprintf(&js, `,"%s":%d`, f.key, v)
		case float64:
			fmt.Fprintf(&human, "  %s=%.2f", f.key, v)
			fmt.Fprintf(&js, `,"%s":%.3f`, f.key, v)
		case string:
			fmt.Fprintf(&human, "  %s=%s", f.key, v)
			fmt.Fprintf(&js, `,"%s":"%s"`, f.key, v)
		default:
			panic(fmt.Sprintf("field %s: unsupported type %T", f.key, v))
		}
	}
	js.WriteString("}")
	fmt.Println(human.String())
	fmt.Println(js.String())
}

// argNum parses argument i as a number, or returns def (as report.rs's arg_num).
func argNum(args []string, i int, def int64) int64 {
	if i < len(args) {
		if v, err := strconv.ParseInt(args[i], 10, 64); err == nil {
			return v
		}
	}
	return def
}

// argStr returns argument i, or def.
func argStr(args []string, i int, def string) string {
	if i < len(args) {
		return args[i]
	}
	return def
}

var workloads = map[string]func(args []string){
	"spawn":        spawn,
	"yield":        yield,
	"stw":          stw,
	"parked":       parked,
	"pingpong":     pingpong,
	"chan":         chanWorkload,
	"mutex":        mutex,
	"timers":       timers,
	"binary-trees": binaryTrees,
	"gcbench":      gcbench,
	"churn":        churn,
	"gpause":       gpause,
	"markrate":     markrate,
}

// defaults are the sizes `all` runs (and the compare script's suites use).
var defaults = [][]string{
	{"spawn", "200000"},
	{"yield", "1000000"},
	{"stw", "2", "poll"},
	{"parked", "100000"},
	{"pingpong", "200000"},
	{"chan", "2000000"},
	{"mutex", "4000000"},
	{"timers", "10000"},
	{"binary-trees", "21"},
	{"gcbench"},
	{"churn", "1000"},
	{"markrate", "256"},
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	w, args := os.Args[1], os.Args[2:]
	if w == "all" {
		// Each workload in its own process, so one's heap and GOMAXPROCS
		// setting don't leak into the next.
		for _, d := range defaults {
			runChild(d)
		}
		return
	}
	f, ok := workloads[w]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown workload %q\n%s\n", w, usage)
		os.Exit(2)
	}
	f(args)
}
