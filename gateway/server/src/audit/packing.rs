//! How an event's canonical text is kept at rest (docs/architecture.md §7, "Rows at rest"): one
//! byte naming a dictionary, then a Zstandard frame of the text compressed against that
//! dictionary. The chain is over the canonical text, never over these bytes: export, query,
//! replay and verify read the text back, and an edited or corrupt packing shows up as a hash that
//! does not match.
//!
//! Events repeat most of their text (every key is always present, and a decision's Cedar
//! request, entities and summary spell the same names and escapes each time), so a dictionary
//! of a few real events takes a 2.8 KB decision to a few hundred bytes. A dictionary is frozen
//! once shipped: rows name theirs by number, and every number stays readable.

use std::cell::RefCell;
use std::sync::OnceLock;

use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};

/// The dictionary new rows are packed with.
const CURRENT: u8 = 1;

/// Dictionary 1: three events of format 1 (a refusal, a personal_sign decision, an ERC-20
/// transfer decision), one per line, the most common kind last where Zstandard finds it
/// cheapest to refer to.
const DICTIONARY_1: &[u8] = include_bytes!("dictionary/1.jsonl");

/// Zstandard's level for new rows: its fastest default, which with the dictionary already
/// packs a decision to ~4 % of its text.
const LEVEL: i32 = 3;

/// No event unpacks to more than this: a packing that claims more is refused instead of being
/// allocated (a row edited into a decompression bomb).
const MAX_EVENT: u64 = 16 << 20;

/// Why a packed row could not be read back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PackingError {
    #[error("the packed event names dictionary {0}, which this build does not know")]
    UnknownDictionary(u8),
    #[error("the packed event is empty")]
    Empty,
    #[error("the packed event does not say its length, or claims more than {MAX_EVENT} bytes")]
    Length,
    #[error("the packed event does not unpack: {0}")]
    Zstd(String),
    #[error("the packed event is not UTF-8")]
    Utf8,
    #[error("packing an event: {0}")]
    Pack(String),
}

fn encoder() -> &'static EncoderDictionary<'static> {
    static DICT: OnceLock<EncoderDictionary<'static>> = OnceLock::new();
    DICT.get_or_init(|| EncoderDictionary::copy(DICTIONARY_1, LEVEL))
}

fn decoder(id: u8) -> Result<&'static DecoderDictionary<'static>, PackingError> {
    static DICT_1: OnceLock<DecoderDictionary<'static>> = OnceLock::new();
    match id {
        1 => Ok(DICT_1.get_or_init(|| DecoderDictionary::copy(DICTIONARY_1))),
        other => Err(PackingError::UnknownDictionary(other)),
    }
}

thread_local! {
    // One compression and one decompression context per thread, reused: creating one per event
    // costs more than the event.
    static COMPRESSOR: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<(u8, Decompressor<'static>)>> = const { RefCell::new(None) };
}

/// The packed form of `canonical`.
pub(crate) fn pack(canonical: &str) -> Result<Vec<u8>, PackingError> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let c = match &mut *slot {
            Some(c) => c,
            empty => empty.insert(
                Compressor::with_prepared_dictionary(encoder())
                    .map_err(|e| PackingError::Pack(e.to_string()))?,
            ),
        };
        let frame = c
            .compress(canonical.as_bytes())
            .map_err(|e| PackingError::Pack(e.to_string()))?;
        let mut out = Vec::with_capacity(frame.len() + 1);
        out.push(CURRENT);
        out.extend_from_slice(&frame);
        Ok(out)
    })
}

/// The canonical text of a packed row.
pub(crate) fn unpack(packed: &[u8]) -> Result<String, PackingError> {
    let (&id, frame) = packed.split_first().ok_or(PackingError::Empty)?;
    let dict = decoder(id)?;
    let len = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if n <= MAX_EVENT => usize::try_from(n).map_err(|_| PackingError::Length)?,
        _ => return Err(PackingError::Length),
    };
    let bytes = DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(have, _)| *have != id) {
            let d = Decompressor::with_prepared_dictionary(dict)
                .map_err(|e| PackingError::Zstd(e.to_string()))?;
            *slot = Some((id, d));
        }
        match &mut *slot {
            Some((_, d)) => d
                .decompress(frame, len)
                .map_err(|e| PackingError::Zstd(e.to_string())),
            None => Err(PackingError::Zstd("no decompression context".to_owned())),
        }
    })?;
    String::from_utf8(bytes).map_err(|_| PackingError::Utf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn a_shipped_dictionary_never_changes() {
        // Rows packed with dictionary 1 are readable only with these exact bytes.
        assert_eq!(
            hex::encode(Sha256::digest(DICTIONARY_1)),
            "43ca1d49649e89a966a381f7e5bf792bad9151919ca53c318691c25fa6e1336f"
        );
    }

    #[test]
    fn round_trips_and_shrinks_an_event() {
        let text = std::str::from_utf8(DICTIONARY_1)
            .unwrap()
            .lines()
            .last()
            .unwrap();
        let other = text.replace(
            "0x2222222222222222222222222222222222222222",
            "0x3333333333333333333333333333333333333333",
        );
        let packed = pack(&other).unwrap();
        assert_eq!(packed[0], CURRENT);
        assert!(
            packed.len() * 10 < other.len(),
            "{} of {}",
            packed.len(),
            other.len()
        );
        assert_eq!(unpack(&packed).unwrap(), other);
        // Any text, not only events.
        for t in ["", "é😀\u{0}", &"x".repeat(100_000)] {
            assert_eq!(unpack(&pack(t).unwrap()).unwrap(), t);
        }
    }

    #[test]
    fn a_damaged_packing_is_an_error_not_a_panic() {
        let packed = pack("{\"a\":1}").unwrap();
        assert!(matches!(unpack(&[]), Err(PackingError::Empty)));
        let mut other_dict = packed.clone();
        other_dict[0] = 9;
        assert!(matches!(
            unpack(&other_dict),
            Err(PackingError::UnknownDictionary(9))
        ));
        for cut in 1..packed.len() {
            assert!(unpack(&packed[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = packed.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 0xff;
        }
        assert_ne!(unpack(&flipped).ok().as_deref(), Some("{\"a\":1}"));
        // A frame that claims a huge length is refused before anything is allocated.
        let huge = [
            &[1u8][..],
            &[
                0x28, 0xb5, 0x2f, 0xfd, 0xa4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
            ][..],
        ]
        .concat();
        assert!(matches!(unpack(&huge), Err(PackingError::Length)));
    }
}
