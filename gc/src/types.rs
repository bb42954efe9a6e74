//! Type descriptors, the one-word object header, and precise scanning of an object's words.
//!
//! Every managed object has one [`Header`] word naming its [`TypeId`]; arrays also keep
//! their element count there. It is the word before the object's body, except for records of
//! the first types registered, which live in *typed spans* whose one header word serves all
//! their objects (see "Where the header is" below). The id indexes a [`TypeRegistry`] (one
//! per heap/runtime, never global) whose [`TypeDesc`] says, for each word of the body,
//! whether it is a reference, a tagged value (a reference iff its tag says so, see
//! [`TagRule`]) or raw data.
//! [`scan_refs`] turns (descriptor, header, body words) into the references the marker must
//! follow.
//!
//! ## Header layout (64-bit words only)
//!
//! ```text
//!  63                                          24 23                      0
//! +----------------------------------------------+-------------------------+
//! |  length: 40 bits (arrays; 0 for records)     |  type id: 24 bits, != 0 |
//! +----------------------------------------------+-------------------------+
//! ```
//!
//! * Id 0 is never issued, so a zeroed word (fresh or released memory) is never a valid
//!   header: [`Header::from_word`] returns `None` for it.
//! * At most [`MAX_TYPES`] (2^24 - 1) types per registry; at most [`MAX_ARRAY_LEN`]
//!   (2^40 - 1) elements per array. The heap refuses any object over one arena (64 MiB) long
//!   before either length limit is reached, so the header is never the binding limit.
//!
//! ## Object layout
//!
//! ```text
//!  record:        [header][w0][w1]...[wN-1]        N = descriptor words, 1 <= N <= 4095
//!  ref/tagged []: [header][e0][e1]...[eLEN-1]      one word per element
//!  byte array:    [header][bytes ... padded to a word]
//!                         ^ the reference points here, at the body
//! ```
//!
//! [`object_size`] gives the bytes including the header, with every step overflow-checked.
//!
//! ## Where the header is
//!
//! A reference is the address of the object's body (word 0 of a record, element 0 of an
//! array), so a field is at the same place whatever else is true of the object. The header
//! is the word before, except for a record whose type has one of the first 64 ids and whose
//! body is at most 512 bytes (`TYPED_KINDS` and `MAX_TYPED_SIZE` in the heap): such a record
//! is allocated in a *typed span*, a page of records of that type only, whose last word holds
//! the type's header, and it has none of its own. A tree node of two references is then 16
//! bytes, not 24, as in a runtime whose compiler knows its types (Go's), and the heap is a
//! third smaller.
//! Typed spans live in one reserved address range, so which case applies is a range check,
//! and finding a header costs one load either way; the marker, which reads the span record
//! of every reference it shades anyway, finds the header there.
//!
//! ## Registry: why a chunked append-only table
//!
//! The marker reads descriptors (by id, per object) while embedders may register new types.
//! Entries live in buckets of doubling size (32, 64, 128, ... entries; 20 buckets cover every
//! id), each bucket a `OnceLock<Box<[OnceLock<TypeDesc>]>>`. A registered descriptor never
//! moves and is never freed while the registry lives, so [`TypeRegistry::get`] is two
//! `OnceLock::get` calls (Acquire loads pairing with the Release of the `set` that published
//! the bucket and the entry) and returns a plain `&TypeDesc` borrowed from the registry, with
//! no lock, no reference count and no `unsafe`. Writers serialise on one mutex, which also
//! guards the name table and the next id.
//!
//! Rejected: a mutex for writes plus an atomically published snapshot (copy-on-write vector).
//! Each registration would copy the whole table, and a reader would need a reference count
//! or epoch reclamation (a dependency or `unsafe`) to keep its snapshot alive; the chunked
//! table costs 20 pointers and never copies.
//!
//! ## Tag rule
//!
//! A tagged word is a reference iff `word & mask == ref_tag` and the word is not zero. The
//! default ([`TagRule::LOW_BIT`]) suits interpreters that box small integers: low bit 0 is a
//! (word-aligned) pointer, low bit 1 a small integer. The rule is per registry; the mask may
//! use only the low three bits, since objects are 8-byte aligned.
//!
//! Null (zero) is never yielded as a reference, neither from a `Ref` word nor a tagged word.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::sizeclass::MAX_SMALL;

const _: () = assert!(usize::BITS == 64, "the header layout assumes 64-bit words");

/// Bytes per word.
pub const WORD: usize = 8;
/// Bits of the header holding the type id.
pub const ID_BITS: u32 = 24;
/// Bits of the header holding the array length.
pub const LEN_BITS: u32 = 64 - ID_BITS;
/// The most types one registry can hold (ids `1..=MAX_TYPES`).
pub const MAX_TYPES: u32 = (1 << ID_BITS) - 1;
/// The longest array a header can describe, in elements (bytes for byte arrays).
pub const MAX_ARRAY_LEN: usize = (1 << LEN_BITS) - 1;
/// The most words a record may have in any registry: header plus body fit in the largest
/// size class ([`MAX_SMALL`]).
pub const MAX_RECORD_WORDS: usize = MAX_SMALL / WORD - 1;
/// The longest type name, in bytes.
pub const MAX_NAME_LEN: usize = 256;

const ID_MASK: usize = (1 << ID_BITS) - 1;
/// Entries in bucket 0; bucket `b` holds `FIRST_BUCKET << b`.
const FIRST_BUCKET_SHIFT: u32 = 5;
/// Enough buckets for every id up to [`MAX_TYPES`].
const BUCKETS: usize = (ID_BITS + 1 - FIRST_BUCKET_SHIFT) as usize;

/// What one word of a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WordKind {
    /// A reference to a managed object, or zero (null).
    Ref,
    /// A tagged value: a reference iff the registry's [`TagRule`] says so.
    Tagged,
    /// Raw data the collector never interprets.
    Raw,
    /// A weak field: zero, or a reference to a weak cell (see
    /// [`Mutator::weak`](crate::Mutator::weak)). The collector reads it as a reference (the
    /// cell stays alive), never as a reference to the cell's object; the mutator stores an
    /// object's cell into it and loads the object (or null, once it is found unreachable)
    /// from it.
    Weak,
    /// An ephemeron's value: a tagged value that the collector keeps alive only while the
    /// record itself is reachable *and* the object of the record's first [`WordKind::Weak`]
    /// word (its key) is reachable from elsewhere (see the `weak` module's "Ephemerons"). A
    /// load reads null once the key is gone. A record with such a word must have a weak word.
    Ephemeron,
}

/// A type descriptor, as given to [`TypeRegistry::register`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeDesc {
    /// A fixed-size object with one kind per word (1 to [`MAX_RECORD_WORDS`] words).
    Record {
        /// The unique, non-empty type name.
        name: String,
        /// One entry per word of the body (the header excluded).
        words: Vec<WordKind>,
    },
    /// An array whose every element is a [`WordKind::Ref`] word.
    RefArray {
        /// The unique, non-empty type name.
        name: String,
    },
    /// An array whose every element is a [`WordKind::Tagged`] word.
    TaggedArray {
        /// The unique, non-empty type name.
        name: String,
    },
    /// An array of bytes, padded to a whole word; never scanned.
    ByteArray {
        /// The unique, non-empty type name.
        name: String,
    },
}

