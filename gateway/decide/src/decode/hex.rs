//! Strict 0x-hex: callers sign what these bytes say, so a lenient reading (missing prefix, odd
//! length, stray whitespace) would let two different strings mean the same request, or one
//! string mean something other than what the caller's tooling displayed.

use alloy::primitives::{Address, B256};

use crate::error::{Error, Result};

/// Decodes `0x` followed by an even number of hex digits (either case). `0X` is refused: no
/// Ethereum tool writes it, so it is a typo or a probe, and one spelling per value is the rule.
pub(crate) fn decode_0x(s: &str) -> Result<Vec<u8>> {
    let digits = strip_prefix(s)
        .ok_or_else(|| Error::InvalidHex("expected 0x followed by hex digits".to_owned()))?;
    if digits.len() % 2 != 0 {
        return Err(Error::InvalidHex("odd number of hex digits".to_owned()));
    }
    hex::decode(digits).map_err(|_| Error::InvalidHex("not a hex digit".to_owned()))
}

/// Decodes exactly `N` bytes of 0x-hex.
pub(crate) fn decode_fixed<const N: usize>(s: &str, what: &str) -> Result<[u8; N]> {
    let digits = strip_prefix(s)
        .ok_or_else(|| Error::InvalidHex(format!("{what}: expected 0x followed by hex digits")))?;
    if digits.len() != N * 2 {
        return Err(Error::InvalidHex(format!(
            "{what}: expected exactly {N} bytes ({} hex digits)",
            N * 2
        )));
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(digits, &mut out)
        .map_err(|_| Error::InvalidHex(format!("{what}: not a hex digit")))?;
    Ok(out)
}

/// A 20-byte address, the one parser for every address the gateway reads: `0x` and 40 hex
/// digits, either all of one case, or mixed case with a valid EIP-55 checksum. A mixed-case
/// address carries a checksum by convention (wallets and explorers print them so), so a wrong one
/// is a typo to refuse, never an address to act on. Facts always carry the normalised form.
pub(crate) fn address(s: &str, what: &str) -> Result<Address> {
    let digits = strip_prefix(s).filter(|d| d.len() == 40).ok_or_else(|| {
        Error::InvalidAddress(format!("{what}: expected 0x followed by 40 hex digits"))
    })?;
    let mut out = [0u8; 20];
    hex::decode_to_slice(digits, &mut out)
        .map_err(|_| Error::InvalidAddress(format!("{what}: not a hex digit")))?;
    let address = Address::from(out);
    let mixed = digits.bytes().any(|b| b.is_ascii_lowercase())
        && digits.bytes().any(|b| b.is_ascii_uppercase());
    if mixed && address.to_checksum(None) != s {
        return Err(Error::InvalidAddress(format!(
            "{what}: mixed-case address whose EIP-55 checksum is wrong (a typo?); send it all \
             lower case if the casing is not a checksum"
        )));
    }
    Ok(address)
}

/// Exactly 32 bytes of 0x-hex.
pub(crate) fn b256(s: &str, what: &str) -> Result<B256> {
    decode_fixed::<32>(s, what).map(B256::from)
}

pub(crate) fn strip_prefix(s: &str) -> Option<&str> {
    s.strip_prefix("0x")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_prefixed_even_hex() {
        assert_eq!(decode_0x("0xAbCd").unwrap(), vec![0xab, 0xcd]);
        assert_eq!(decode_0x("0x").unwrap(), Vec::<u8>::new());
        for bad in [
            "abcd", "0xabc", "0x zz", " 0xab", "0xab ", "0xgg", "0XAbCd", "0X",
        ] {
            assert_eq!(decode_0x(bad).unwrap_err().code(), "invalid_hex", "{bad}");
        }
    }

    #[test]
    fn a_mixed_case_address_must_carry_its_checksum() {
        // USDC with one letter's case flipped: a typo the checksum catches.
        for bad in [
            "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eb48",
            "0xa0B86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
        ] {
            assert_eq!(
                address(bad, "a").unwrap_err().code(),
                "invalid_address",
                "{bad}"
            );
        }
        assert_eq!(
            address("0XA0B86991C6218B36C1D19D4A2E9EB0CE3606EB48", "a")
                .unwrap_err()
                .code(),
            "invalid_address"
        );
    }

    #[test]
    fn addresses_in_any_casing_are_equal() {
        let a = address("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", "a").unwrap();
        let b = address("0xA0B86991C6218B36C1D19D4A2E9EB0CE3606EB48", "a").unwrap();
        let c = address("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "a").unwrap();
        assert!(a == b && b == c);
        assert_eq!(
            address("0x1234", "a").unwrap_err().code(),
            "invalid_address"
        );
    }

    #[test]
    fn fixed_length_is_exact() {
        assert!(b256(&format!("0x{}", "11".repeat(32)), "h").is_ok());
        assert!(b256(&format!("0x{}", "11".repeat(31)), "h").is_err());
        assert!(b256(&format!("0x{}", "11".repeat(33)), "h").is_err());
    }
}
