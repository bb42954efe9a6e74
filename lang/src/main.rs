//! `pebble`: runs Pebble programs (see the `safepoint_lang` crate documentation).
//!
//! ```text
//! pebble [OPTIONS] run FILE [ARGS...]      FILE may be `-` (standard input)
//! pebble [OPTIONS] demo
//! pebble [OPTIONS]                         the REPL, on standard input
//! ```
//!
//! Options come before FILE (before or after `run`); everything after FILE is the program's
//! own arguments, options included, and `--` ends the options early (for a FILE that starts
//! with `-`). `--help` prints the usage and exits 0; a usage error exits 2.

#![forbid(unsafe_code)]

use std::io::Read;

const DEMO: &str = include_str!("../scripts/demo.pb");

const USAGE: &str = "\
usage: pebble [OPTIONS] run FILE [ARGS...]
       pebble [OPTIONS] demo
       pebble [OPTIONS]

Runs the Pebble program FILE (`-` reads it from standard input) with ARGS as its arguments:
everything after FILE goes to the program. `--` ends the options. With no command, reads
Pebble from standard input and runs it as it comes (a REPL): an expression's value is printed.

options:
  --procs N          Ps to run goroutines on (default: SAFEPOINT_MAXPROCS, else the CPUs
                     this process may use)
  --stats            print the collector's statistics at the end
  --max-heap-mb N    the heap's hard limit: running out of memory is a runtime error
  --max-stack-kb N   the size limit of each goroutine's managed stack
  --min-heap-kb N    the heap goal's floor (default 1024): a larger one runs fewer
                     collections, each after more garbage
  -h, --help         print this and exit
";

/// What the command line asks for.
enum Command {
    Run { file: String, args: Vec<String> },
    Demo,
    Help,
    Repl,
}

fn parse(opts: &mut safepoint_lang::Options) -> Result<Command, lexopt::Error> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_env();
    let mut words = Vec::new();
    // lexopt returns every argument after `--` as a value.
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Long("procs") => opts.procs = p.value()?.parse()?,
            Long("stats") => opts.stats = true,
            Long("max-heap-mb") => opts.max_heap = p.value()?.parse::<usize>()? << 20,
            Long("max-stack-kb") => opts.max_stack = p.value()?.parse::<usize>()? << 10,
            Long("min-heap-kb") => opts.min_heap = p.value()?.parse::<usize>()? << 10,
            Value(v) => {
                let v = v.string()?;
                match (words.as_slice(), v.as_str()) {
                    ([], "demo") => return no_more(&mut p, Command::Demo),
                    ([], "run") => words.push(v),
                    ([_run], _) => {
                        // FILE: the rest is the program's, verbatim.
                        let args = p.raw_args()?.map(|a| a.string()).collect::<Result<_, _>>()?;
                        return Ok(Command::Run { file: v, args });
                    }
                    _ => return Err(lexopt::Error::UnexpectedArgument(v.into())),
                }
            }
            _ => return Err(arg.unexpected()),
        }
    }
    match words.as_slice() {
        [] => Ok(Command::Repl),
        _ => Err(lexopt::Error::MissingValue { option: Some("run FILE".into()) }),
    }
}

/// `demo` takes nothing after it.
fn no_more(p: &mut lexopt::Parser, c: Command) -> Result<Command, lexopt::Error> {
    match p.next()? {
        None => Ok(c),
        Some(arg) => Err(arg.unexpected()),
    }
}

fn main() {
    let mut opts = safepoint_lang::Options::default();
    let cmd = match parse(&mut opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pebble: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let code = match cmd {
        Command::Help => {
            print!("{USAGE}");
            0
        }
        Command::Run { file, args } => {
            let (name, src) = if file == "-" {
                let mut s = String::new();
                match std::io::stdin().read_to_string(&mut s) {
                    Ok(_) => ("<stdin>".to_string(), Ok(s)),
                    Err(e) => ("<stdin>".to_string(), Err(e)),
                }
            } else {
                let r = std::fs::read_to_string(&file);
                (file, r)
            };
            match src {
                Ok(src) => {
                    opts.args = args;
                    safepoint_lang::run(&name, &src, &opts)
                }
                Err(e) => {
                    eprintln!("pebble: cannot read {name}: {e}");
                    1
                }
            }
        }
        Command::Repl => safepoint_lang::repl(&opts),
        Command::Demo => {
            opts.stats = true;
            safepoint_lang::run("demo.pb", DEMO, &opts)
        }
    };
    std::process::exit(code);
}
