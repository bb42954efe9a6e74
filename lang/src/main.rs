//! `safepoint`: runs Pebble programs (see the `safepoint_lang` crate documentation).
//!
//! ```text
//! safepoint run FILE [ARGS...] [--procs N] [--stats] [--max-heap-mb N] [--max-stack-kb N]
//! safepoint demo [--procs N]
//! ```

const DEMO: &str = include_str!("../scripts/demo.pb");

fn usage() -> ! {
    eprintln!(
        "usage: safepoint run FILE [ARGS...] [--procs N] [--stats] [--max-heap-mb N] \
         [--max-stack-kb N]\n       safepoint demo [--procs N]"
    );
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = safepoint_lang::Options::default();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--procs" => {
                opts.procs = it.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| usage());
            }
            "--stats" => opts.stats = true,
            "--max-heap-mb" => {
                let mb: usize = it.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| usage());
                opts.max_heap = mb << 20;
            }
            "--max-stack-kb" => {
                let kb: usize = it.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| usage());
                opts.max_stack = kb << 10;
            }
            _ => rest.push(a.clone()),
        }
    }
    let code = match rest.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["run", file, ref args @ ..] => match std::fs::read_to_string(file) {
            Ok(src) => {
                opts.args = args.iter().map(|s| s.to_string()).collect();
                safepoint_lang::run(file, &src, &opts)
            }
            Err(e) => {
                eprintln!("safepoint: cannot read {file}: {e}");
                1
            }
        },
        ["demo"] => {
            opts.stats = true;
            safepoint_lang::run("demo.pb", DEMO, &opts)
        }
        _ => usage(),
    };
    std::process::exit(code);
}
