//! Codepoint classes as llama.cpp's unicode.cpp defines them, and GPT-2's byte↔char map.

use std::sync::OnceLock;

use super::unicode_data::{CATEGORY_RANGES, WHITESPACE};

pub(super) const NUMBER: u8 = 0x02;
pub(super) const LETTER: u8 = 0x04;
pub(super) const PUNCTUATION: u8 = 0x20;

/// One codepoint's class. `Flags::default()` (category 0) stands for "outside the
/// fragment", which llama.cpp's splitters test through `as_uint() == 0`; every real
/// codepoint has a non-zero category (unassigned ones are UNDEFINED = 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Flags {
    pub category: u8,
    pub whitespace: bool,
}

impl Flags {
    pub fn of(c: char) -> Flags {
        let cpt = c as u32;
        // partition_point gives the first range starting after cpt; the table starts at 0,
        // so the index is at least 1.
        let i = CATEGORY_RANGES.partition_point(|&(start, _)| start <= cpt);
        let category = CATEGORY_RANGES[i.saturating_sub(1)].1;
        let whitespace = WHITESPACE.binary_search(&cpt).is_ok();
        Flags { category, whitespace }
    }
    pub fn is_letter(self) -> bool {
        self.category == LETTER
    }
    pub fn is_number(self) -> bool {
        self.category == NUMBER
    }
    pub fn is_any(self) -> bool {
        self.category != 0 || self.whitespace
    }
}

/// GPT-2 maps every byte to a printable char so BPE merges can be written as text:
/// printable Latin-1 bytes map to themselves, the other 68 to U+0100.. in byte order.
fn is_printable_byte(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

struct ByteMap {
    to_char: [char; 256],
    /// Indexed by codepoint 0..0x144 (the largest mapped char is U+0143).
    to_byte: Vec<Option<u8>>,
}

fn byte_map() -> &'static ByteMap {
    static MAP: OnceLock<ByteMap> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut to_char = ['\0'; 256];
        let mut to_byte = vec![None; 0x144];
        let mut n = 0u32;
        for b in 0..=255u8 {
            let cpt = if is_printable_byte(b) {
                b as u32
            } else {
                n += 1;
                255 + n
            };
            // Every cpt here is below 0x144, a valid scalar value.
            let c = char::from_u32(cpt).unwrap_or('\u{FFFD}');
            to_char[b as usize] = c;
            to_byte[cpt as usize] = Some(b);
        }
        ByteMap { to_char, to_byte }
    })
}

pub(super) fn byte_to_char(b: u8) -> char {
    byte_map().to_char[b as usize]
}

pub(super) fn char_to_byte(c: char) -> Option<u8> {
    byte_map().to_byte.get(c as usize).copied().flatten()
}

/// A pre-tokenized word in GPT-2's byte alphabet.
pub(super) fn byte_encode(word: &str) -> String {
    word.bytes().map(byte_to_char).collect()
}
