//! The runtime's messages go through the sink an embedder sets (`set_message_sink`): here, the
//! collector's `gctrace` lines. (One test in its own binary: the sink is process-wide.)

use std::sync::{Arc, Mutex};

use safepoint_gc::{Gc, Mutator};
use safepoint_sched::{Runtime, set_message_sink};

#[test]
fn a_message_sink_captures_the_gctrace_lines() {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = lines.clone();
    set_message_sink(Some(Box::new(move |m: &str| l.lock().unwrap().push(m.to_string()))));
    let rt = Runtime::builder().procs(2).build().unwrap();
    let gc = Gc::builder().trace(true).build(&rt).unwrap();
    let g = gc.clone();
    rt.block_on(move || {
        let mut m = Mutator::new(&g).unwrap();
        m.collect();
        m.collect();
    });
    drop(gc);
    drop(rt);
    set_message_sink(None);
    let got = lines.lock().unwrap().clone();
    // A cycle's line ("gc N @..."), not the weak line a heap with weak handles adds.
    let traces: Vec<&String> =
        got.iter().filter(|l| l.starts_with("gc ") && l.contains(" @")).collect();
    assert!(traces.len() >= 2, "gctrace lines captured: {got:?}");
    assert!(traces[0].starts_with("gc 1 @"), "{}", traces[0]);
    assert!(traces[1].starts_with("gc 2 @"), "{}", traces[1]);
    assert!(traces.iter().all(|l| !l.ends_with('\n') && l.contains("MB goal")), "{traces:?}");
    // Messages after the sink is taken away go to standard error again, not to it.
    safepoint_sched::message(format_args!("to standard error"));
    assert_eq!(lines.lock().unwrap().len(), got.len());
}