impl TypeDesc {
    /// The type's name.
    ///
    /// ```
    /// use safepoint_gc::TypeDesc;
    /// assert_eq!(TypeDesc::ByteArray { name: "str".into() }.name(), "str");
    /// ```
    pub fn name(&self) -> &str {
        match self {
            TypeDesc::Record { name, .. }
            | TypeDesc::RefArray { name }
            | TypeDesc::TaggedArray { name }
            | TypeDesc::ByteArray { name } => name,
        }
    }

    /// Whether objects of this type carry a length in their header.
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, WordKind};
    /// assert!(TypeDesc::RefArray { name: "v".into() }.is_array());
    /// assert!(!TypeDesc::Record { name: "r".into(), words: vec![WordKind::Raw] }.is_array());
    /// ```
    pub fn is_array(&self) -> bool {
        !matches!(self, TypeDesc::Record { .. })
    }
}

/// Which tagged words are references: those with `word & mask == ref_tag` (and not zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagRule {
    /// The tag bits; a non-zero subset of the low three bits (`1..=7`).
    pub mask: usize,
    /// The tag a reference carries; `ref_tag & !mask` must be zero.
    pub ref_tag: usize,
}

impl TagRule {
    /// Low bit 0: pointer; low bit 1: small integer. The default.
    pub const LOW_BIT: TagRule = TagRule { mask: 1, ref_tag: 0 };

    /// Whether the tagged `word` is a reference to follow.
    ///
    /// ```
    /// use safepoint_gc::TagRule;
    /// let rule = TagRule::default(); // low bit 0: pointer; low bit 1: small integer
    /// assert!(rule.is_ref(0x1000));
    /// assert!(!rule.is_ref(0x1001));
    /// assert!(!rule.is_ref(0)); // null
    /// ```
    #[inline]
    pub fn is_ref(self, word: usize) -> bool {
        word != 0 && word & self.mask == self.ref_tag
    }

    fn validate(self) -> Result<(), TypeError> {
        if self.mask == 0 || self.mask > 7 || self.ref_tag & !self.mask != 0 {
            return Err(TypeError::BadTagRule { mask: self.mask, ref_tag: self.ref_tag });
        }
        Ok(())
    }
}

impl Default for TagRule {
    fn default() -> Self {
        TagRule::LOW_BIT
    }
}

/// A registry's settings; [`Default`] gives the documented defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegistryConfig {
    /// How tagged words are read. Default [`TagRule::LOW_BIT`].
    pub tag_rule: TagRule,
    /// The most types this registry accepts, `1..=MAX_TYPES`. Default [`MAX_TYPES`].
    pub max_types: u32,
    /// The largest record, header included, in bytes: `2 * WORD..=MAX_SMALL`. Default
    /// [`MAX_SMALL`], the heap's largest size class.
    pub max_record_bytes: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            tag_rule: TagRule::LOW_BIT,
            max_types: MAX_TYPES,
            max_record_bytes: MAX_SMALL,
        }
    }
}

/// A registered type's id: an index into its [`TypeRegistry`], never zero, at most
/// [`MAX_TYPES`].
///
/// An id means nothing outside the registry that issued it, so an id returned by
/// [`TypeRegistry::register`] or [`TypeRegistry::lookup`] remembers its registry, and another
/// registry refuses it ([`TypeRegistry::get`] answers `None`, [`TypeRegistry::header`]
/// [`TypeError::ForeignType`]; so do a collector's allocations and shapes). An id made from a
/// number ([`TypeId::from_u32`]) or read from an object's [`Header`] names no registry and is
/// taken by any. Equality, order and hashing look at the number only, so an id read from a
/// header equals the registered id it was made from.
#[derive(Clone, Copy, Debug)]
pub struct TypeId {
    n: u32,
    /// The issuing registry's number ([`TypeRegistry`]'s `tag`), or 0 for none.
    reg: u32,
}

impl PartialEq for TypeId {
    fn eq(&self, other: &Self) -> bool {
        self.n == other.n
    }
}

impl Eq for TypeId {}

impl std::hash::Hash for TypeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.n.hash(state)
    }
}

impl PartialOrd for TypeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TypeId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.n.cmp(&other.n)
    }
}

impl TypeId {
    /// The id as a number (`1..=MAX_TYPES`).
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, TypeRegistry, WordKind};
    /// let reg = TypeRegistry::new();
    /// let t = reg.register(TypeDesc::RefArray { name: "v".into() }).unwrap();
    /// assert_eq!(safepoint_gc::TypeId::from_u32(t.get()), Some(t));
    /// ```
    pub fn get(self) -> u32 {
        self.n
    }

    /// The id numbered `n`, if `n` is in `1..=MAX_TYPES`, bound to no registry. Whether a
    /// registry holds it is a separate question ([`TypeRegistry::get`]).
    ///
    /// ```
    /// use safepoint_gc::TypeId;
    /// assert_eq!(TypeId::from_u32(0), None); // ids start at 1
    /// assert_eq!(TypeId::from_u32(3).unwrap().get(), 3);
    /// ```
    pub fn from_u32(n: u32) -> Option<TypeId> {
        (1..=MAX_TYPES).contains(&n).then_some(TypeId { n, reg: 0 })
    }

    /// The number and the issuing registry's tag together: unlike `==`, which compares
    /// numbers only, equal keys name the same type of the same registry (or, with tag 0, the
    /// same number taken by any registry).
    #[inline]
    pub(crate) fn key(self) -> u64 {
        (u64::from(self.reg) << 32) | u64::from(self.n)
    }

    /// Id `n`, bound to no registry (from a header: `n` is in range by construction).
    fn unbound(n: u32) -> TypeId {
        TypeId { n, reg: 0 }
    }
}

