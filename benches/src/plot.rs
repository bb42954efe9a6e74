//! `stress WORKLOAD ARGS... --plot DIR`: pictures of a collector workload's run, drawn as SVG
//! (no plotting library: the drawing is a few rectangles, lines and labels).
//!
//! * `DIR/WORKLOAD-heap.svg`: the heap over time — bytes in allocated objects (allocated
//!   minus freed, exact, from [`safepoint::gc::metrics`]) and the heap goal, read every
//!   millisecond by a sampler thread while the workload runs, with a tick for each cycle.
//! * `DIR/WORKLOAD-pauses.svg`: the histogram of the run's stop-the-world pauses
//!   ([`safepoint::gc::Gc::pauses_since`]), in power-of-two buckets of microseconds.
//!
//! The sampler reads the metrics from its own thread without stopping anything; that it does
//! not hold the workload up is what the metrics' tests check.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use safepoint::gc::Gc;
use safepoint::gc::metrics::{self, Sample, Value};

/// Where to draw, and the workload's name: set by the `stress` tool from `--plot DIR`.
static PLOT: OnceLock<(PathBuf, String)> = OnceLock::new();

/// Asks for pictures of the next collector workload in `dir`, named after `workload`.
pub fn set(dir: PathBuf, workload: &str) {
    let _ = PLOT.set((dir, workload.to_string()));
}

/// One sample: milliseconds since the start, live heap bytes, goal bytes, cycles.
type Point = (f64, f64, f64, u64);

/// A running sampler (see [`start`]).
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Point>>,
}

/// Starts sampling `gc` every millisecond, if pictures were asked for.
pub fn start(gc: &Gc) -> Option<Sampler> {
    PLOT.get()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (gc, s) = (gc.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        let mut samples = [
            Sample::new("/gc/heap/allocs:bytes"),
            Sample::new("/gc/heap/frees:bytes"),
            Sample::new("/gc/heap/goal:bytes"),
            Sample::new("/gc/cycles/total:gc-cycles"),
        ];
        let u = |s: &Sample| if let Value::U64(v) = s.value { v } else { 0 };
        let t0 = Instant::now();
        let mut points = Vec::new();
        while !s.load(Ordering::Relaxed) {
            metrics::read(&gc, &mut samples);
            let live = u(&samples[0]).saturating_sub(u(&samples[1]));
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            points.push((ms, live as f64, u(&samples[2]) as f64, u(&samples[3])));
            std::thread::sleep(Duration::from_millis(1));
        }
        points
    });
    Some(Sampler { stop, thread })
}

/// Stops the sampler and draws both pictures; `pauses` are the run's pauses.
pub fn finish(sampler: Sampler, pauses: &[Duration]) {
    sampler.stop.store(true, Ordering::Relaxed);
    let points = sampler.thread.join().expect("the sampler panicked");
    let (dir, name) = PLOT.get().expect("a sampler runs only when asked");
    let r = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(dir.join(format!("{name}-heap.svg")), heap_svg(name, &points)))
        .and_then(|_| {
            std::fs::write(dir.join(format!("{name}-pauses.svg")), pauses_svg(name, pauses))
        });
    match r {
        Ok(()) => eprintln!("plot: {} and {}", show(dir, name, "heap"), show(dir, name, "pauses")),
        Err(e) => eprintln!("plot: cannot write to {}: {e}", dir.display()),
    }
}

fn show(dir: &Path, name: &str, what: &str) -> String {
    dir.join(format!("{name}-{what}.svg")).display().to_string()
}

const W: f64 = 640.0;
const H: f64 = 320.0;
/// Margins: left (labels), right, top (title), bottom (axis labels).
const L: f64 = 70.0;
const R: f64 = 20.0;
const T: f64 = 30.0;
const B: f64 = 45.0;

/// A round step for an axis covering `0..max` in about five ticks.
fn step(max: f64) -> f64 {
    let raw = (max / 5.0).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
}

fn frame(svg: &mut String, title: &str, xlabel: &str, ylabel: &str) {
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="18" text-anchor="middle" font-size="13">{title}</text>
<text x="{}" y="{}" text-anchor="middle">{xlabel}</text>
<text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">{ylabel}</text>
<line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{L}" y1="{T}" x2="{L}" y2="{}" stroke="black"/>
"#,
        W / 2.0,
        L + (W - L - R) / 2.0,
        H - 8.0,
        T + (H - T - B) / 2.0,
        T + (H - T - B) / 2.0,
        H - B,
        W - R,
        H - B,
        H - B,
    );
}

