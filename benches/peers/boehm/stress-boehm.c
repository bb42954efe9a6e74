/* stress-boehm: the C peer on the Boehm-Demers-Weiser collector (libgc) of
 * safepoint's `stress` benchmark tool, for the GC workloads.
 *
 *   stress-boehm binary-trees N | gcbench | churn G
 *
 * Same output convention as benches/src/report.rs: one readable line, then,
 * last, exactly one JSON line {"workload":...,"args":...,fields...}.
 *
 * Fields: wall_ms (the workload, in process), peak_rss_kb (VmHWM,
 * this process's own peak), gc_cycles (GC_get_gc_no() difference), p99_pause_us and
 * max_pause_us. libgc is used as distributed (non-incremental, default
 * heap growth, parallel marking with its default marker count: one per
 * online CPU, or GC_MARKERS), so a collection stops the
 * world for its whole mark phase; a "pause" here is one stop: from
 * GC_EVENT_PRE_STOP_WORLD to GC_EVENT_POST_START_WORLD, timed with
 * CLOCK_MONOTONIC in a GC_set_on_collection_event callback. Those are exact
 * per-pause figures (not histogram buckets). Sweeping is lazy (done by the
 * allocating threads outside the pause) and is not counted as pause.
 */
#define GC_THREADS
#include <gc.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static const char *usage =
    "usage: stress-boehm WORKLOAD ARGS...\n"
    "  binary-trees N     Benchmarks Game binary-trees  -> wall_ms peak_rss_kb gc_cycles p99_pause_us max_pause_us\n"
    "  gcbench            Boehm's GCBench shape         -> (same)\n"
    "  churn G            G tasks churning depth-8 trees -> (same) + check\n";

/* ---- output ----------------------------------------------------------- */

enum kind { INT, FLOAT };
struct field {
    const char *key;
    enum kind kind;
    long long i;
    double f;
};

static char args_str[256];

static void emit(const char *workload, const struct field *fs, int n) {
    char human[1024], json[1024];
    int h = snprintf(human, sizeof human, "%-10s %-16s", workload, args_str);
    int j = snprintf(json, sizeof json, "{\"workload\":\"%s\",\"args\":\"%s\"", workload, args_str);
    for (int k = 0; k < n; k++) {
        if (fs[k].kind == INT) {
            h += snprintf(human + h, sizeof human - h, "  %s=%lld", fs[k].key, fs[k].i);
            j += snprintf(json + j, sizeof json - j, ",\"%s\":%lld", fs[k].key, fs[k].i);
        } else {
            h += snprintf(human + h, sizeof human - h, "  %s=%.2f", fs[k].key, fs[k].f);
            j += snprintf(json + j, sizeof json - j, ",\"%s\":%.3f", fs[k].key, fs[k].f);
        }
    }
    printf("%s\n%s}\n", human, json);
    fflush(stdout);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* VmHWM of /proc/self/status, KiB: this address space's own peak (getrusage's
 * ru_maxrss would carry a large parent's peak across exec). */
static long long peak_rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %lld", &kb) == 1) break;
    fclose(f);
    return kb;
}

/* ---- pauses ----------------------------------------------------------- */