/// Why a descriptor, a configuration, a header or a size was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeError {
    /// The type name is empty.
    EmptyName,
    /// The type name is longer than [`MAX_NAME_LEN`] bytes.
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// A type of that name is already registered.
    DuplicateName {
        /// The name.
        name: String,
        /// The id it already has.
        existing: TypeId,
    },
    /// A record with no words.
    EmptyRecord {
        /// The record's name.
        name: String,
    },
    /// A record with more words than the registry allows.
    RecordTooLarge {
        /// The record's name.
        name: String,
        /// Its words.
        words: usize,
        /// The most this registry allows.
        max_words: usize,
    },
    /// The registry already holds its maximum number of types.
    TooManyTypes {
        /// That maximum.
        max: u32,
    },
    /// A tag rule whose mask is zero or beyond the low three bits, or whose tag is outside it.
    BadTagRule {
        /// The mask given.
        mask: usize,
        /// The tag given.
        ref_tag: usize,
    },
    /// A registry configuration out of range (see [`RegistryConfig`]).
    BadConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// An array length over [`MAX_ARRAY_LEN`], or one whose size overflows a `usize`.
    ArrayTooLong {
        /// The length asked for.
        len: usize,
    },
    /// A record given a non-zero length (records have no length).
    RecordWithLength {
        /// The length given.
        len: usize,
    },
    /// A header naming an id the registry does not hold.
    UnknownType {
        /// The raw id.
        id: u32,
    },
    /// An id issued by another registry (see [`TypeId`]).
    ForeignType {
        /// The raw id.
        id: u32,
    },
    /// A record with an [`WordKind::Ephemeron`] word and no [`WordKind::Weak`] word (its
    /// key).
    EphemeronWithoutKey {
        /// The record's name.
        name: String,
    },
    /// Fewer body words were given than the header and descriptor say the object has.
    ObjectTooShort {
        /// Body words the object has.
        needed: usize,
        /// Body words given.
        got: usize,
    },
}

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeError::EmptyName => write!(f, "type name is empty"),
            TypeError::NameTooLong { len } => {
                write!(f, "type name is {len} bytes long; the limit is {MAX_NAME_LEN}")
            }
            TypeError::DuplicateName { name, existing } => {
                write!(f, "type name {name:?} is already registered as type id {}", existing.n)
            }
            TypeError::EmptyRecord { name } => write!(f, "record type {name:?} has no words"),
            TypeError::RecordTooLarge { name, words, max_words } => write!(
                f,
                "record type {name:?} has {words} words; this registry allows at most {max_words}"
            ),
            TypeError::TooManyTypes { max } => {
                write!(f, "type registry is full: it holds its maximum of {max} types")
            }
            TypeError::BadTagRule { mask, ref_tag } => write!(
                f,
                "bad tag rule mask {mask:#x} ref_tag {ref_tag:#x}: the mask must be non-zero \
                 within the low three bits and the tag inside the mask"
            ),
            TypeError::BadConfig { reason } => write!(f, "bad type registry config: {reason}"),
            TypeError::ArrayTooLong { len } => {
                write!(f, "array length {len} is over the limit of {MAX_ARRAY_LEN}")
            }
            TypeError::RecordWithLength { len } => {
                write!(f, "a record has no length, but length {len} was given")
            }
            TypeError::UnknownType { id } => write!(f, "header names unregistered type id {id}"),
            TypeError::ForeignType { id } => {
                write!(f, "type id {id} was issued by another type registry")
            }
            TypeError::EphemeronWithoutKey { name } => {
                write!(f, "record type {name:?} has an ephemeron word but no weak word for its key")
            }
            TypeError::ObjectTooShort { needed, got } => {
                write!(f, "object has {needed} body words but only {got} were given")
            }
        }
    }
}

impl std::error::Error for TypeError {}

/// An object's header word: type id in the low [`ID_BITS`] bits, array length above.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header(usize);

impl Header {
    /// The header of a record of type `id`.
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, TypeRegistry, WordKind};
    /// let reg = TypeRegistry::new();
    /// use safepoint_gc::Header;
    /// let desc = TypeDesc::Record { name: "r".into(), words: vec![WordKind::Ref] };
    /// let t = reg.register(desc).unwrap();
    /// let h = Header::new_record(t);
    /// assert_eq!((h.type_id(), h.len()), (t, 0));
    /// ```
    pub fn new_record(id: TypeId) -> Header {
        Header(id.n as usize)
    }

    /// The header of an array of type `id` with `len` elements (bytes for a byte array).
    ///
    /// # Errors
    /// [`TypeError::ArrayTooLong`] if `len > MAX_ARRAY_LEN`.
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, TypeRegistry, WordKind};
    /// let reg = TypeRegistry::new();
    /// use safepoint_gc::Header;
    /// let t = reg.register(TypeDesc::RefArray { name: "v".into() }).unwrap();
    /// let h = Header::new_array(t, 12).unwrap();
    /// assert_eq!(h.len(), 12);
    /// ```
    pub fn new_array(id: TypeId, len: usize) -> Result<Header, TypeError> {
        if len > MAX_ARRAY_LEN {
            return Err(TypeError::ArrayTooLong { len });
        }
        Ok(Header(len << ID_BITS | id.n as usize))
    }

    /// Reads a header word; `None` if its id bits are zero (no header was ever written).
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, TypeRegistry, WordKind};
    /// let reg = TypeRegistry::new();
    /// use safepoint_gc::Header;
    /// let t = reg.register(TypeDesc::RefArray { name: "v".into() }).unwrap();
    /// let h = Header::new_array(t, 3).unwrap();
    /// assert_eq!(Header::from_word(h.to_word()), Some(h));
    /// assert_eq!(Header::from_word(0), None); // not a header
    /// ```
    pub fn from_word(word: usize) -> Option<Header> {
        (word & ID_MASK != 0).then_some(Header(word))
    }

    /// The word to store.
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, TypeRegistry, WordKind};
    /// let reg = TypeRegistry::new();
    /// use safepoint_gc::Header;
    /// let t = reg.register(TypeDesc::RefArray { name: "v".into() }).unwrap();
    /// let w = Header::new_array(t, 3).unwrap().to_word();
    /// assert_eq!(Header::from_word(w).unwrap().len(), 3);
    /// ```
    pub fn to_word(self) -> usize {
        self.0
    }

    /// The type id.
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, TypeRegistry, WordKind};
    /// let reg = TypeRegistry::new();
    /// use safepoint_gc::Header;
    /// let t = reg.register(TypeDesc::RefArray { name: "v".into() }).unwrap();
    /// assert_eq!(Header::new_array(t, 1).unwrap().type_id(), t);
    /// ```
    pub fn type_id(self) -> TypeId {
        TypeId::unbound((self.0 & ID_MASK) as u32)
    }

    /// The array length (0 for a record).
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, TypeRegistry, WordKind};
    /// let reg = TypeRegistry::new();
    /// let t = reg.register(TypeDesc::TaggedArray { name: "a".into() }).unwrap();
    /// assert_eq!(reg.header(t, 9).unwrap().len(), 9);
    /// ```
    pub fn len(self) -> usize {
        self.0 >> ID_BITS
    }

    /// Whether the length is zero (always so for a record).
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, TypeRegistry, WordKind};
    /// let reg = TypeRegistry::new();
    /// let t = reg.register(TypeDesc::TaggedArray { name: "a".into() }).unwrap();
    /// assert!(reg.header(t, 0).unwrap().is_empty());
    /// assert!(!reg.header(t, 1).unwrap().is_empty());
    /// ```
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// Body words (header excluded) of an object of type `desc` with length `len`.
///
/// # Errors
/// [`TypeError::RecordWithLength`] if `desc` is a record and `len != 0`;
/// [`TypeError::ArrayTooLong`] if `len > MAX_ARRAY_LEN`.
///
/// ```
/// use safepoint_gc::{TypeDesc, WordKind, types::body_words};
/// let rec = TypeDesc::Record { name: "r".into(), words: vec![WordKind::Ref; 3] };
/// assert_eq!(body_words(&rec, 0).unwrap(), 3);
/// assert_eq!(body_words(&TypeDesc::ByteArray { name: "b".into() }, 9).unwrap(), 2); // padded
/// assert!(body_words(&rec, 1).is_err()); // a record has no length
/// ```
pub fn body_words(desc: &TypeDesc, len: usize) -> Result<usize, TypeError> {
    if desc.is_array() && len > MAX_ARRAY_LEN {
        return Err(TypeError::ArrayTooLong { len });
    }
    match desc {
        TypeDesc::Record { words, .. } => {
            if len != 0 {
                return Err(TypeError::RecordWithLength { len });
            }
            Ok(words.len())
        }
        TypeDesc::RefArray { .. } | TypeDesc::TaggedArray { .. } => Ok(len),
        // len <= MAX_ARRAY_LEN < 2^40, so this cannot overflow; checked anyway.
        TypeDesc::ByteArray { .. } => match len.checked_add(WORD - 1) {
            Some(b) => Ok(b / WORD),
            None => Err(TypeError::ArrayTooLong { len }),
        },
    }
}

