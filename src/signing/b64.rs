//! CloudFront's URL-safe base64: the standard alphabet with `+`→`-`, `/`→`~` and `=`→`_`.

use base64::alphabet::{Alphabet, Symbol};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// The 64 symbols in CloudFront's order: the standard ones with `-` for `+` and `~` for `/`.
const SYMBOLS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-~";

const PADDING: Symbol = match Symbol::new(b'_') {
    Some(symbol) => symbol,
    None => panic!("`_` is a printable ASCII symbol"),
};

const ALPHABET: Alphabet = match Alphabet::new_with_padding(SYMBOLS, PADDING) {
    Ok(alphabet) => alphabet,
    Err(_) => panic!("CloudFront's alphabet has 64 distinct symbols"),
};

/// Encodes padded (as CloudFront and the AWS SDKs do); decodes with or without padding,
/// rejecting non-canonical trailing bits.
const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &ALPHABET,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes `bytes` in CloudFront's alphabet, padded with `_`.
pub(super) fn encode(bytes: &[u8]) -> String {
    ENGINE.encode(bytes)
}

/// Decodes CloudFront-alphabet base64; `None` for any symbol outside it (`+`, `/`, `=`,
/// whitespace, ...) or a malformed length.
pub(super) fn decode(text: &str) -> Option<Vec<u8>> {
    ENGINE.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    /// The alphabet is the standard one with three substitutions, byte for byte.
    #[test]
    fn matches_standard_with_cloudfront_substitutions() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let expected: String = STANDARD
                .encode(&bytes)
                .chars()
                .map(|c| match c {
                    '+' => '-',
                    '=' => '_',
                    '/' => '~',
                    other => other,
                })
                .collect();
            let encoded = encode(&bytes);
            assert_eq!(encoded, expected);
            assert_eq!(decode(&encoded).as_deref(), Some(&bytes[..]));
        }
    }

    #[test]
    fn every_special_symbol_round_trips() {
        // 0xfb 0xff 0xbf encodes to "+/+/" in the standard alphabet.
        let bytes = [0xfb, 0xff, 0xbf, 0xfe];
        assert_eq!(STANDARD.encode(bytes), "+/+//g==");
        assert_eq!(encode(&bytes), "-~-~~g__");
        assert_eq!(decode("-~-~~g__").as_deref(), Some(&bytes[..]));
        // Padding is optional on input.
        assert_eq!(decode("-~-~~g").as_deref(), Some(&bytes[..]));
    }

    #[test]
    fn rejects_other_alphabets_and_junk() {
        for junk in [
            "+/+/", "-~-~~g==", "ab cd", "a", "====", "!!!!", "ab\ncd", "é",
        ] {
            assert_eq!(decode(junk), None, "{junk:?}");
        }
        assert_eq!(decode(""), Some(Vec::new()));
    }
}