#define MAX_PAUSES (1 << 20)
static double pauses_us[MAX_PAUSES];
static size_t npauses;
static double stop_started_ns;

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* Called by the collecting thread with the allocation lock held. */
static void on_gc_event(GC_EventType e) {
    if (e == GC_EVENT_PRE_STOP_WORLD) {
        stop_started_ns = now_ns();
    } else if (e == GC_EVENT_POST_START_WORLD && stop_started_ns > 0) {
        if (npauses < MAX_PAUSES) pauses_us[npauses++] = (now_ns() - stop_started_ns) / 1e3;
        stop_started_ns = 0;
    }
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* report.rs's percentile: nearest rank round(p/100*(n-1)) of the sorted values. */
static double percentile(double *v, size_t n, double p) {
    if (n == 0) return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

struct gc_run {
    double t0;
    GC_word cycles;
    size_t pauses;
};

static struct gc_run start_gc_run(void) {
    struct gc_run r = {now_ms(), GC_get_gc_no(), npauses};
    return r;
}

/* Fills the five common fields; returns how many. */
static int gc_fields(struct gc_run r, struct field *fs) {
    double wall = now_ms() - r.t0;
    GC_word cycles = GC_get_gc_no() - r.cycles;
    double *p = pauses_us + r.pauses;
    size_t n = npauses - r.pauses;
    fs[0] = (struct field){"wall_ms", FLOAT, 0, wall};
    fs[1] = (struct field){"peak_rss_kb", INT, peak_rss_kb(), 0};
    fs[2] = (struct field){"gc_cycles", INT, (long long)cycles, 0};
    fs[3] = (struct field){"p99_pause_us", FLOAT, 0, percentile(p, n, 99)};
    fs[4] = (struct field){"max_pause_us", FLOAT, 0, percentile(p, n, 100)};
    return 5;
}

/* ---- binary-trees ----------------------------------------------------- */

/* The Benchmarks Game tree node: two children, no payload. */
struct bt_node {
    struct bt_node *left, *right;
};

/* A perfect tree of depth d (depth 0 is one leaf node), built bottom-up. */
static struct bt_node *bt_bottom_up(int d) {
    struct bt_node *n = GC_MALLOC(sizeof *n);
    if (!n) abort();
    if (d > 0) {
        n->left = bt_bottom_up(d - 1);
        n->right = bt_bottom_up(d - 1);
    }
    return n;
}

static long bt_check(const struct bt_node *n) {
    if (!n->left) return 1;
    return 1 + bt_check(n->left) + bt_check(n->right);
}

enum { BT_MIN_DEPTH = 4 };

struct bt_job {
    int depth, max_depth;
    char line[128];
};

static void *bt_worker(void *p) {
    struct bt_job *j = p;
    long iters = 1L << (j->max_depth - j->depth + BT_MIN_DEPTH), chk = 0;
    for (long i = 0; i < iters; i++) chk += bt_check(bt_bottom_up(j->depth));
    snprintf(j->line, sizeof j->line, "%ld\t trees of depth %d\t check: %ld\n", iters, j->depth, chk);
    return NULL;
}

/* binary-trees N: the Benchmarks Game program, one thread per depth of the
 * depth loop (as the Go peer has one goroutine per depth), results printed
 * in depth order; prints the canonical output lines first. */
static void binary_trees(int argc, char **argv) {
    int n = argc > 0 ? atoi(argv[0]) : 21;
    struct gc_run r = start_gc_run();
    int max_depth = n > BT_MIN_DEPTH + 2 ? n : BT_MIN_DEPTH + 2;
    int stretch = max_depth + 1;
    printf("stretch tree of depth %d\t check: %ld\n", stretch, bt_check(bt_bottom_up(stretch)));

    struct bt_node *long_lived = bt_bottom_up(max_depth);
    int njobs = (max_depth - BT_MIN_DEPTH) / 2 + 1;
    struct bt_job *jobs = calloc(njobs, sizeof *jobs);
    pthread_t *tids = calloc(njobs, sizeof *tids);
    for (int k = 0; k < njobs; k++) {
        jobs[k].depth = BT_MIN_DEPTH + 2 * k;
        jobs[k].max_depth = max_depth;
        if (pthread_create(&tids[k], NULL, bt_worker, &jobs[k])) abort();
    }
    for (int k = 0; k < njobs; k++) pthread_join(tids[k], NULL);
    for (int k = 0; k < njobs; k++) fputs(jobs[k].line, stdout);
    printf("long lived tree of depth %d\t check: %ld\n", max_depth, bt_check(long_lived));
    free(jobs);
    free(tids);

    struct field fs[8];
    emit("binary-trees", fs, gc_fields(r, fs));
}

/* ---- gcbench ---------------------------------------------------------- */

/* GCBench's node: two children and two (unused) ints. */
struct gb_node {
    struct gb_node *left, *right;
    int i, j;
};

enum {
    GB_STRETCH_DEPTH = 18,
    GB_LONG_LIVED_DEPTH = 16,
    GB_ARRAY_SIZE = 500000,
    GB_MIN_DEPTH = 4,
    GB_MAX_DEPTH = 16,
};

static int gb_tree_size(int d) { return (1 << (d + 1)) - 1; }

/* As many trees of depth d as make twice a stretch tree's nodes. */
static int gb_num_iters(int d) { return 2 * gb_tree_size(GB_STRETCH_DEPTH) / gb_tree_size(d); }

static struct gb_node *gb_new(void) {
    struct gb_node *n = GC_MALLOC(sizeof *n);
    if (!n) abort();
    return n;
}

/* Grows a tree of depth d top-down under an existing node. */
static void gb_populate(int d, struct gb_node *n) {
    if (d <= 0) return;
    d--;
    n->left = gb_new();
    n->right = gb_new();
    gb_populate(d, n->left);
    gb_populate(d, n->right);
}

/* Builds a tree of depth d bottom-up. */
static struct gb_node *gb_make_tree(int d) {
    if (d <= 0) return gb_new();
    struct gb_node *l = gb_make_tree(d - 1), *r = gb_make_tree(d - 1);
    struct gb_node *n = gb_new();
    n->left = l;
    n->right = r;
    return n;
}

/* The tree being built (GCBench's tempTree), in a global. */
static struct gb_node *volatile gb_temp;

/* gcbench: Boehm's GCBench shape, single-threaded: a stretch tree of depth
 * 18 built and dropped; a long-lived tree of depth 16 (top-down) and an
 * array of 500,000 doubles (pointer-free, GC_MALLOC_ATOMIC; first half set
 * to 1/i) kept to the end; then for depth 4, 6, ..., 16: gb_num_iters(depth)
 * trees built top-down and as many bottom-up, each dropped at once. */
static void gcbench(int argc, char **argv) {
    (void)argc, (void)argv;
    struct gc_run r = start_gc_run();
    gb_temp = gb_make_tree(GB_STRETCH_DEPTH);
    gb_temp = NULL;

    struct gb_node *volatile long_lived = gb_new();
    gb_populate(GB_LONG_LIVED_DEPTH, long_lived);
    double *volatile array = GC_MALLOC_ATOMIC(GB_ARRAY_SIZE * sizeof(double));
    if (!array) abort();
    for (int i = 0; i < GB_ARRAY_SIZE / 2; i++) array[i] = 1.0 / i;

    for (int d = GB_MIN_DEPTH; d <= GB_MAX_DEPTH; d += 2) {
        int iters = gb_num_iters(d);
        for (int i = 0; i < iters; i++) {
            gb_temp = gb_new();
            gb_populate(d, gb_temp);
            gb_temp = NULL;
        }
        for (int i = 0; i < iters; i++) {
            gb_temp = gb_make_tree(d);
            gb_temp = NULL;
        }
    }
    if (!long_lived->left || array[1000] != 1.0 / 1000) {
        fprintf(stderr, "gcbench: failed (long-lived data lost)\n");
        exit(1);
    }
    struct field fs[8];
    emit("gcbench", fs, gc_fields(r, fs));
}

/* ---- churn ------------------------------------------------------------ */

/* churn's node and tree definition (the same as the Go peer's and ours):
 * a tree of depth d has d+1 levels, root at height d, leaves at height 0; a
 * leaf holds 1, a node of height h >= 1 holds h; a tree's sum is the sum of
 * its values: sum(0) = 1, sum(h) = h + 2*sum(h-1), sum(8) = 758. */
struct ch_node {
    struct ch_node *left, *right;
    long value;
};

static struct ch_node *ch_build(int h) {
    struct ch_node *l = NULL, *r = NULL;
    if (h > 0) {
        l = ch_build(h - 1);
        r = ch_build(h - 1);
    }
    struct ch_node *n = GC_MALLOC(sizeof *n);
    if (!n) abort();
    n->left = l;
    n->right = r;
    n->value = h > 0 ? h : 1;
    return n;
}

static long ch_sum(const struct ch_node *n) {
    if (!n->left) return n->value;
    return n->value + ch_sum(n->left) + ch_sum(n->right);
}

static long ch_sum_formula(int h) {
    long s = 1;
    for (int i = 1; i <= h; i++) s = i + 2 * s;
    return s;
}

enum { CH_LONG_TREES = 64, CH_LONG_DEPTH = 14, CH_TREES = 200, CH_TREE_DEPTH = 8 };

/* The long-lived set, reachable from static data (a GC root) throughout. */
static struct ch_node *ch_long[CH_LONG_TREES];

static atomic_long ch_next_task, ch_total;
static long ch_tasks;

static void *ch_worker(void *p) {
    (void)p;
    long s = 0;
    while (atomic_fetch_add(&ch_next_task, 1) < ch_tasks)
        for (int t = 0; t < CH_TREES; t++) s += ch_sum(ch_build(CH_TREE_DEPTH));
    atomic_fetch_add(&ch_total, s);
    return NULL;
}

/* churn G: 64 trees of depth 14 are built first and kept alive throughout;
 * then G tasks, each building 200 trees of depth 8 one after another,
 * summing and dropping each. C has no goroutines, so the G tasks are run
 * by a pool of one pthread per online CPU (sysconf(_SC_NPROCESSORS_ONLN),
 * the same parallelism as the Go peer's default GOMAXPROCS), each taking
 * the next task from a shared counter. check is the total of the G*200
 * sums (long-lived trees not counted: only verified at the end), i.e.
 * G*200*758 (151600000 at G = 1000). wall_ms covers building the
 * long-lived set too. */
static void churn(int argc, char **argv) {
    long g = argc > 0 ? atol(argv[0]) : 1000;
    struct gc_run r = start_gc_run();
    for (int i = 0; i < CH_LONG_TREES; i++) ch_long[i] = ch_build(CH_LONG_DEPTH);
    ch_tasks = g;
    long nthreads = sysconf(_SC_NPROCESSORS_ONLN);
    if (nthreads < 1) nthreads = 1;
    pthread_t *tids = calloc(nthreads, sizeof *tids);
    for (long k = 0; k < nthreads; k++)
        if (pthread_create(&tids[k], NULL, ch_worker, NULL)) abort();
    for (long k = 0; k < nthreads; k++) pthread_join(tids[k], NULL);
    free(tids);
    long want = ch_sum_formula(CH_LONG_DEPTH);
    for (int i = 0; i < CH_LONG_TREES; i++)
        if (ch_sum(ch_long[i]) != want) {
            fprintf(stderr, "churn: long-lived tree corrupted\n");
            exit(1);
        }
    long total = atomic_load(&ch_total);
    if (total != g * CH_TREES * ch_sum_formula(CH_TREE_DEPTH)) {
        fprintf(stderr, "churn: wrong check\n");
        exit(1);
    }
    struct field fs[8];
    int n = gc_fields(r, fs);
    fs[n++] = (struct field){"check", INT, total, 0};
    emit("churn", fs, n);
}

/* ---- main ------------------------------------------------------------- */

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *w = argv[1];
    void (*f)(int, char **) = NULL;
    if (!strcmp(w, "binary-trees")) f = binary_trees;
    else if (!strcmp(w, "gcbench")) f = gcbench;
    else if (!strcmp(w, "churn")) f = churn;
    if (!f) {
        fprintf(stderr, "unknown workload \"%s\"\n%s", w, usage);
        return 2;
    }
    size_t len = 0;
    for (int k = 2; k < argc; k++)
        len += snprintf(args_str + len, len < sizeof args_str ? sizeof args_str - len : 0, "%s%s",
                        k > 2 ? " " : "", argv[k]);
    GC_INIT();
    /* libgc 8.2 starts its parallel marker threads lazily, at the first
     * pthread_create; start them now so single-threaded gcbench marks in
     * parallel too, as Go always has its mark workers. */
    GC_start_mark_threads();
    GC_set_on_collection_event(on_gc_event);
    f(argc - 2, argv + 2);
    return 0;
}
