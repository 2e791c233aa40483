//! Content-coding removal for response bodies the field stage must read.
//!
//! The proxy asks the app for `identity` on routes with response rules, but an app may compress
//! anyway. `gzip` (`x-gzip`), `deflate` and `br` are decoded here, in memory, with the body size
//! limit applied to the *decoded* size of every layer: a small compressed body that expands past
//! the limit (a zip bomb) is refused after at most `limit + 1` decoded bytes, never inflated in
//! full. Anything else fails closed: codings we cannot decode, corrupt, truncated or trailing
//! data, more than [`MAX_LAYERS`] codings.

use std::io::Read;

use bytes::Bytes;
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use http::header::HeaderValue;

/// Most content codings applied to one body that we decode (more is not a real app).
const MAX_LAYERS: usize = 3;

/// Size of the decoder's read buffer (and of the brotli input buffer).
const CHUNK: usize = 16 * 1024;

/// One content coding the proxy can remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Gzip,
    Deflate,
    Br,
}

/// Why a body could not be decoded. Every variant fails closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A coding we do not decode (`zstd`, `compress`, unknown tokens) or too many layers.
    Unsupported,
    /// The stream is malformed, truncated, or followed by trailing data.
    Corrupt,
    /// A decoded layer is larger than the limit.
    TooLarge,
}

impl DecodeError {
    /// The short, static reason carried by `ResponseNotEncryptable`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            DecodeError::Unsupported => "unsupported encoding",
            DecodeError::Corrupt => "corrupt encoding",
            DecodeError::TooLarge => "too large",
        }
    }
}

/// Parses every `Content-Encoding` field value (pass `HeaderMap::get_all`) into the codings to
/// remove, in the order they were *applied* (the order listed, RFC 9110 §8.4). `identity` and
/// empty list elements are skipped; an empty result means the body is not encoded.
pub(crate) fn parse_codings<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
) -> Result<Vec<Coding>, DecodeError> {
    let mut codings = Vec::new();
    for value in values {
        let text = value.to_str().map_err(|_| DecodeError::Unsupported)?;
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let coding = match token.to_ascii_lowercase().as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Br,
                _ => return Err(DecodeError::Unsupported),
            };
            if codings.len() == MAX_LAYERS {
                return Err(DecodeError::Unsupported);
            }
            codings.push(coding);
        }
    }
    Ok(codings)
}

/// Removes `codings` (as returned by [`parse_codings`]) from `body`, last applied first.
/// Each decoded layer must be at most `limit` bytes.
pub(crate) fn decode_body(
    codings: &[Coding],
    body: Bytes,
    limit: usize,
) -> Result<Bytes, DecodeError> {
    let mut data = body;
    for coding in codings.iter().rev() {
        data = Bytes::from(decode_layer(*coding, &data, limit)?);
    }
    Ok(data)
}

fn decode_layer(coding: Coding, input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    match coding {
        // Multi-member: concatenated members are one body; trailing bytes that are not a
        // member fail the header check. A truncated member is an UnexpectedEof error.
        Coding::Gzip => read_capped(MultiGzDecoder::new(input), limit),
        // HTTP "deflate" is zlib-wrapped (RFC 9110 §8.4.1.2), but some servers send raw
        // deflate: as browsers do, fall back to raw when the zlib header is not valid.
        Coding::Deflate if zlib_header(input) => {
            let mut dec = ZlibDecoder::new(input);
            let out = read_capped(&mut dec, limit)?;
            whole_input(dec.total_in(), input)?;
            Ok(out)
        }
        Coding::Deflate => {
            let mut dec = DeflateDecoder::new(input);
            let out = read_capped(&mut dec, limit)?;
            whole_input(dec.total_in(), input)?;
            Ok(out)
        }
        Coding::Br => {
            let mut dec = brotli_decompressor::Decompressor::new(input, CHUNK);
            let out = read_capped(&mut dec, limit)?;
            // After its end, the decoder reports unconsumed buffered bytes on the next read;
            // and nothing may be left unread in the input either.
            let mut probe = [0u8; 1];
            if !matches!(dec.read(&mut probe), Ok(0)) {
                return Err(DecodeError::Corrupt);
            }
            if !dec.get_ref().is_empty() {
                return Err(DecodeError::Corrupt);
            }
            Ok(out)
        }
    }
}

/// Whether `input` starts with a valid zlib header (RFC 1950): deflate method, window at most
/// 32 KiB, check bits right, no preset dictionary (which HTTP has no way to supply).
fn zlib_header(input: &[u8]) -> bool {
    let [cmf, flg, ..] = *input else {
        return false;
    };
    cmf & 0x0f == 8
        && cmf >> 4 <= 7
        && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
        && flg & 0x20 == 0
}