/// Bytes of an object of type `desc` with length `len` (0 for records), header included.
///
/// # Errors
/// As [`body_words`]; [`TypeError::ArrayTooLong`] also if the size overflows a `usize`.
///
/// ```
/// use safepoint_gc::{TypeDesc, types::object_size};
/// // A header word and four element words.
/// assert_eq!(object_size(&TypeDesc::RefArray { name: "v".into() }, 4).unwrap(), 40);
/// ```
pub fn object_size(desc: &TypeDesc, len: usize) -> Result<usize, TypeError> {
    match body_words(desc, len)?.checked_add(1).and_then(|w| w.checked_mul(WORD)) {
        Some(size) => Ok(size),
        None => Err(TypeError::ArrayTooLong { len }),
    }
}

/// The references in one object: `(body index, value)` pairs, in index order, from
/// [`scan_refs`] or [`TypeRegistry::scan`].
///
/// Each word is loaded once, with `Acquire`, as the marker loads fields: the word may be
/// written by a mutator meanwhile, with a Release store that publishes the object it refers
/// to (the crate essay, "Publication").
pub struct Refs<'a> {
    kinds: Kinds<'a>,
    rule: TagRule,
    body: &'a [AtomicUsize],
    next: usize,
}

enum Kinds<'a> {
    Record(&'a [WordKind]),
    All(WordKind),
}

impl Iterator for Refs<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        while self.next < self.body.len() {
            let i = self.next;
            self.next += 1;
            let kind = match self.kinds {
                Kinds::Record(k) => k[i],
                Kinds::All(k) => k,
            };
            if kind == WordKind::Raw {
                continue;
            }
            // Acquire: see the type's documentation.
            let w = self.body[i].load(Ordering::Acquire);
            let is_ref = match kind {
                WordKind::Ref | WordKind::Weak => w != 0,
                WordKind::Tagged | WordKind::Ephemeron => self.rule.is_ref(w),
                WordKind::Raw => false,
            };
            if is_ref {
                return Some((i, w));
            }
        }
        None
    }
}

/// The references held by the object whose header is `header`, type `desc` and body (the
/// words after the header) `body`. `Ref` words are references unless zero; `Tagged` words
/// when `rule` says so; `Raw` words and byte arrays never. Words of `body` past the object's
/// end (a slot's tail) are ignored.
///
/// # Errors
/// [`TypeError::RecordWithLength`] or [`TypeError::ArrayTooLong`] if the header's length
/// does not fit the descriptor; [`TypeError::ObjectTooShort`] if `body` is shorter than the
/// object. The header's type id is not checked against `desc` (the caller looked it up).
///
/// ```
/// use std::sync::atomic::AtomicUsize;
/// use safepoint_gc::{Header, TagRule, TypeDesc, TypeRegistry, WordKind, types::scan_refs};
/// let reg = TypeRegistry::new();
/// let words = vec![WordKind::Ref, WordKind::Tagged, WordKind::Raw];
/// let desc = TypeDesc::Record { name: "r".into(), words };
/// let t = reg.register(desc.clone()).unwrap();
/// let body = [AtomicUsize::new(0x1000), AtomicUsize::new(0x2000), AtomicUsize::new(0x3000)];
/// let refs: Vec<(usize, usize)> =
///     scan_refs(&desc, TagRule::default(), Header::new_record(t), &body).unwrap().collect();
/// assert_eq!(refs, [(0, 0x1000), (1, 0x2000)]); // the raw word is never a reference
/// ```
pub fn scan_refs<'a>(
    desc: &'a TypeDesc,
    rule: TagRule,
    header: Header,
    body: &'a [AtomicUsize],
) -> Result<Refs<'a>, TypeError> {
    let needed = body_words(desc, header.len())?;
    if body.len() < needed {
        return Err(TypeError::ObjectTooShort { needed, got: body.len() });
    }
    let kinds = match desc {
        TypeDesc::Record { words, .. } => Kinds::Record(words),
        TypeDesc::RefArray { .. } => Kinds::All(WordKind::Ref),
        TypeDesc::TaggedArray { .. } => Kinds::All(WordKind::Tagged),
        TypeDesc::ByteArray { .. } => Kinds::All(WordKind::Raw),
    };
    let body = match desc {
        // A byte array is never scanned: an empty body skips it at once.
        TypeDesc::ByteArray { .. } => &body[..0],
        _ => &body[..needed],
    };
    Ok(Refs { kinds, rule, body, next: 0 })
}

type Bucket = Box<[OnceLock<TypeDesc>]>;

/// Where id `id` lives: (bucket, offset). Bucket `b` holds ids `32*2^b - 31 ..= 32*2^(b+1) - 32`.
fn slot_of(id: u32) -> (usize, usize) {
    let i = id as usize - 1 + (1 << FIRST_BUCKET_SHIFT);
    let b = (usize::BITS - 1 - i.leading_zeros()) as usize;
    (b - FIRST_BUCKET_SHIFT as usize, i - (1 << b))
}

fn bucket_len(b: usize) -> usize {
    1 << (b + FIRST_BUCKET_SHIFT as usize)
}

struct Writer {
    names: HashMap<String, TypeId>,
    count: u32,
}

/// The types of one heap: append-only, ids stable, names unique, lock-free lookup by id.
///
/// Runs on: any thread. `register` takes a mutex (never held across anything but the
/// insertion); `get` and `scan` take no lock and never block.
pub struct TypeRegistry {
    config: RegistryConfig,
    /// This registry's number, unique in the process (never 0): the ids it issues carry it.
    tag: u32,
    max_words: usize,
    buckets: [OnceLock<Bucket>; BUCKETS],
    writer: Mutex<Writer>,
}

