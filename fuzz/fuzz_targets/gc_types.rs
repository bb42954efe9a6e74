//! Arbitrary type descriptors and tag rules into a heap's type registry: each registration
//! returns an id or a `TypeError`, never panics; what was registered reads back exactly
//! (same descriptor, same id by name), what was refused left nothing behind; headers of
//! arbitrary lengths are built or refused, and object sizes agree with the descriptor.

#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use safepoint_gc::types::{MAX_NAME_LEN, RegistryConfig, object_size};
use safepoint_gc::{TagRule, TypeDesc, TypeError, TypeId, TypeRegistry, WordKind};

#[derive(Arbitrary, Debug)]
enum Kind {
    Ref,
    Tagged,
    Raw,
    Weak,
    Ephemeron,
}

#[derive(Arbitrary, Debug)]
enum Desc {
    Record { name: u16, long_name: bool, words: Vec<Kind>, extra: u16 },
    RefArray { name: u16 },
    TaggedArray { name: u16 },
    ByteArray { name: u16 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    mask: u8,
    ref_tag: u8,
    max_types: u32,
    max_record_bytes: u32,
    descs: Vec<Desc>,
    lens: Vec<(u8, u64)>,
}

fn name(n: u16, long: bool) -> String {
    match n % 64 {
        0 => String::new(),
        k if long => format!("t{k}").repeat(100),
        k => format!("t{k}"),
    }
}

fn kind(k: &Kind) -> WordKind {
    match k {
        Kind::Ref => WordKind::Ref,
        Kind::Tagged => WordKind::Tagged,
        Kind::Raw => WordKind::Raw,
        Kind::Weak => WordKind::Weak,
        Kind::Ephemeron => WordKind::Ephemeron,
    }
}

fuzz_target!(|input: Input| {
    let mut config = RegistryConfig::default();
    config.tag_rule = TagRule { mask: input.mask as usize, ref_tag: input.ref_tag as usize };
    config.max_types = input.max_types % 80;
    config.max_record_bytes = input.max_record_bytes as usize % 40_000;
    let reg = match TypeRegistry::with_config(config) {
        Ok(r) => r,
        Err(TypeError::BadTagRule { .. } | TypeError::BadConfig { .. }) => return,
        Err(e) => panic!("with_config: unexpected error {e:?}"),
    };
    let mut stored: Vec<(TypeId, TypeDesc)> = Vec::new();
    let mut names: HashMap<String, TypeId> = HashMap::new();
    for d in input.descs.iter().take(128) {
        let desc = match d {
            Desc::Record { name: n, long_name, words, extra } => {
                let mut w: Vec<WordKind> = words.iter().map(kind).collect();
                // Sometimes a record much longer than the input.
                let extra = *extra as usize % 5000;
                if extra > 4000 {
                    w.extend(std::iter::repeat_n(WordKind::Raw, extra));
                }
                TypeDesc::Record { name: name(*n, *long_name), words: w }
            }
            Desc::RefArray { name: n } => TypeDesc::RefArray { name: name(*n, false) },
            Desc::TaggedArray { name: n } => TypeDesc::TaggedArray { name: name(*n, false) },
            Desc::ByteArray { name: n } => TypeDesc::ByteArray { name: name(*n, false) },
        };
        let before = reg.len();
        match reg.register(desc.clone()) {
            Ok(id) => {
                assert_eq!(id.get() as usize, before + 1, "ids are issued in order");
                assert!(!names.contains_key(desc.name()), "a duplicate name was accepted");
                names.insert(desc.name().to_owned(), id);
                stored.push((id, desc));
            }
            Err(e) => {
                assert_eq!(reg.len(), before, "a refused descriptor was stored: {e:?}");
                match &e {
                    TypeError::DuplicateName { existing, .. } => {
                        assert_eq!(names.get(desc.name()), Some(existing))
                    }
                    TypeError::EmptyName => assert!(desc.name().is_empty()),
                    TypeError::NameTooLong { .. } => assert!(desc.name().len() > MAX_NAME_LEN),
                    TypeError::EmptyRecord { .. } | TypeError::RecordTooLarge { .. } => {
                        assert!(!desc.is_array())
                    }
                    TypeError::TooManyTypes { max } => assert_eq!(before, *max as usize),
                    TypeError::EphemeronWithoutKey { .. } => {
                        let TypeDesc::Record { words, .. } = &desc else {
                            panic!("an array refused for its ephemeron words")
                        };
                        assert!(
                            words.contains(&WordKind::Ephemeron)
                                && !words.contains(&WordKind::Weak)
                        )
                    }
                    other => panic!("register: unexpected error {other:?}"),
                }
                let _ = e.to_string();
            }
        }
    }
    for (id, desc) in &stored {
        assert_eq!(reg.get(*id), Some(desc), "descriptor {id:?} does not round-trip");
        assert_eq!(reg.lookup(desc.name()), Some(*id));
    }
    assert_eq!(reg.len(), stored.len());
    // Headers and sizes for arbitrary lengths (and unregistered ids).
    for &(i, len) in input.lens.iter().take(64) {
        let len = len as usize;
        let Some(id) = TypeId::from_u32(u32::from(i) % (stored.len() as u32 + 3) + 1) else {
            continue;
        };
        match (reg.get(id), reg.header(id, len)) {
            (None, Err(TypeError::UnknownType { .. })) => {}
            (None, r) => panic!("header of an unknown type: {r:?}"),
            (Some(d), Ok(h)) => {
                assert_eq!(h.type_id(), id);
                if d.is_array() {
                    assert_eq!(h.len(), len);
                } else {
                    assert_eq!(len, 0, "a record header with a length");
                }
                let size = object_size(d, len).expect("a header was made, so the size fits");
                assert!(size >= 8 && size % 8 == 0, "size {size}");
            }
            (Some(d), Err(e)) => match e {
                TypeError::RecordWithLength { .. } => assert!(!d.is_array() && len != 0),
                TypeError::ArrayTooLong { .. } => assert!(d.is_array()),
                other => panic!("header: unexpected error {other:?}"),
            },
        }
    }
});
