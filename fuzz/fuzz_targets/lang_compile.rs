//! Pebble's lexer, parser and compiler on arbitrary text: every input is compiled or refused
//! with a positioned error, never a panic; what compiles has stack maps the registry accepted
//! and code whose registers, jumps and safepoints stay inside their function.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safepoint_lang::bytecode::Op;
use safepoint_stackmap::Registry;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let reg = Registry::new();
    match safepoint_lang::compiler::compile("fuzz.pb", src, &reg) {
        Err(e) => {
            assert!(e.pos.line >= 1 && e.pos.col >= 1, "error without a position: {e:?}");
            assert!(e.pos.line as usize <= src.lines().count() + 1, "{e:?}");
        }
        Ok(prog) => {
            assert_eq!(reg.len(), prog.protos.len());
            for p in &prog.protos {
                let info = reg.get(p.func).expect("every function is registered");
                assert_eq!(info.frame_slots(), p.regs as usize);
                assert_eq!(p.code.len(), p.pos.len());
                for op in &p.code {
                    let (t, sp) = match *op {
                        Op::Jmp { t } | Op::JmpF { t, .. } | Op::JmpT { t, .. } => (Some(t), None),
                        Op::LtJmpF { t, .. }
                        | Op::LeJmpF { t, .. }
                        | Op::EqJmpF { t, .. }
                        | Op::NeJmpF { t, .. }
                        | Op::LtJmpFK { t, .. }
                        | Op::LeJmpFK { t, .. }
                        | Op::EqJmpFK { t, .. }
                        | Op::NeJmpFK { t, .. } => (Some(t), None),
                        Op::Loop { t, sp }
                        | Op::ForLoop { t, sp, .. }
                        | Op::IterNext { t, sp, .. }
                        | Op::Try { t, sp, .. } => {
                            (Some(t), Some(sp))
                        }
                        Op::Arith { sp, .. }
                        | Op::Add { sp, .. }
                        | Op::Sub { sp, .. }
                        | Op::Mul { sp, .. }
                        | Op::Div { sp, .. }
                        | Op::ArithK { sp, .. }
                        | Op::AddK { sp, .. }
                        | Op::SubK { sp, .. }
                        | Op::MulK { sp, .. }
                        | Op::DivK { sp, .. }
                        | Op::AddI { sp, .. }
                        | Op::Neg { sp, .. }
                        | Op::Call { sp, .. }
                        | Op::CallG { sp, .. }
                        | Op::NewVec { sp, .. }
                        | Op::NewMap { sp, .. }
                        | Op::SetIndex { sp, .. }
                        | Op::Closure { sp, .. }
                        | Op::Go { sp, .. }
                        | Op::Builtin { sp, .. }
                        | Op::Send { sp, .. }
                        | Op::Recv { sp, .. }
                        | Op::RecvOk { sp, .. }
                        | Op::NewBox { sp, .. }
                        | Op::Select { sp, .. } => (None, Some(sp)),
                        _ => (None, None),
                    };
                    if let Some(t) = t {
                        assert!((t as usize) <= p.code.len(), "jump out of {}: {op:?}", p.name);
                    }
                    if let Some(sp) = sp {
                        assert!((sp as usize + 1) < info.safepoints(), "{}: {op:?}", p.name);
                    }
                }
                assert!(matches!(p.code.last(), Some(Op::Ret { .. })), "{} ends in a return", p.name);
            }
        }
    }
});