impl fmt::Debug for TypeRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeRegistry")
            .field("config", &self.config)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for TypeRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl TypeRegistry {
    /// An empty registry with the default [`RegistryConfig`].
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, TypeRegistry, WordKind};
    /// let reg = TypeRegistry::new();
    /// assert!(reg.is_empty());
    /// reg.register(TypeDesc::RefArray { name: "v".into() }).unwrap();
    /// assert_eq!(reg.len(), 1);
    /// ```
    pub fn new() -> TypeRegistry {
        Self::build(RegistryConfig::default())
    }

    /// An empty registry with `config`.
    ///
    /// # Errors
    /// [`TypeError::BadTagRule`] or [`TypeError::BadConfig`] if `config` is out of range.
    ///
    /// ```
    /// use safepoint_gc::{TypeRegistry, types::RegistryConfig};
    /// let mut c = RegistryConfig::default();
    /// c.max_types = 10;
    /// let reg = TypeRegistry::with_config(c).unwrap();
    /// assert_eq!(reg.config().max_types, 10);
    /// ```
    pub fn with_config(config: RegistryConfig) -> Result<TypeRegistry, TypeError> {
        config.tag_rule.validate()?;
        if config.max_types == 0 || config.max_types > MAX_TYPES {
            return Err(TypeError::BadConfig { reason: "max_types must be in 1..=MAX_TYPES" });
        }
        if !(2 * WORD..=MAX_SMALL).contains(&config.max_record_bytes) {
            return Err(TypeError::BadConfig {
                reason: "max_record_bytes must be in 16..=MAX_SMALL (32768)",
            });
        }
        Ok(Self::build(config))
    }

    fn build(config: RegistryConfig) -> TypeRegistry {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        // Relaxed: only uniqueness matters. After 2^32 registries the numbers wrap (skipping
        // 0, "no registry"), and one may be shared: then a foreign id goes unnoticed.
        let mut tag = NEXT.fetch_add(1, Ordering::Relaxed);
        if tag == 0 {
            tag = NEXT.fetch_add(1, Ordering::Relaxed);
        }
        TypeRegistry {
            config,
            tag,
            max_words: (config.max_record_bytes / WORD - 1).min(MAX_RECORD_WORDS),
            buckets: std::array::from_fn(|_| OnceLock::new()),
            writer: Mutex::new(Writer { names: HashMap::new(), count: 0 }),
        }
    }

    /// The configuration.
    ///
    /// ```
    /// use safepoint_gc::TypeRegistry;
    /// let reg = TypeRegistry::new();
    /// assert_eq!(reg.config().tag_rule, reg.tag_rule());
    /// ```
    pub fn config(&self) -> RegistryConfig {
        self.config
    }

    /// The tag rule for tagged words.
    ///
    /// ```
    /// use safepoint_gc::{TagRule, TypeRegistry};
    /// assert_eq!(TypeRegistry::new().tag_rule(), TagRule::default());
    /// ```
    pub fn tag_rule(&self) -> TagRule {
        self.config.tag_rule
    }

    /// The most words a record may have here.
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, TypeRegistry, WordKind};
    /// let reg = TypeRegistry::new();
    /// let max = reg.max_record_words();
    /// let too_big = TypeDesc::Record { name: "big".into(), words: vec![WordKind::Raw; max + 1] };
    /// assert!(reg.register(too_big).is_err());
    /// ```
    pub fn max_record_words(&self) -> usize {
        self.max_words
    }

    /// How many types are registered.
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, TypeRegistry, WordKind};
    /// let reg = TypeRegistry::new();
    /// reg.register(TypeDesc::RefArray { name: "a".into() }).unwrap();
    /// reg.register(TypeDesc::RefArray { name: "b".into() }).unwrap();
    /// assert_eq!(reg.len(), 2);
    /// ```
    pub fn len(&self) -> usize {
        self.locked(|w| w.count as usize)
    }

    /// Whether no type is registered.
    ///
    /// ```
    /// assert!(safepoint_gc::TypeRegistry::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f` with the writer lock held, as a section the preemption signal never stops
    /// (`crate::np`): a goroutine held in place with the lock would block every other
    /// registration, and with it a stop of the world, until the stop gave it back.
    fn locked<R>(&self, f: impl FnOnce(&mut Writer) -> R) -> R {
        crate::np(|| {
            // A panic while holding the lock cannot leave it inconsistent: the only panics
            // possible are allocation failures, before anything is published.
            let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut w)
        })
    }

    /// Checks `desc` and adds it, returning its id; ids are issued 1, 2, 3, ... in order.
    /// Nothing is stored if an error is returned.
    ///
    /// # Errors
    /// [`TypeError::EmptyName`], [`TypeError::NameTooLong`], [`TypeError::DuplicateName`],
    /// [`TypeError::EmptyRecord`], [`TypeError::RecordTooLarge`],
    /// [`TypeError::TooManyTypes`].
    ///
    /// ```
    /// use safepoint_gc::{Gc, TypeDesc, TypeError, WordKind};
    /// let rt = safepoint_sched::Runtime::builder().procs(1).build().unwrap();
    /// let gc = Gc::new(&rt).unwrap();
    /// let node = gc.types().register(TypeDesc::Record {
    ///     name: "node".into(),
    ///     words: vec![WordKind::Ref, WordKind::Ref, WordKind::Raw], // left, right, a raw word
    /// }).unwrap();
    /// let text = gc.types().register(TypeDesc::ByteArray { name: "text".into() }).unwrap();
    /// assert_ne!(node, text);
    /// // Names are unique; a bad descriptor is an error and nothing is stored.
    /// let again = gc.types().register(TypeDesc::ByteArray { name: "text".into() });
    /// assert!(matches!(again, Err(TypeError::DuplicateName { .. })));
    /// ```
    pub fn register(&self, desc: TypeDesc) -> Result<TypeId, TypeError> {
        let name = desc.name();
        if name.is_empty() {
            return Err(TypeError::EmptyName);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(TypeError::NameTooLong { len: name.len() });
        }
        if let TypeDesc::Record { words, name } = &desc {
            if words.is_empty() {
                return Err(TypeError::EmptyRecord { name: name.clone() });
            }
            if words.len() > self.max_words {
                return Err(TypeError::RecordTooLarge {
                    name: name.clone(),
                    words: words.len(),
                    max_words: self.max_words,
                });
            }
            if words.contains(&WordKind::Ephemeron) && !words.contains(&WordKind::Weak) {
                return Err(TypeError::EphemeronWithoutKey { name: name.clone() });
            }
        }
        self.locked(move |w| {
            let name = desc.name();
            if let Some(&existing) = w.names.get(name) {
                return Err(TypeError::DuplicateName { name: name.to_owned(), existing });
            }
            if w.count >= self.config.max_types {
                return Err(TypeError::TooManyTypes { max: self.config.max_types });
            }
            let id = TypeId { n: w.count + 1, reg: self.tag };
            let (b, off) = slot_of(id.n);
            let bucket = self.buckets[b]
                .get_or_init(|| (0..bucket_len(b)).map(|_| OnceLock::new()).collect());
            w.names.insert(name.to_owned(), id);
            // Only the lock holder sets entries and each id is issued once, so the slot is empty.
            // The set's Release pairs with the Acquire in `get`'s `OnceLock::get`.
            let fresh = bucket[off].set(desc).is_ok();
            debug_assert!(fresh, "type id {} issued twice", id.n);
            w.count = id.n;
            Ok(id)
        })
    }

    /// The descriptor of `id`, if registered here (`None` for an id issued by another
    /// registry). Lock-free; the reference lives as long as the registry, since descriptors
    /// never move or change.
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, TypeRegistry, WordKind};
    /// let reg = TypeRegistry::new();
    /// let t = reg.register(TypeDesc::ByteArray { name: "s".into() }).unwrap();
    /// assert_eq!(reg.get(t).unwrap().name(), "s");
    /// ```
    #[inline]
    pub fn get(&self, id: TypeId) -> Option<&TypeDesc> {
        if id.reg != 0 && id.reg != self.tag {
            return None;
        }
        let (b, off) = slot_of(id.n);
        self.buckets.get(b)?.get()?.get(off)?.get()
    }

    /// `id` as an id of this registry (for one read from a header of this registry's heap).
    #[inline]
    pub(crate) fn bind(&self, id: TypeId) -> TypeId {
        TypeId { n: id.n, reg: self.tag }
    }

    /// The descriptor of `id`, or why there is none: [`TypeError::ForeignType`] for an id of
    /// another registry, [`TypeError::UnknownType`] for one not registered here.
    #[inline]
    pub(crate) fn desc(&self, id: TypeId) -> Result<&TypeDesc, TypeError> {
        if id.reg != 0 && id.reg != self.tag {
            return Err(TypeError::ForeignType { id: id.n });
        }
        match self.get(id) {
            Some(d) => Ok(d),
            // Built only here: `ok_or` would build and drop it on every call.
            None => Err(TypeError::UnknownType { id: id.n }),
        }
    }

    /// The id of the type named `name`, if registered (takes the writer lock).
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, TypeRegistry, WordKind};
    /// let reg = TypeRegistry::new();
    /// let t = reg.register(TypeDesc::ByteArray { name: "s".into() }).unwrap();
    /// assert_eq!(reg.lookup("s"), Some(t));
    /// assert_eq!(reg.lookup("t"), None);
    /// ```
    pub fn lookup(&self, name: &str) -> Option<TypeId> {
        self.locked(|w| w.names.get(name).copied())
    }

    /// The header for a new object of type `id` with length `len` (0 for a record).
    ///
    /// # Errors
    /// [`TypeError::UnknownType`]; [`TypeError::ForeignType`] for an id of another registry;
    /// [`TypeError::RecordWithLength`] for a record with `len != 0`;
    /// [`TypeError::ArrayTooLong`].
    ///
    /// ```
    /// use safepoint_gc::{TypeDesc, TypeRegistry, WordKind};
    /// let reg = TypeRegistry::new();
    /// let desc = TypeDesc::Record { name: "r".into(), words: vec![WordKind::Ref] };
    /// let r = reg.register(desc).unwrap();
    /// assert_eq!(reg.header(r, 0).unwrap().type_id(), r);
    /// assert!(reg.header(r, 2).is_err()); // a record has no length
    /// ```
    #[inline]
    pub fn header(&self, id: TypeId, len: usize) -> Result<Header, TypeError> {
        let desc = self.desc(id)?;
        body_words(desc, len)?;
        if desc.is_array() { Header::new_array(id, len) } else { Ok(Header::new_record(id)) }
    }

    /// The references in the object with `header` and `body`: looks the descriptor up and
    /// calls [`scan_refs`] with this registry's tag rule. Lock-free.
    ///
    /// # Errors
    /// [`TypeError::UnknownType`] if the header's id is not registered; otherwise as
    /// [`scan_refs`].
    ///
    /// ```
    /// use std::sync::atomic::AtomicUsize;
    /// use safepoint_gc::{TypeDesc, TypeRegistry};
    /// let reg = TypeRegistry::new();
    /// let v = reg.register(TypeDesc::TaggedArray { name: "v".into() }).unwrap();
    /// let h = reg.header(v, 2).unwrap();
    /// // An immediate (low bit 1) and a reference.
    /// let body = [AtomicUsize::new(0x7), AtomicUsize::new(0x5000)];
    /// let refs: Vec<_> = reg.scan(h, &body).unwrap().map(|(_, w)| w).collect();
    /// assert_eq!(refs, [0x5000]);
    /// ```
    pub fn scan<'a>(
        &'a self,
        header: Header,
        body: &'a [AtomicUsize],
    ) -> Result<Refs<'a>, TypeError> {
        let id = header.type_id();
        let desc = match self.get(id) {
            Some(d) => Ok(d),
            // Built only here: `ok_or` would build and drop it on every call.
            None => Err(TypeError::UnknownType { id: id.n }),
        }?;
        scan_refs(desc, self.config.tag_rule, header, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(name: &str, words: &[WordKind]) -> TypeDesc {
        TypeDesc::Record { name: name.into(), words: words.to_vec() }
    }

    fn atomics(words: &[usize]) -> Vec<AtomicUsize> {
        words.iter().map(|&w| AtomicUsize::new(w)).collect()
    }

    fn small(max_types: u32) -> TypeRegistry {
        TypeRegistry::with_config(RegistryConfig { max_types, ..RegistryConfig::default() })
            .unwrap()
    }

    #[test]
    fn ids_are_issued_in_order_and_stable() {
        let r = TypeRegistry::new();
        let a = r.register(rec("pair", &[WordKind::Ref, WordKind::Tagged])).unwrap();
        let b = r.register(TypeDesc::RefArray { name: "vec".into() }).unwrap();
        assert_eq!((a.get(), b.get()), (1, 2));
        assert_eq!(r.get(a), Some(&rec("pair", &[WordKind::Ref, WordKind::Tagged])));
        assert_eq!(r.get(b).map(TypeDesc::name), Some("vec"));
        assert_eq!(r.lookup("vec"), Some(b));
        assert_eq!(r.get(TypeId::from_u32(3).unwrap()), None);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn empty_name_is_refused() {
        let r = TypeRegistry::new();
        let e = r.register(TypeDesc::ByteArray { name: String::new() }).unwrap_err();
        assert_eq!(e, TypeError::EmptyName);
        assert_eq!(e.to_string(), "type name is empty");
        assert!(r.is_empty());
    }

    #[test]
    fn long_name_is_refused() {
        let r = TypeRegistry::new();
        let name = "x".repeat(MAX_NAME_LEN + 1);
        let e = r.register(TypeDesc::ByteArray { name }).unwrap_err();
        assert_eq!(e, TypeError::NameTooLong { len: MAX_NAME_LEN + 1 });
        r.register(TypeDesc::ByteArray { name: "x".repeat(MAX_NAME_LEN) }).unwrap();
    }

    #[test]
    fn duplicate_name_is_refused_across_kinds() {
        let r = TypeRegistry::new();
        let a = r.register(rec("str", &[WordKind::Raw])).unwrap();
        let e = r.register(TypeDesc::ByteArray { name: "str".into() }).unwrap_err();
        assert_eq!(e, TypeError::DuplicateName { name: "str".into(), existing: a });
        assert!(e.to_string().contains("\"str\" is already registered as type id 1"), "{e}");
        assert_eq!(r.len(), 1);
        assert_eq!(r.get(a), Some(&rec("str", &[WordKind::Raw])));
    }

    #[test]
    fn empty_record_is_refused() {
        let r = TypeRegistry::new();
        let e = r.register(rec("unit", &[])).unwrap_err();
        assert_eq!(e, TypeError::EmptyRecord { name: "unit".into() });
        assert!(r.lookup("unit").is_none());
    }

    #[test]
    fn record_over_the_largest_size_class_is_refused() {
        let r = TypeRegistry::new();
        assert_eq!(r.max_record_words(), MAX_RECORD_WORDS);
        let ok = vec![WordKind::Raw; MAX_RECORD_WORDS];
        let id = r.register(rec("big", &ok)).unwrap();
        assert_eq!(object_size(r.get(id).unwrap(), 0), Ok(MAX_SMALL));
        let e = r.register(rec("bigger", &[WordKind::Raw; MAX_RECORD_WORDS + 1])).unwrap_err();
        assert_eq!(
            e,
            TypeError::RecordTooLarge {
                name: "bigger".into(),
                words: MAX_RECORD_WORDS + 1,
                max_words: MAX_RECORD_WORDS
            }
        );
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn record_over_a_configured_limit_is_refused() {
        let config = RegistryConfig { max_record_bytes: 64, ..RegistryConfig::default() };
        let r = TypeRegistry::with_config(config).unwrap();
        assert_eq!(r.max_record_words(), 7);
        r.register(rec("seven", &[WordKind::Ref; 7])).unwrap();
        let e = r.register(rec("eight", &[WordKind::Ref; 8])).unwrap_err();
        assert!(matches!(e, TypeError::RecordTooLarge { words: 8, max_words: 7, .. }), "{e}");
    }

    #[test]
    fn too_many_types_is_refused_and_stores_nothing() {
        let r = small(2);
        r.register(TypeDesc::ByteArray { name: "a".into() }).unwrap();
        r.register(TypeDesc::ByteArray { name: "b".into() }).unwrap();
        let e = r.register(TypeDesc::ByteArray { name: "c".into() }).unwrap_err();
        assert_eq!(e, TypeError::TooManyTypes { max: 2 });
        assert_eq!(r.lookup("c"), None);
        assert_eq!(r.get(TypeId::from_u32(3).unwrap()), None);
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn bad_configs_are_refused() {
        let d = RegistryConfig::default();
        for (mask, ref_tag) in [(0, 0), (8, 0), (1, 2), (3, 4), (usize::MAX, 0)] {
            let c = RegistryConfig { tag_rule: TagRule { mask, ref_tag }, ..d };
            assert_eq!(
                TypeRegistry::with_config(c).unwrap_err(),
                TypeError::BadTagRule { mask, ref_tag }
            );
        }
        for max_types in [0, MAX_TYPES + 1] {
            let e = TypeRegistry::with_config(RegistryConfig { max_types, ..d }).unwrap_err();
            assert!(matches!(e, TypeError::BadConfig { .. }), "{e}");
        }
        for max_record_bytes in [0, 15, MAX_SMALL + 1] {
            let e =
                TypeRegistry::with_config(RegistryConfig { max_record_bytes, ..d }).unwrap_err();
            assert!(matches!(e, TypeError::BadConfig { .. }), "{e}");
        }
        let c = RegistryConfig {
            tag_rule: TagRule { mask: 7, ref_tag: 5 },
            max_types: MAX_TYPES,
            max_record_bytes: 16,
        };
        assert_eq!(TypeRegistry::with_config(c).unwrap().max_record_words(), 1);
    }

    #[test]
    fn ids_cross_bucket_boundaries() {
        let r = TypeRegistry::new();
        let ids: Vec<TypeId> = (0..300)
            .map(|i| r.register(TypeDesc::ByteArray { name: format!("t{i}") }).unwrap())
            .collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(id.get() as usize, i + 1);
            assert_eq!(r.get(*id).unwrap().name(), format!("t{i}"));
        }
        // Every id maps to a distinct in-range slot, up to the largest.
        assert_eq!(slot_of(1), (0, 0));
        assert_eq!(slot_of(32), (0, 31));
        assert_eq!(slot_of(33), (1, 0));
        let (b, off) = slot_of(MAX_TYPES);
        assert_eq!(b, BUCKETS - 1);
        assert!(off < bucket_len(b));
    }

    #[test]
    fn header_limits() {
        let id = TypeId::from_u32(MAX_TYPES).unwrap();
        assert_eq!(TypeId::from_u32(0), None);
        assert_eq!(TypeId::from_u32(MAX_TYPES + 1), None);
        let h = Header::new_array(id, MAX_ARRAY_LEN).unwrap();
        assert_eq!((h.type_id(), h.len()), (id, MAX_ARRAY_LEN));
        assert_eq!(
            Header::new_array(id, MAX_ARRAY_LEN + 1),
            Err(TypeError::ArrayTooLong { len: MAX_ARRAY_LEN + 1 })
        );
        assert_eq!(Header::from_word(0), None);
        assert_eq!(Header::from_word(5 << ID_BITS), None);
        let r = Header::new_record(TypeId::from_u32(1).unwrap());
        assert!(r.is_empty());
    }

    #[test]
    fn registry_header_checks_kind_and_id() {
        let r = TypeRegistry::new();
        let p = r.register(rec("p", &[WordKind::Ref])).unwrap();
        let v = r.register(TypeDesc::TaggedArray { name: "v".into() }).unwrap();
        assert_eq!(r.header(p, 0), Ok(Header::new_record(p)));
        assert_eq!(r.header(p, 1), Err(TypeError::RecordWithLength { len: 1 }));
        assert_eq!(r.header(v, 9).unwrap().len(), 9);
        let unknown = TypeId::from_u32(3).unwrap();
        assert_eq!(r.header(unknown, 0), Err(TypeError::UnknownType { id: 3 }));
        assert_eq!(
            r.scan(Header::new_record(unknown), &[]).err(),
            Some(TypeError::UnknownType { id: 3 })
        );
    }

    #[test]
    fn sizes() {
        let b = TypeDesc::ByteArray { name: "b".into() };
        let t = TypeDesc::TaggedArray { name: "t".into() };
        assert_eq!(object_size(&b, 0), Ok(8));
        assert_eq!(object_size(&b, 1), Ok(16));
        assert_eq!(object_size(&b, 8), Ok(16));
        assert_eq!(object_size(&b, 9), Ok(24));
        assert_eq!(object_size(&t, 3), Ok(32));
        assert_eq!(object_size(&t, MAX_ARRAY_LEN), Ok((MAX_ARRAY_LEN + 1) * 8));
        assert_eq!(object_size(&t, usize::MAX), Err(TypeError::ArrayTooLong { len: usize::MAX }));
        assert_eq!(
            object_size(&b, MAX_ARRAY_LEN + 1),
            Err(TypeError::ArrayTooLong { len: MAX_ARRAY_LEN + 1 })
        );
        assert_eq!(
            object_size(&rec("r", &[WordKind::Raw]), 1),
            Err(TypeError::RecordWithLength { len: 1 })
        );
    }

    #[test]
    fn scan_examples() {
        let r = TypeRegistry::new();
        let id = r
            .register(rec(
                "node",
                &[WordKind::Ref, WordKind::Tagged, WordKind::Raw, WordKind::Tagged, WordKind::Ref],
            ))
            .unwrap();
        // ref 0x1000; tagged pointer 0x2000; raw that looks like a pointer; small int 7 (tag 1);
        // null ref; then a tail word that must be ignored.
        let body = atomics(&[0x1000, 0x2000, 0x3000, (7 << 1) | 1, 0, 0x4000]);
        let got: Vec<_> = r.scan(Header::new_record(id), &body).unwrap().collect();
        assert_eq!(got, vec![(0, 0x1000), (1, 0x2000)]);
        let e = r.scan(Header::new_record(id), &body[..4]).err();
        assert_eq!(e, Some(TypeError::ObjectTooShort { needed: 5, got: 4 }));

        let bytes = r.register(TypeDesc::ByteArray { name: "bytes".into() }).unwrap();
        let h = r.header(bytes, 16).unwrap();
        assert_eq!(r.scan(h, &atomics(&[0x1000, 0x2000])).unwrap().count(), 0);
        assert!(r.scan(h, &atomics(&[0x1000])).is_err());
    }

    #[test]
    fn scan_refuses_a_record_header_with_a_length() {
        let r = TypeRegistry::new();
        let id = r.register(rec("r", &[WordKind::Ref])).unwrap();
        let bad = Header::from_word((1 << ID_BITS) | id.get() as usize).unwrap();
        let body = atomics(&[0x1000, 0x2000]);
        assert_eq!(r.scan(bad, &body).err(), Some(TypeError::RecordWithLength { len: 1 }));
    }

    #[test]
    fn scan_uses_the_registry_tag_rule() {
        // Tag 0b010 marks a pointer within mask 0b111.
        let tag_rule = TagRule { mask: 7, ref_tag: 2 };
        let r = TypeRegistry::with_config(RegistryConfig { tag_rule, ..RegistryConfig::default() })
            .unwrap();
        let id = r.register(TypeDesc::TaggedArray { name: "t".into() }).unwrap();
        let body = atomics(&[0x1002, 0x1000, 0x1003, 0x2002]);
        let got: Vec<_> = r.scan(r.header(id, 4).unwrap(), &body).unwrap().collect();
        assert_eq!(got, vec![(0, 0x1002), (3, 0x2002)]);
    }

    #[test]
    fn concurrent_registration_and_lookup() {
        let r = TypeRegistry::new();
        std::thread::scope(|s| {
            for t in 0..2 {
                let r = &r;
                s.spawn(move || {
                    for i in 0..200 {
                        let name = format!("w{t}-{i}");
                        let id = r.register(TypeDesc::RefArray { name: name.clone() }).unwrap();
                        assert_eq!(r.get(id).unwrap().name(), name);
                    }
                });
            }
            let r = &r;
            s.spawn(move || {
                // A reader sees each id either absent or complete, never torn.
                for n in 1..=400 {
                    let id = TypeId::from_u32(n).unwrap();
                    if let Some(d) = r.get(id) {
                        assert!(d.name().starts_with('w'));
                        assert_eq!(r.lookup(d.name()), Some(id));
                    }
                }
            });
        });
        assert_eq!(r.len(), 400);
        let mut names: Vec<_> = (1..=400)
            .map(|n| r.get(TypeId::from_u32(n).unwrap()).unwrap().name().to_owned())
            .collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 400);
    }

    fn kind() -> impl Strategy<Value = WordKind> {
        prop_oneof![Just(WordKind::Ref), Just(WordKind::Tagged), Just(WordKind::Raw)]
    }

    /// Words that exercise every case: null, pointers, small ints, odd tags.
    fn word() -> impl Strategy<Value = usize> {
        prop_oneof![
            Just(0usize),
            any::<usize>(),
            (1usize..1 << 20).prop_map(|p| p << 3),
            any::<u32>().prop_map(|i| ((i as usize) << 1) | 1)
        ]
    }

    #[derive(Clone, Debug)]
    enum Shape {
        Record(Vec<WordKind>),
        Refs,
        Tagged,
        Bytes,
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            prop::collection::vec(kind(), 1..40).prop_map(Shape::Record),
            Just(Shape::Refs),
            Just(Shape::Tagged),
            Just(Shape::Bytes),
        ]
    }

    fn tag_rule() -> impl Strategy<Value = TagRule> {
        (1usize..8, 0usize..8).prop_map(|(mask, t)| TagRule { mask, ref_tag: t & mask })
    }

    /// The plain model: the word kind of body word `i`, or `None` past the object's end.
    fn model_kind(shape: &Shape, len: usize, i: usize) -> Option<WordKind> {
        match shape {
            Shape::Record(k) => k.get(i).copied(),
            Shape::Refs => (i < len).then_some(WordKind::Ref),
            Shape::Tagged => (i < len).then_some(WordKind::Tagged),
            Shape::Bytes => (i < len.div_ceil(8)).then_some(WordKind::Raw),
        }
    }

    proptest! {
        #[test]
        fn scan_matches_the_model(
            shapes in prop::collection::vec(shape(), 1..8),
            pick in any::<prop::sample::Index>(),
            len in 0usize..60,
            words in prop::collection::vec(word(), 0..80),
            rule in tag_rule(),
        ) {
            let r = TypeRegistry::with_config(RegistryConfig { tag_rule: rule, ..RegistryConfig::default() }).unwrap();
            let ids: Vec<TypeId> = shapes.iter().enumerate().map(|(n, s)| {
                let name = format!("t{n}");
                let d = match s {
                    Shape::Record(k) => TypeDesc::Record { name, words: k.clone() },
                    Shape::Refs => TypeDesc::RefArray { name },
                    Shape::Tagged => TypeDesc::TaggedArray { name },
                    Shape::Bytes => TypeDesc::ByteArray { name },
                };
                r.register(d).unwrap()
            }).collect();
            let n = pick.index(shapes.len());
            let (shape, id) = (&shapes[n], ids[n]);
            let len = if matches!(shape, Shape::Record(_)) { 0 } else { len };
            let h = r.header(id, len).unwrap();
            let h = Header::from_word(h.to_word()).unwrap();
            let needed = (0..).take_while(|&i| model_kind(shape, len, i).is_some()).count();
            prop_assert_eq!(object_size(r.get(id).unwrap(), len), Ok((needed + 1) * 8));
            let body = atomics(&words);
            match r.scan(h, &body) {
                Err(e) => {
                    prop_assert!(words.len() < needed);
                    prop_assert_eq!(e, TypeError::ObjectTooShort { needed, got: words.len() });
                }
                Ok(refs) => {
                    prop_assert!(words.len() >= needed);
                    let got: Vec<_> = refs.collect();
                    let want: Vec<_> = (0..needed).filter_map(|i| {
                        let w = words[i];
                        let is_ref = match model_kind(shape, len, i).unwrap() {
                            WordKind::Ref | WordKind::Weak => w != 0,
                            WordKind::Tagged | WordKind::Ephemeron => {
                                w != 0 && w & rule.mask == rule.ref_tag
                            }
                            WordKind::Raw => false,
                        };
                        is_ref.then_some((i, w))
                    }).collect();
                    prop_assert_eq!(got, want);
                }
            }
        }

        #[test]
        fn header_round_trips(id in 1..=MAX_TYPES, len in 0..=MAX_ARRAY_LEN) {
            let id = TypeId::from_u32(id).unwrap();
            let h = Header::new_array(id, len).unwrap();
            let back = Header::from_word(h.to_word()).unwrap();
            prop_assert_eq!((back.type_id(), back.len()), (id, len));
            let r = Header::from_word(Header::new_record(id).to_word()).unwrap();
            prop_assert_eq!((r.type_id(), r.len()), (id, 0));
        }

        #[test]
        fn sizes_never_overflow_silently(
            len in prop_oneof![any::<usize>(), 0..=MAX_ARRAY_LEN + 8, Just(MAX_ARRAY_LEN)],
            bytes in any::<bool>(),
        ) {
            let d = if bytes { TypeDesc::ByteArray { name: "b".into() } } else { TypeDesc::RefArray { name: "r".into() } };
            match object_size(&d, len) {
                Ok(size) => {
                    prop_assert!(len <= MAX_ARRAY_LEN);
                    let want = if bytes { 8 + (len as u128).div_ceil(8) * 8 } else { 8 + len as u128 * 8 };
                    prop_assert_eq!(size as u128, want);
                }
                Err(e) => {
                    prop_assert!(len > MAX_ARRAY_LEN);
                    prop_assert_eq!(e, TypeError::ArrayTooLong { len });
                }
            }
        }
    }
}