/// The deflate stream ended before the input did: trailing data fails closed.
fn whole_input(consumed: u64, input: &[u8]) -> Result<(), DecodeError> {
    if consumed == input.len() as u64 {
        Ok(())
    } else {
        Err(DecodeError::Corrupt)
    }
}

/// Reads `reader` to its end into a buffer that never grows past `limit` bytes: the reader is
/// capped at `limit + 1` bytes, and the first byte past `limit` is `TooLarge`. A read error
/// (malformed or truncated stream) is `Corrupt`.
fn read_capped(reader: impl Read, limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut reader = reader.take(limit as u64 + 1);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(DecodeError::Corrupt),
        };
        if out.len() + n > limit {
            return Err(DecodeError::TooLarge);
        }
        if out.capacity() - out.len() < n {
            // Grow geometrically, but never past the limit.
            let target = (out.capacity() * 2).max(out.len() + n).min(limit);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use http::HeaderMap;

    use super::*;

    const JSON: &[u8] = br#"{"ssn":"123-45-6789","note":"brotli brotli brotli brotli"}"#;
    /// `brotli.compress(JSON, quality=11)` (Python `brotli`).
    const BR: &[u8] = b"\x1b\x39\x00\xf8\xc5\xdc\x46\xa9\xca\x65\x17\x7c\xbe\xb5\x28\x18\x04\xd9\x40\x6d\x62\x49\x32\x56\x24\x50\x7c\x38\x47\xc0\x70\x3e\x50\x4c\x94\x4b\x6d\xb0\x10\xbd\x03\x8c\xbe\xf5\xae\x69\xe0\x03";
    /// `brotli.compress(gzip.compress(JSON, mtime=0), quality=11)`: `Content-Encoding: gzip, br`.
    const GZIP_BR: &[u8] = b"\x8b\x1c\x80\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xab\x56\x2a\x2e\xce\x53\xb2\x52\x32\x34\x32\xd6\x35\x31\xd5\x35\x33\xb7\xb0\x54\xd2\x51\xca\xcb\x2f\x49\x05\x0a\x26\x15\xe5\x97\xe4\x64\x2a\x60\xa3\x94\x6a\x01\xe6\xdb\x3d\x7c\x3a\x00\x00\x00\x03";
    /// `brotli.compress(b"\0" * 4 MiB, quality=11)`: 14 bytes.
    const BR_BOMB: &[u8] = b"\x9b\xff\xff\x3f\xf8\x27\x00\xe2\xb1\x40\x20\xf7\xfe\x07";
    const MIB: usize = 1 << 20;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Decodes `body` as sent with `Content-Encoding: <ce>`.
    fn decode(ce: &str, body: &[u8], limit: usize) -> Result<Bytes, DecodeError> {
        let value = HeaderValue::from_str(ce).unwrap();
        let codings = parse_codings([&value])?;
        decode_body(&codings, Bytes::copy_from_slice(body), limit)
    }

    #[test]
    fn parses_lists_case_and_whitespace_and_several_fields() {
        let mut h = HeaderMap::new();
        h.append(
            "content-encoding",
            HeaderValue::from_static(" GZip ,, identity"),
        );
        h.append("content-encoding", HeaderValue::from_static("BR"));
        let codings = parse_codings(h.get_all("content-encoding")).unwrap();
        assert_eq!(codings, [Coding::Gzip, Coding::Br]);
        assert_eq!(
            parse_codings(HeaderMap::new().get_all("content-encoding")),
            Ok(vec![])
        );
        let identity = HeaderValue::from_static("Identity");
        assert_eq!(parse_codings([&identity]), Ok(vec![]));
        let x_gzip = HeaderValue::from_static("x-gzip, deflate");
        assert_eq!(
            parse_codings([&x_gzip]),
            Ok(vec![Coding::Gzip, Coding::Deflate])
        );
    }

    #[test]
    fn unknown_codings_and_too_many_layers_are_unsupported() {
        for ce in [
            "zstd",
            "compress",
            "x-custom",
            "gzip, zstd",
            "gzip;q=1",
            "gzip, gzip, gzip, gzip",
        ] {
            let value = HeaderValue::from_str(ce).unwrap();
            assert_eq!(
                parse_codings([&value]),
                Err(DecodeError::Unsupported),
                "{ce}"
            );
        }
        let not_ascii = HeaderValue::from_bytes(b"gz\xffip").unwrap();
        assert_eq!(parse_codings([&not_ascii]), Err(DecodeError::Unsupported));
        assert_eq!(DecodeError::Unsupported.reason(), "unsupported encoding");
        // Three layers is the most we decode.
        let three = gzip(&gzip(&gzip(JSON)));
        assert_eq!(decode("gzip, gzip, gzip", &three, MIB).unwrap(), JSON);
    }

    #[test]
    fn identity_passes_through() {
        assert_eq!(decode("identity", JSON, MIB).unwrap(), JSON);
        assert_eq!(decode_body(&[], Bytes::from_static(JSON), 8).unwrap(), JSON);
    }

    #[test]
    fn gzip_round_trip_including_several_members() {
        assert_eq!(decode("gzip", &gzip(JSON), MIB).unwrap(), JSON);
        assert_eq!(decode("x-gzip", &gzip(JSON), MIB).unwrap(), JSON);
        let mut two = gzip(&JSON[..10]);
        two.extend(gzip(&JSON[10..]));
        assert_eq!(decode("gzip", &two, MIB).unwrap(), JSON);
    }

    #[test]
    fn deflate_is_zlib_with_raw_fallback() {
        assert_eq!(decode("deflate", &zlib(JSON), MIB).unwrap(), JSON);
        assert_eq!(decode("deflate", &raw_deflate(JSON), MIB).unwrap(), JSON);
    }

    #[test]
    fn br_round_trip_and_stacked_codings() {
        assert_eq!(decode("br", BR, MIB).unwrap(), JSON);
        // Listed in the order applied: gzip first, then br; decoded br first.
        assert_eq!(decode("gzip, br", GZIP_BR, MIB).unwrap(), JSON);
        assert_eq!(decode("br, gzip", &gzip(BR), MIB).unwrap(), JSON);
        // The same codings in the wrong order do not decode.
        assert_eq!(decode("br, gzip", GZIP_BR, MIB), Err(DecodeError::Corrupt));
    }

    #[test]
    fn truncated_streams_are_corrupt_not_short() {
        let gz = gzip(JSON);
        let zl = zlib(JSON);
        let raw = raw_deflate(JSON);
        for (ce, full) in [
            ("gzip", &gz[..]),
            ("deflate", &zl[..]),
            ("deflate", &raw[..]),
            ("br", BR),
        ] {
            for cut in [1, 4, full.len() / 2] {
                let short = &full[..full.len() - cut];
                assert_eq!(
                    decode(ce, short, MIB),
                    Err(DecodeError::Corrupt),
                    "{ce} minus {cut}"
                );
            }
        }
    }

    #[test]
    fn garbage_and_trailing_data_are_corrupt() {
        for ce in ["gzip", "deflate", "br"] {
            assert_eq!(decode(ce, JSON, MIB), Err(DecodeError::Corrupt), "{ce}");
        }
        for (ce, mut body) in [
            ("gzip", gzip(JSON)),
            ("deflate", zlib(JSON)),
            ("deflate", raw_deflate(JSON)),
            ("br", BR.to_vec()),
        ] {
            body.extend_from_slice(b"trailing");
            assert_eq!(decode(ce, &body, MIB), Err(DecodeError::Corrupt), "{ce}");
        }
        assert_eq!(DecodeError::Corrupt.reason(), "corrupt encoding");
    }

    #[test]
    fn limit_applies_to_the_decoded_size() {
        // Exactly at the limit decodes; one byte over does not.
        assert_eq!(decode("gzip", &gzip(JSON), JSON.len()).unwrap(), JSON);
        assert_eq!(
            decode("gzip", &gzip(JSON), JSON.len() - 1),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(decode("br", BR, JSON.len() - 1), Err(DecodeError::TooLarge));
        assert_eq!(
            decode("deflate", &zlib(JSON), JSON.len() - 1),
            Err(DecodeError::TooLarge)
        );
        // Every layer is bounded, not only the last.
        assert_eq!(decode("gzip, br", GZIP_BR, 40), Err(DecodeError::TooLarge));
        assert_eq!(DecodeError::TooLarge.reason(), "too large");
    }

    #[test]
    fn zip_bombs_are_refused_within_the_limit() {
        let zeros = vec![0u8; 10 * MIB];
        let bomb = gzip(&zeros);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        assert_eq!(decode("gzip", &bomb, MIB), Err(DecodeError::TooLarge));
        assert_eq!(
            decode("deflate", &zlib(&zeros), MIB),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(decode("br", BR_BOMB, MIB), Err(DecodeError::TooLarge));
        assert_eq!(decode("br", BR_BOMB, 4 * MIB).unwrap().len(), 4 * MIB);
        // A bomb inside a bomb: the inner layer is bounded too.
        assert_eq!(
            decode("gzip, gzip", &gzip(&bomb), MIB),
            Err(DecodeError::TooLarge)
        );
    }

    #[test]
    fn the_buffer_never_grows_past_the_limit() {
        let out = read_capped(&vec![7u8; 100_000][..], 100_000).unwrap();
        assert_eq!(out.len(), 100_000);
        assert!(out.capacity() <= 100_000, "{}", out.capacity());
    }
}