/// The heap over time: live bytes (a filled line), the goal (dashed), cycle ticks.
fn heap_svg(name: &str, points: &[Point]) -> String {
    let mut svg = String::new();
    frame(&mut svg, &format!("{name}: heap over time"), "milliseconds", "MiB");
    let mib = 1024.0 * 1024.0;
    let tmax = points.last().map_or(1.0, |p| p.0).max(1.0);
    let ymax = points.iter().map(|p| p.1.max(p.2) / mib).fold(0.0, f64::max).max(0.001);
    let (xs, ys) = (step(tmax), step(ymax));
    let (xmax, ymax) = ((tmax / xs).ceil() * xs, (ymax / ys).ceil() * ys);
    let x = |t: f64| L + t / xmax * (W - L - R);
    let y = |v: f64| H - B - v / ymax * (H - T - B);
    axes(&mut svg, xmax, xs, ymax, ys, &x, &y);
    let mut last_cycle = points.first().map_or(0, |p| p.3);
    for p in points {
        if p.3 != last_cycle {
            last_cycle = p.3;
            let _ = writeln!(
                svg,
                r##"<line x1="{:.1}" y1="{T}" x2="{:.1}" y2="{}" stroke="#ddd"/>"##,
                x(p.0),
                x(p.0),
                H - B
            );
        }
    }
    // At most about 600 points a line (a pixel each): the highest of each run of samples.
    let stride = points.len().div_ceil(600).max(1);
    let line = |f: &dyn Fn(&Point) -> f64| {
        points
            .chunks(stride)
            .map(|c| {
                let p =
                    c.iter().max_by(|a, b| f(a).total_cmp(&f(b))).expect("chunks are not empty");
                format!("{:.1},{:.1}", x(c[0].0), y(f(p) / mib))
            })
            .collect::<Vec<_>>()
    };
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#c33" stroke-dasharray="4 3"/>"##,
        line(&|p| p.2).join(" ")
    );
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#36c" stroke-width="1.5"/>"##,
        line(&|p| p.1).join(" ")
    );
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" fill="#36c">live objects (bytes)</text><text x="{}" y="{}" fill="#c33">goal</text><text x="{}" y="{}" fill="#999">grey: a cycle ended</text>"##,
        L + 10.0,
        T + 12.0,
        L + 140.0,
        T + 12.0,
        L + 180.0,
        T + 12.0
    );
    svg.push_str("</svg>\n");
    svg
}

fn axes(
    svg: &mut String,
    xmax: f64,
    xs: f64,
    ymax: f64,
    ys: f64,
    x: &dyn Fn(f64) -> f64,
    y: &dyn Fn(f64) -> f64,
) {
    let mut v = 0.0;
    while v <= xmax + xs / 2.0 {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x(v),
            H - B + 15.0,
            trim(v)
        );
        v += xs;
    }
    y_axis(svg, ymax, ys, y);
}

/// The y axis's labels, with a light grid line at each, every `ys` from 0 to `ymax`.
fn y_axis(svg: &mut String, ymax: f64, ys: f64, y: &dyn Fn(f64) -> f64) {
    let mut v = 0.0;
    while v <= ymax + ys / 2.0 {
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{}</text><line x1="{L}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#eee"/>"##,
            L - 6.0,
            y(v) + 4.0,
            trim(v),
            y(v),
            W - R,
            y(v)
        );
        v += ys;
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The pauses' histogram: a bar per power-of-two bucket of microseconds.
fn pauses_svg(name: &str, pauses: &[Duration]) -> String {
    let mut svg = String::new();
    frame(
        &mut svg,
        &format!("{name}: {} stop-the-world pauses", pauses.len()),
        "pause (µs, power-of-two buckets)",
        "pauses",
    );
    let bucket = |d: &Duration| {
        let us = d.as_secs_f64() * 1e6;
        if us < 1.0 { 0 } else { us.log2().floor() as usize + 1 }
    };
    // Buckets from the shortest pause's to the longest's (at least four).
    let lo = pauses.iter().map(bucket).min().unwrap_or(0);
    let nb = pauses.iter().map(bucket).max().map_or(1, |m| m + 1).saturating_sub(lo).max(4);
    let mut counts = vec![0u64; nb];
    for p in pauses {
        counts[bucket(p) - lo] += 1;
    }
    let cmax = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let ys = step(cmax).max(1.0);
    let ymax = (cmax / ys).ceil() * ys;
    let bw = (W - L - R) / nb as f64;
    let y = |v: f64| H - B - v / ymax * (H - T - B);
    y_axis(&mut svg, ymax, ys, &y);
    for (k, c) in counts.iter().enumerate() {
        let (i, x0) = (k + lo, L + k as f64 * bw);
        let label = if i == 0 { "&lt;1".to_string() } else { format!("{}", 1u64 << (i - 1)) };
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#36c"/><text x="{:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            x0 + 2.0,
            y(*c as f64),
            (bw - 4.0).max(1.0),
            H - B - y(*c as f64),
            x0 + bw / 2.0,
            H - B + 15.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_are_well_formed_svg_with_a_bar_per_bucket_and_a_point_per_sample() {
        let pauses: Vec<Duration> =
            [3, 5, 5, 40, 900, 12_000].iter().map(|&us| Duration::from_micros(us)).collect();
        let svg = pauses_svg("t", &pauses);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        // Buckets 2, 4, ..., 8192 µs (from the shortest pause's to the longest's): 13 bars.
        assert_eq!(svg.matches("<rect x=").count(), 13);
        assert!(svg.contains(">2</text>") && svg.contains(">8192</text>"));
        let tiny = pauses_svg("t", &[Duration::from_nanos(300)]);
        // Text is escaped: the bucket under a microsecond is labelled "<1".
        assert!(tiny.contains(">&lt;1</text>") && !tiny.contains("><1<"));
        let points: Vec<Point> =
            (0..50).map(|i| (i as f64, (i * 1000) as f64, 5e4, i / 10)).collect();
        let svg = heap_svg("t", &points);
        let line = svg.split("<polyline points=\"").nth(2).unwrap();
        assert_eq!(line.split('"').next().unwrap().split(' ').count(), 50);
        // Long runs are thinned to about 600 points a line, keeping each run's highest.
        let many: Vec<Point> = (0..6000).map(|i| (i as f64, (i % 7) as f64, 5e4, 0)).collect();
        let thinned = heap_svg("t", &many);
        let line = thinned.split("<polyline points=\"").nth(2).unwrap();
        assert_eq!(line.split('"').next().unwrap().split(' ').count(), 600);
        // A grey tick per cycle that ended (cycles 1 to 4).
        assert_eq!(svg.matches("stroke=\"#ddd\"").count(), 4);
        assert_eq!(step(7.3), 2.0);
        assert_eq!(step(0.9), 0.2);
    }
}
