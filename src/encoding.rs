//! Content codings: `Accept-Encoding` negotiation, whole-body (de)compression, what to compress.
//!
//! The cache stores one variant per coding and picks among them on every hit,
//! so [`negotiate`] is written to run without allocating. Compression and
//! decompression work on whole buffers because the cache only transforms
//! bodies it already holds in full.

use std::io;
#[cfg(any(feature = "gzip", feature = "br", feature = "zstd"))]
use std::io::{Read, Write};

use bytes::Bytes;
use http::header::ACCEPT_ENCODING;
use http::{HeaderMap, HeaderValue};

/// A content coding this edge can store and serve (RFC 9110 §8.4.1).
///
/// The set is deliberately small: these are the codings browsers actually
/// advertise today. `deflate` and `compress` are not produced or decoded, so
/// bodies that use them are passed through untouched.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Encoding {
    /// No transformation: the representation as the origin sent it.
    Identity,
    /// `gzip` (RFC 1952), understood by every client.
    Gzip,
    /// `br`, Brotli (RFC 7932).
    Br,
    /// `zstd`, Zstandard (RFC 8878).
    Zstd,
}

impl Encoding {
    /// The coding's registered name, as used in `Content-Encoding` and
    /// `Accept-Encoding`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// The coding's name as a header value; static, so building it never
    /// allocates.
    ///
    /// `identity` belongs only in `Accept-Encoding` (RFC 9110 §8.4.1): a
    /// response in [`Encoding::Identity`] should carry no `Content-Encoding`.
    #[must_use]
    pub const fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }

    /// Parses a `Content-Encoding` value naming a single coding.
    ///
    /// Matching is case-insensitive (RFC 9110 §8.4.1) and `x-gzip` is taken
    /// as `gzip` (§8.4.1.3). Returns `None` for unknown codings and for lists
    /// of stacked codings such as `gzip, br`: the cache cannot undo those, so
    /// it must treat such a body as opaque.
    pub fn from_content_encoding(value: &HeaderValue) -> Option<Encoding> {
        let name = trim_ows(value.as_bytes());
        if name.eq_ignore_ascii_case(b"identity") {
            Some(Encoding::Identity)
        } else {
            Encoding::from_coding_name(name)
        }
    }

    /// Maps a coding name other than `identity` (shared by both header
    /// fields, so `x-gzip` is accepted in either, per §8.4.1.3).
    fn from_coding_name(name: &[u8]) -> Option<Encoding> {
        if name.eq_ignore_ascii_case(b"gzip") || name.eq_ignore_ascii_case(b"x-gzip") {
            Some(Encoding::Gzip)
        } else if name.eq_ignore_ascii_case(b"br") {
            Some(Encoding::Br)
        } else if name.eq_ignore_ascii_case(b"zstd") {
            Some(Encoding::Zstd)
        } else {
            None
        }
    }

    /// Slot in [`Weights`]; `*` takes the slot after these.
    const fn index(self) -> usize {
        match self {
            Encoding::Identity => 0,
            Encoding::Gzip => 1,
            Encoding::Br => 2,
            Encoding::Zstd => 3,
        }
    }
}

/// Smallest body CloudFront compresses: below this the coding's framing
/// overhead eats most of the saving.
pub(crate) const MIN_COMPRESS_SIZE: usize = 1_000;

/// Largest body CloudFront compresses: bounds the CPU and memory one response
/// can cost the edge, since bodies are compressed whole.
pub(crate) const MAX_COMPRESS_SIZE: usize = 10_000_000;

/// Most `Accept-Encoding` list members examined per request, across all field
/// lines. Real browsers send fewer than ten; the cap keeps a hostile header
/// from costing more than a fixed amount of work on the hit path.
pub(crate) const MAX_ACCEPT_ENCODING_MEMBERS: usize = 64;

/// Our order of preference when the client weighs codings equally: smallest
/// output first, identity last.
const SERVER_PREFERENCE: [Encoding; 4] = [
    Encoding::Br,
    Encoding::Zstd,
    Encoding::Gzip,
    Encoding::Identity,
];

/// The codings this build makes from an identity body, in [`SERVER_PREFERENCE`] order,
/// identity last: each of gzip, br and zstd is a crate feature. Codings outside it are still
/// recognised, stored and served as the origin sent them, but never produced.
pub(crate) const MADE: &[Encoding] = &[
    #[cfg(feature = "br")]
    Encoding::Br,
    #[cfg(feature = "zstd")]
    Encoding::Zstd,
    #[cfg(feature = "gzip")]
    Encoding::Gzip,
    Encoding::Identity,
];

/// Weights are qvalues in thousandths: RFC 9110 §12.4.2 allows at most three
/// decimals, so integers represent them exactly.
const Q_ONE: u16 = 1000;

/// Weight given to identity when the client lists neither it nor `*`. It is
/// acceptable then (§12.5.3), but any coding the client names with a positive
/// weight should win over it, so it ranks at the lowest positive weight and
/// loses ties through [`SERVER_PREFERENCE`].
const IMPLICIT_IDENTITY_Q: u16 = 1;

/// Slot of `*` in [`Weights`].
const ANY: usize = 4;

/// Weights the client gave each coding we know, plus `*`; `None` when not
/// listed. A fixed array so negotiation stays allocation-free.
#[derive(Default)]
struct Weights([Option<u16>; 5]);

impl Weights {
    /// A coding listed twice keeps its highest weight: any positive entry
    /// shows the client can decode it.
    fn record(&mut self, slot: usize, q: u16) {
        let entry = &mut self.0[slot];
        *entry = Some(entry.map_or(q, |old| old.max(q)));
    }

    /// The effective weight of `enc` under RFC 9110 §12.5.3.
    fn weight(&self, enc: Encoding) -> u16 {
        let explicit = self.0[enc.index()];
        // `*` matches any coding not listed explicitly; that includes
        // identity, which is why `*;q=0` excludes it unless it is listed.
        let listed = explicit.or(self.0[ANY]);
        match enc {
            Encoding::Identity => listed.unwrap_or(IMPLICIT_IDENTITY_Q),
            _ => listed.unwrap_or(0),
        }
    }
}

/// Chooses the coding for a response from the request's `Accept-Encoding`
/// (RFC 9110 §12.5.3).
///
/// - No `Accept-Encoding` at all: any coding is acceptable, but we send
///   [`Encoding::Identity`], as clients that omit it may not expect one.
/// - Otherwise the acceptable coding with the highest weight wins; ties go
///   to br, then zstd, then gzip, then identity.
/// - An empty field value lists nothing, so only identity is acceptable.
/// - Identity is acceptable unless excluded by `identity;q=0`, or by `*;q=0`
///   without an explicit `identity` entry.
/// - Members that are not `coding[;q=qvalue]` (bad qvalue, other parameters,
///   empty) are ignored rather than failing the whole field, and only the
///   first [`MAX_ACCEPT_ENCODING_MEMBERS`] members are read.
///
/// Returns `None` only when nothing is acceptable; the caller may then send
/// identity anyway or answer 406, as §12.5.3 allows.
#[cfg(test)]
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<Encoding> {
    choose(headers, &SERVER_PREFERENCE)
}

/// Like [`negotiate`], among the codings in `available` only.
pub(crate) fn choose(headers: &HeaderMap, available: &[Encoding]) -> Option<Encoding> {
    let mut lines = headers.get_all(ACCEPT_ENCODING).iter().peekable();
    if lines.peek().is_none() {
        return available
            .contains(&Encoding::Identity)
            .then_some(Encoding::Identity);
    }

    let mut weights = Weights::default();
    let mut budget = MAX_ACCEPT_ENCODING_MEMBERS;
    // Several field lines form one comma-separated list (RFC 9110 §5.3), so
    // the member budget is shared across them.
    'lines: for line in lines {
        for member in line.as_bytes().split(|&b| b == b',') {
            if budget == 0 {
                break 'lines;
            }
            // Empty members count too: a field of bare commas must not be
            // free to scan.
            budget -= 1;
            if let Some((slot, q)) = parse_member(member) {
                weights.record(slot, q);
            }
        }
    }

    let mut best = None;
    let mut best_q = 0;
    for enc in SERVER_PREFERENCE
        .into_iter()
        .filter(|e| available.contains(e))
    {
        let q = weights.weight(enc);
        // Strictly greater, so an earlier (preferred) coding keeps a tie.
        if q > best_q {
            best = Some(enc);
            best_q = q;
        }
    }
    best
}

/// Parses one list member, `codings [ OWS ";" OWS "q=" qvalue ]` (RFC 9110
/// §12.5.3, §12.4.2), into its [`Weights`] slot and weight. `None` for
/// codings we do not serve and for anything malformed.
fn parse_member(member: &[u8]) -> Option<(usize, u16)> {
    let (name, weight) = match member.iter().position(|&b| b == b';') {
        Some(i) => (&member[..i], Some(&member[i + 1..])),
        None => (member, None),
    };
    let name = trim_ows(name);
    let slot = if name == b"*" {
        ANY
    } else if name.eq_ignore_ascii_case(b"identity") {
        Encoding::Identity.index()
    } else {
        Encoding::from_coding_name(name)?.index()
    };
    let q = match weight {
        None => Q_ONE,
        Some(weight) => parse_weight(trim_ows(weight))?,
    };
    Some((slot, q))
}

/// Parses `"q=" qvalue`, where the parameter name is case-insensitive
/// (§12.4.2). A second parameter makes this fail, since `;` is no digit.
fn parse_weight(weight: &[u8]) -> Option<u16> {
    match weight {
        [b'q' | b'Q', b'=', qvalue @ ..] => parse_qvalue(qvalue),
        _ => None,
    }
}

/// Parses `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`
/// (RFC 9110 §12.4.2) into thousandths.
fn parse_qvalue(qvalue: &[u8]) -> Option<u16> {
    let (int, frac) = match qvalue {
        [int] => (*int, &[][..]),
        [int, b'.', frac @ ..] if frac.len() <= 3 => (*int, frac),
        _ => return None,
    };
    let mut thousandths = 0u16;
    for i in 0..3 {
        let digit = match frac.get(i) {
            Some(d) if d.is_ascii_digit() => u16::from(d - b'0'),
            Some(_) => return None,
            None => 0,
        };
        thousandths = thousandths * 10 + digit;
    }
    match int {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(Q_ONE),
        _ => None,
    }
}

/// Strips optional whitespace (`OWS = *( SP / HTAB )`, RFC 9110 §5.6.3).
fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// gzip level: zlib's default, the usual balance for on-the-fly compression.
#[cfg(feature = "gzip")]
const GZIP_LEVEL: u32 = 6;

/// Brotli quality. Set explicitly because the crate's default is 11, which
/// runs at well under 1 MB/s: far too slow for compressing at the edge.
#[cfg(feature = "br")]
const BROTLI_QUALITY: i32 = 5;

/// Largest Brotli window (4 MiB). Small bodies get a smaller one, see
/// [`brotli_lgwin`].
#[cfg(feature = "br")]
const BROTLI_MAX_LGWIN: i32 = 22;

/// Smallest window Brotli can signal (RFC 7932 §9.1).
#[cfg(feature = "br")]
const BROTLI_MIN_LGWIN: i32 = 10;

/// zstd level: the library default, faster than gzip at a better ratio.
#[cfg(feature = "zstd")]
const ZSTD_LEVEL: i32 = 3;

/// Compresses a whole body with `enc`.
///
/// [`Encoding::Identity`] returns a copy of `input`, so callers can build
/// every variant through one path. The result has no spare capacity, since
/// the cache weighs entries by length and slack would be unaccounted memory.
#[cfg_attr(
    not(any(feature = "gzip", feature = "br", feature = "zstd")),
    allow(unreachable_code, unused_variables, unused_mut)
)]
pub(crate) fn compress(enc: Encoding, input: &[u8]) -> io::Result<Bytes> {
    let mut out: Vec<u8> = match enc {
        Encoding::Identity => return Ok(Bytes::copy_from_slice(input)),
        #[cfg(not(feature = "gzip"))]
        Encoding::Gzip => return Err(not_built(enc)),
        #[cfg(not(feature = "br"))]
        Encoding::Br => return Err(not_built(enc)),
        #[cfg(not(feature = "zstd"))]
        Encoding::Zstd => return Err(not_built(enc)),
        #[cfg(feature = "gzip")]
        Encoding::Gzip => {
            let sink = Vec::with_capacity(input.len() / 2 + 64);
            let mut encoder =
                flate2::write::GzEncoder::new(sink, flate2::Compression::new(GZIP_LEVEL));
            encoder.write_all(input)?;
            encoder.finish()?
        }
        #[cfg(feature = "br")]
        Encoding::Br => {
            let params = brotli::enc::BrotliEncoderParams {
                quality: BROTLI_QUALITY,
                lgwin: brotli_lgwin(input.len()),
                size_hint: input.len(),
                ..Default::default()
            };
            let mut out = Vec::with_capacity(input.len() / 2 + 64);
            brotli::BrotliCompress(&mut &input[..], &mut out, &params)?;
            out
        }
        // The one-shot API records the content size in the frame header and
        // sizes the window to the input, which keeps decoders' memory small.
        #[cfg(feature = "zstd")]
        Encoding::Zstd => zstd::bulk::compress(input, ZSTD_LEVEL)?,
    };
    out.shrink_to_fit();
    Ok(Bytes::from(out))
}

/// A compressor fed a body piece by piece, for a fill that streams the compressed body to
/// viewers as the origin's arrives. Each piece is flushed, so a viewer gets what the origin
/// sent so far; memory stays at the coding's window, never the whole body.
pub(crate) struct StreamEncoder(Stream);

// One per fill that compresses as it streams; boxing the gzip encoder would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Stream {
    #[cfg(feature = "gzip")]
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    #[cfg(feature = "br")]
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    #[cfg(feature = "zstd")]
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    /// No coding is built: no encoder is ever made, so this is never constructed.
    #[cfg(not(any(feature = "gzip", feature = "br", feature = "zstd")))]
    #[allow(dead_code)]
    Never(std::convert::Infallible),
}

impl StreamEncoder {
    /// A compressor for `enc` at the same settings as [`compress`], Brotli's window sized
    /// for `size_hint` bytes when the body's size is known; `None` for identity.
    #[cfg_attr(
        not(any(feature = "gzip", feature = "br", feature = "zstd")),
        allow(unreachable_code, unused_variables, unused_mut)
    )]
    #[cfg_attr(not(feature = "br"), allow(unused_variables))]
    pub(crate) fn new(enc: Encoding, size_hint: Option<usize>) -> Option<Self> {
        let stream = match enc {
            Encoding::Identity => return None,
            #[cfg(not(feature = "gzip"))]
            Encoding::Gzip => return None,
            #[cfg(not(feature = "br"))]
            Encoding::Br => return None,
            #[cfg(not(feature = "zstd"))]
            Encoding::Zstd => return None,
            #[cfg(feature = "gzip")]
            Encoding::Gzip => Stream::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
            #[cfg(feature = "br")]
            Encoding::Br => {
                let params = brotli::enc::BrotliEncoderParams {
                    quality: BROTLI_QUALITY,
                    lgwin: size_hint.map_or(BROTLI_MAX_LGWIN, brotli_lgwin),
                    size_hint: size_hint.unwrap_or(0),
                    ..Default::default()
                };
                Stream::Br(Box::new(brotli::CompressorWriter::with_params(
                    Vec::new(),
                    16 * 1024,
                    &params,
                )))
            }
            // No pledged size: a body that turned out longer or shorter than announced
            // would fail the whole coded stream.
            #[cfg(feature = "zstd")]
            Encoding::Zstd => {
                Stream::Zstd(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).ok()?)
            }
        };
        Some(Self(stream))
    }

    /// Compresses one piece of the body; returns the output made so far (flushed).
    #[cfg_attr(
        not(any(feature = "gzip", feature = "br", feature = "zstd")),
        allow(unreachable_code, unused_variables, unused_mut)
    )]
    pub(crate) fn write(&mut self, piece: &[u8]) -> io::Result<Bytes> {
        let out: &mut Vec<u8> = match &mut self.0 {
            #[cfg(feature = "gzip")]
            Stream::Gzip(e) => {
                e.write_all(piece)?;
                e.flush()?;
                e.get_mut()
            }
            #[cfg(feature = "br")]
            Stream::Br(e) => {
                e.write_all(piece)?;
                e.flush()?;
                e.get_mut()
            }
            #[cfg(feature = "zstd")]
            Stream::Zstd(e) => {
                e.write_all(piece)?;
                e.flush()?;
                e.get_mut()
            }
            #[cfg(not(any(feature = "gzip", feature = "br", feature = "zstd")))]
            Stream::Never(never) => match *never {},
        };
        Ok(Bytes::from(std::mem::take(out)))
    }

    /// Ends the stream; returns its last bytes.
    #[cfg_attr(
        not(any(feature = "gzip", feature = "br", feature = "zstd")),
        allow(unreachable_code, unused_variables, unused_mut)
    )]
    pub(crate) fn finish(self) -> io::Result<Bytes> {
        let out: Vec<u8> = match self.0 {
            #[cfg(feature = "gzip")]
            Stream::Gzip(e) => e.finish()?,
            #[cfg(feature = "br")]
            Stream::Br(e) => e.into_inner(),
            #[cfg(feature = "zstd")]
            Stream::Zstd(e) => e.finish()?,
            #[cfg(not(any(feature = "gzip", feature = "br", feature = "zstd")))]
            Stream::Never(never) => match never {},
        };
        Ok(Bytes::from(out))
    }
}

/// The smallest Brotli window that covers `len` bytes, capped at
/// [`BROTLI_MAX_LGWIN`]: the window is announced in the stream, and a smaller
/// one lets clients decode with less memory at no cost in ratio.
#[cfg(feature = "br")]
fn brotli_lgwin(len: usize) -> i32 {
    let mut lgwin = BROTLI_MAX_LGWIN;
    // A window of `lgwin` bits reaches back (1 << lgwin) - 16 bytes.
    while lgwin > BROTLI_MIN_LGWIN && (1usize << (lgwin - 1)) - 16 >= len {
        lgwin -= 1;
    }
    lgwin
}

/// Decompresses a whole body coded with `enc`, producing at most
/// `max_output` bytes.
///
/// Fails with [`io::ErrorKind::InvalidData`] when the input is corrupt or
/// truncated, or when its output would exceed `max_output`. Decoding stops as
/// soon as the limit is passed, and the output buffer never grows past
/// `max_output`, so a decompression bomb costs bounded memory and time.
pub(crate) fn decompress(enc: Encoding, input: &[u8], max_output: usize) -> io::Result<Bytes> {
    let out = match enc {
        Encoding::Identity => {
            if input.len() > max_output {
                return Err(too_large(enc, max_output));
            }
            input.to_vec()
        }
        #[cfg(not(feature = "gzip"))]
        Encoding::Gzip => return Err(not_built(enc)),
        #[cfg(not(feature = "br"))]
        Encoding::Br => return Err(not_built(enc)),
        #[cfg(not(feature = "zstd"))]
        Encoding::Zstd => return Err(not_built(enc)),
        // A gzip file may hold several members (RFC 1952 §2.2); all of them
        // are part of the body.
        #[cfg(feature = "gzip")]
        Encoding::Gzip => read_capped(
            flate2::bufread::MultiGzDecoder::new(input),
            enc,
            input.len(),
            max_output,
        )?,
        #[cfg(feature = "br")]
        Encoding::Br => read_capped(
            brotli::Decompressor::new(input, 4096),
            enc,
            input.len(),
            max_output,
        )?,
        #[cfg(feature = "zstd")]
        Encoding::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input)?;
            // zstd allocates the window a frame announces up front, up to
            // 128 MiB by default; cap it to what the output limit needs.
            decoder.window_log_max(zstd_window_log_max(max_output))?;
            read_capped(decoder, enc, input.len(), max_output)?
        }
    };
    Ok(Bytes::from(out))
}

/// Smallest zstd window limit that still accepts every standard level
/// (1–19 use at most 2^23 bytes) or, when larger, a window spanning
/// `max_output`; never above zstd's default limit of 2^27.
#[cfg(feature = "zstd")]
fn zstd_window_log_max(max_output: usize) -> u32 {
    let needed = usize::BITS - max_output.saturating_sub(1).leading_zeros();
    needed.clamp(23, 27)
}

/// Reads `decoder` to its end into a buffer whose capacity never exceeds
/// `max_output`, failing as soon as more than `max_output` bytes come out.
#[cfg(any(feature = "gzip", feature = "br", feature = "zstd"))]
fn read_capped<R: Read>(
    mut decoder: R,
    enc: Encoding,
    input_len: usize,
    max_output: usize,
) -> io::Result<Vec<u8>> {
    // Text usually shrinks 3–10x; start near that, never past the limit.
    let mut out = Vec::with_capacity(input_len.saturating_mul(4).max(4096).min(max_output));
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // The input is an in-memory slice, so every error is about the
            // data itself (including a truncated stream's UnexpectedEof).
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("corrupt or truncated {} body: {e}", enc.as_str()),
                ))
            }
        };
        if n > max_output - out.len() {
            return Err(too_large(enc, max_output));
        }
        if out.capacity() - out.len() < n {
            // Grow geometrically like Vec would, but clamp at the limit so
            // the allocation is bounded by `max_output`, not twice it.
            let target = out
                .capacity()
                .saturating_mul(2)
                .clamp(out.len() + n, max_output);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out)
}

/// The error for a coding whose crate feature is off: it is neither made nor decoded, so the
/// caller serves what it has.
#[cfg(not(all(feature = "gzip", feature = "br", feature = "zstd")))]
fn not_built(enc: Encoding) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "the {} coding is not built (crate feature off)",
            enc.as_str()
        ),
    )
}

fn too_large(enc: Encoding, max_output: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "decoded {} body exceeds the limit of {max_output} bytes",
            enc.as_str()
        ),
    )
}

/// Media types (besides `text/*`, `+json` and `+xml`) worth compressing,
/// after CloudFront's list: text-like formats and uncompressed fonts. Types
/// that are already compressed (PNG, JPEG, WOFF2, video, archives) are left
/// out on purpose, as are PDF and other formats whose bodies usually are
/// compressed inside.
const COMPRESSIBLE_TYPES: &[&[u8]] = &[
    b"application/javascript",
    b"application/x-javascript",
    b"application/ecmascript",
    b"application/json",
    b"application/xml",
    b"application/wasm",
    b"application/vnd.ms-fontobject",
    b"application/vnd.apple.mpegurl",
    b"application/x-mpegurl",
    b"application/vnd.mapbox-vector-tile",
    b"application/eot",
    b"application/font-sfnt",
    b"application/opentype",
    b"application/otf",
    b"application/truetype",
    b"application/ttf",
    b"application/x-font-opentype",
    b"application/x-font-truetype",
    b"application/x-font-ttf",
    b"application/x-opentype",
    b"application/x-otf",
    b"application/x-ttf",
    b"font/eot",
    b"font/opentype",
    b"font/otf",
    b"font/ttf",
    b"image/bmp",
    b"image/x-icon",
    b"image/vnd.microsoft.icon",
];

/// Whether a response of this `Content-Type` is worth compressing.
///
/// Parameters such as `; charset=utf-8` are ignored and matching is
/// case-insensitive (RFC 9110 §8.3.1). A missing type yields `false`: the
/// edge cannot tell whether the body is already compressed.
///
/// `text/event-stream` is excluded even though it is text: bodies are
/// compressed whole, which would hold back every event until the stream
/// ends.
pub(crate) fn is_compressible(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let bytes = value.as_bytes();
    let essence = match bytes.iter().position(|&b| b == b';') {
        Some(i) => &bytes[..i],
        None => bytes,
    };
    let media_type = trim_ows(essence);
    let Some(slash) = media_type.iter().position(|&b| b == b'/') else {
        return false;
    };
    let (top, subtype) = (&media_type[..slash], &media_type[slash + 1..]);
    if subtype.is_empty() {
        return false;
    }
    if top.eq_ignore_ascii_case(b"text") {
        return !subtype.eq_ignore_ascii_case(b"event-stream");
    }
    // Structured syntax suffixes (RFC 6838 §4.2.8) cover image/svg+xml,
    // application/xhtml+xml, rss+xml, atom+xml, ld+json, manifest+json, ...
    ends_with_ignore_case(subtype, b"+json")
        || ends_with_ignore_case(subtype, b"+xml")
        || COMPRESSIBLE_TYPES
            .iter()
            .any(|known| media_type.eq_ignore_ascii_case(known))
}

fn ends_with_ignore_case(haystack: &[u8], suffix: &[u8]) -> bool {
    haystack.len() >= suffix.len()
        && haystack[haystack.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CONTENT_TYPE;

    fn accept(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    fn negotiated(line: &str) -> Option<Encoding> {
        negotiate(&accept(&[line]))
    }

    use Encoding::{Br, Gzip, Identity, Zstd};

    #[test]
    fn negotiation_table() {
        let cases: &[(&str, Option<Encoding>)] = &[
            // Plain lists: server order breaks the tie.
            ("gzip", Some(Gzip)),
            ("gzip, deflate, br, zstd", Some(Br)),
            ("gzip, zstd", Some(Zstd)),
            ("deflate", Some(Identity)),
            // Client weights beat server order.
            ("br;q=0.5, gzip;q=0.8", Some(Gzip)),
            ("br;q=0.9, zstd;q=1.000, gzip", Some(Zstd)),
            ("gzip;q=0.5", Some(Gzip)),
            ("gzip;q=0.001", Some(Gzip)),
            ("gzip;q=0.5, identity;q=0.6", Some(Identity)),
            ("gzip;q=1., br;q=0.", Some(Gzip)),
            // q=0 excludes.
            ("gzip;q=0", Some(Identity)),
            ("br;q=0, gzip", Some(Gzip)),
            ("br;q=0.000, gzip;q=0.1", Some(Gzip)),
            // Identity excluded explicitly, or through `*;q=0`.
            ("identity;q=0", None),
            ("gzip, identity;q=0", Some(Gzip)),
            ("*;q=0", None),
            ("*;q=0, identity", Some(Identity)),
            ("*;q=0, identity;q=0.1", Some(Identity)),
            ("*;q=0, gzip", Some(Gzip)),
            ("gzip;q=0, *", Some(Br)),
            ("br;q=0, zstd;q=0, *", Some(Gzip)),
            ("br;q=0, zstd;q=0, gzip;q=0, *", Some(Identity)),
            ("*", Some(Br)),
            ("*;q=0.5, gzip", Some(Gzip)),
            // Case-insensitive codings and parameter name.
            ("GZIP", Some(Gzip)),
            ("Br;Q=1", Some(Br)),
            ("IDENTITY;q=0, GZip", Some(Gzip)),
            // x-gzip is gzip (§8.4.1.3).
            ("x-gzip", Some(Gzip)),
            ("X-GZIP;q=0.4, br;q=0.3", Some(Gzip)),
            // Whitespace around members and the semicolon.
            ("  gzip ,\tbr ; q=0.5 ", Some(Gzip)),
            (" br\t;\tq=1 , gzip;q=0.9", Some(Br)),
            // Junk members are ignored, not fatal.
            ("gzip;q=abc", Some(Identity)),
            ("gzip;q=abc, br;q=0.2", Some(Br)),
            ("br;q=1.5, gzip", Some(Gzip)),
            ("br;q=2, gzip", Some(Gzip)),
            ("br;q=0.1234, gzip;q=0.1", Some(Gzip)),
            ("br;q=-1, gzip;q=0.1", Some(Gzip)),
            ("br;q = 0.5, gzip;q=0.1", Some(Gzip)),
            ("br;level=5, gzip;q=0.1", Some(Gzip)),
            ("br;q=0.5;x=1, gzip;q=0.1", Some(Gzip)),
            ("br;, gzip;q=0.1", Some(Gzip)),
            ("identity;q=zero", Some(Identity)),
            (";;;", Some(Identity)),
            (",,, ,", Some(Identity)),
            ("gz ip", Some(Identity)),
            // Empty value: nothing listed, so only identity.
            ("", Some(Identity)),
            ("   ", Some(Identity)),
        ];
        for (line, want) in cases {
            assert_eq!(negotiated(line), *want, "Accept-Encoding: {line:?}");
        }
    }

    #[test]
    fn missing_accept_encoding_means_identity() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(Identity));
    }

    #[test]
    fn several_lines_form_one_list() {
        assert_eq!(negotiate(&accept(&["gzip", "br"])), Some(Br));
        assert_eq!(negotiate(&accept(&["br;q=0.1", "gzip;q=0.9"])), Some(Gzip));
        assert_eq!(negotiate(&accept(&["*;q=0", "identity"])), Some(Identity));
        assert_eq!(negotiate(&accept(&["", "zstd"])), Some(Zstd));
        assert_eq!(negotiate(&accept(&["", ""])), Some(Identity));
    }

    #[test]
    fn repeated_coding_keeps_its_highest_weight() {
        assert_eq!(negotiated("gzip;q=0, gzip;q=0.5"), Some(Gzip));
        assert_eq!(negotiated("br;q=0.2, gzip;q=0.5, br"), Some(Br));
    }

    #[test]
    fn members_past_the_bound_are_ignored() {
        let mut line = "foo, ".repeat(10_000);
        line.push_str("gzip");
        assert_eq!(negotiated(&line), Some(Identity));

        let within = format!("{}gzip", "foo, ".repeat(MAX_ACCEPT_ENCODING_MEMBERS - 1));
        assert_eq!(negotiated(&within), Some(Gzip));
        let past = format!("{}gzip", "foo, ".repeat(MAX_ACCEPT_ENCODING_MEMBERS));
        assert_eq!(negotiated(&past), Some(Identity));
    }

    #[test]
    fn bound_is_shared_across_lines() {
        let filler: Vec<String> = (0..MAX_ACCEPT_ENCODING_MEMBERS)
            .map(|i| format!("x-{i}"))
            .collect();
        let mut lines: Vec<&str> = filler.iter().map(String::as_str).collect();
        lines.push("br");
        assert_eq!(negotiate(&accept(&lines)), Some(Identity));
        lines.remove(0);
        assert_eq!(negotiate(&accept(&lines)), Some(Br));
    }

    #[test]
    fn qvalue_grammar() {
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"0.5"), Some(500));
        assert_eq!(parse_qvalue(b"0.05"), Some(50));
        assert_eq!(parse_qvalue(b"0.999"), Some(999));
        assert_eq!(parse_qvalue(b"1"), Some(1000));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        assert_eq!(parse_qvalue(b"1.001"), None);
        assert_eq!(parse_qvalue(b"0.0000"), None);
        assert_eq!(parse_qvalue(b".5"), None);
        assert_eq!(parse_qvalue(b""), None);
        assert_eq!(parse_qvalue(b"0,5"), None);
    }

    #[test]
    fn encoding_names_and_header_values() {
        for (enc, name) in [
            (Identity, "identity"),
            (Gzip, "gzip"),
            (Br, "br"),
            (Zstd, "zstd"),
        ] {
            assert_eq!(enc.as_str(), name);
            assert_eq!(enc.header_value(), name);
            assert_eq!(
                Encoding::from_content_encoding(&enc.header_value()),
                Some(enc)
            );
        }
    }

    #[test]
    fn content_encoding_parsing() {
        let parse = |v: &'static str| Encoding::from_content_encoding(&HeaderValue::from_static(v));
        assert_eq!(parse("GZIP"), Some(Gzip));
        assert_eq!(parse("x-gzip"), Some(Gzip));
        assert_eq!(parse(" Br "), Some(Br));
        assert_eq!(parse("ZSTD"), Some(Zstd));
        assert_eq!(parse("deflate"), None);
        assert_eq!(parse("gzip, br"), None);
        assert_eq!(parse(""), None);
    }

    /// Deterministic incompressible bytes (xorshift64), so tests need no RNG
    /// crate.
    #[cfg(all(feature = "gzip", feature = "br", feature = "zstd"))]
    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[0]
            })
            .collect()
    }

    #[cfg(all(feature = "gzip", feature = "br", feature = "zstd"))]
    fn text(len: usize) -> Vec<u8> {
        b"<li class=\"item\">The quick brown fox jumps over the lazy dog.</li>\n"
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    #[cfg(all(feature = "gzip", feature = "br", feature = "zstd"))]
    const CODECS: [Encoding; 4] = [Identity, Gzip, Br, Zstd];

    #[cfg(all(feature = "gzip", feature = "br", feature = "zstd"))]
    #[test]
    fn round_trips_text_and_random_data() {
        let inputs = [
            Vec::new(),
            b"x".to_vec(),
            text(MIN_COMPRESS_SIZE),
            text(300_000),
            pseudo_random(100_000),
        ];
        for enc in CODECS {
            for input in &inputs {
                let packed = compress(enc, input).unwrap();
                let unpacked = decompress(enc, &packed, input.len()).unwrap();
                assert_eq!(&unpacked[..], &input[..], "{enc:?}, {} bytes", input.len());
            }
        }
    }

    #[cfg(all(feature = "gzip", feature = "br", feature = "zstd"))]
    #[test]
    fn compression_shrinks_text() {
        let input = text(100_000);
        for enc in [Gzip, Br, Zstd] {
            let packed = compress(enc, &input).unwrap();
            assert!(packed.len() < input.len() / 10, "{enc:?}: {}", packed.len());
        }
    }

    #[cfg(all(feature = "gzip", feature = "br", feature = "zstd"))]
    #[test]
    fn brotli_window_fits_the_body() {
        assert_eq!(brotli_lgwin(0), BROTLI_MIN_LGWIN);
        assert_eq!(brotli_lgwin(1_000), 10);
        assert_eq!(brotli_lgwin(1_009), 11);
        assert_eq!(brotli_lgwin(100_000), 17);
        assert_eq!(brotli_lgwin(10_000_000), BROTLI_MAX_LGWIN);
        for len in [1_000, 1_009, 1 << 16, 100_000] {
            let lgwin = brotli_lgwin(len);
            assert!((1usize << lgwin) - 16 >= len);
        }
    }

    #[cfg(all(feature = "gzip", feature = "br", feature = "zstd"))]
    #[test]
    fn decompression_bomb_hits_the_limit() {
        let zeros = vec![0u8; 10_000_000];
        for enc in CODECS {
            let bomb = compress(enc, &zeros).unwrap();
            let err = decompress(enc, &bomb, 1_000_000).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{enc:?}");
            assert!(err.to_string().contains("exceeds"), "{enc:?}: {err}");
        }
    }

    #[cfg(all(feature = "gzip", feature = "br", feature = "zstd"))]
    #[test]
    fn output_exactly_at_the_limit_is_accepted() {
        let input = text(50_000);
        for enc in CODECS {
            let packed = compress(enc, &input).unwrap();
            assert_eq!(decompress(enc, &packed, 50_000).unwrap().len(), 50_000);
            assert!(decompress(enc, &packed, 49_999).is_err(), "{enc:?}");
        }
    }

    #[cfg(all(feature = "gzip", feature = "br", feature = "zstd"))]
    #[test]
    fn capped_reader_never_allocates_past_the_limit() {
        let limit = 1_000_000;
        let out = read_capped(io::repeat(0).take(limit as u64), Gzip, 10, limit).unwrap();
        assert_eq!(out.len(), limit);
        assert!(out.capacity() <= limit);

        let err = read_capped(io::repeat(0), Gzip, 10, limit).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[cfg(all(feature = "gzip", feature = "br", feature = "zstd"))]
    #[test]
    fn truncated_input_is_an_error() {
        let input = text(50_000);
        for enc in [Gzip, Br, Zstd] {
            let packed = compress(enc, &input).unwrap();
            for cut in [1, packed.len() / 2, packed.len() - 1] {
                let err = decompress(enc, &packed[..cut], usize::MAX).unwrap_err();
                assert_eq!(
                    err.kind(),
                    io::ErrorKind::InvalidData,
                    "{enc:?} cut at {cut}"
                );
            }
        }
    }

    #[cfg(all(feature = "gzip", feature = "br", feature = "zstd"))]
    #[test]
    fn corrupt_input_is_an_error() {
        let garbage = pseudo_random(4_096);
        for enc in [Gzip, Br, Zstd] {
            let err = decompress(enc, &garbage, usize::MAX).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{enc:?}");
        }
    }

    #[test]
    fn identity_decompress_respects_the_limit() {
        assert_eq!(&decompress(Identity, b"abc", 3).unwrap()[..], b"abc");
        assert!(decompress(Identity, b"abcd", 3).is_err());
    }

    #[cfg(all(feature = "gzip", feature = "br", feature = "zstd"))]
    #[test]
    fn zstd_window_limit() {
        assert_eq!(zstd_window_log_max(0), 23);
        assert_eq!(zstd_window_log_max(1_000_000), 23);
        assert_eq!(zstd_window_log_max(1 << 24), 24);
        assert_eq!(zstd_window_log_max((1 << 24) + 1), 25);
        assert_eq!(zstd_window_log_max(usize::MAX), 27);
    }

    #[test]
    fn compressible_content_types() {
        let yes = [
            "text/html",
            "text/html; charset=utf-8",
            "TEXT/CSS",
            "text/plain;charset=UTF-8",
            "text/javascript",
            "application/json",
            "Application/JSON ; charset=utf-8",
            "application/problem+json",
            "application/ld+json",
            "application/manifest+json",
            "application/javascript",
            "application/x-javascript",
            "application/xml",
            "application/xhtml+xml",
            "application/rss+xml",
            "application/atom+xml",
            "image/svg+xml",
            "application/wasm",
            "font/ttf",
            "font/otf",
            "application/vnd.ms-fontobject",
            "image/x-icon",
        ];
        let no = [
            "text/event-stream",
            "text/event-stream; charset=utf-8",
            "image/png",
            "image/jpeg",
            "image/webp",
            "font/woff2",
            "font/woff",
            "video/mp4",
            "application/zip",
            "application/gzip",
            "application/octet-stream",
            "application/pdf",
            "text",
            "text/",
            "",
        ];
        for ct in yes {
            let value = HeaderValue::from_static(ct);
            assert!(is_compressible(Some(&value)), "{ct}");
        }
        for ct in no {
            let value = HeaderValue::from_static(ct);
            assert!(!is_compressible(Some(&value)), "{ct}");
        }
        assert!(!is_compressible(None));

        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(is_compressible(headers.get(CONTENT_TYPE)));
    }

    #[cfg(all(feature = "gzip", feature = "br", feature = "zstd"))]
    #[test]
    fn streamed_codings_decode_to_the_body_fed_piece_by_piece() {
        let body = text(200_000);
        for enc in [Gzip, Br, Zstd] {
            for hint in [None, Some(body.len())] {
                let mut encoder = StreamEncoder::new(enc, hint).unwrap();
                let mut out = Vec::new();
                for piece in body.chunks(7_000) {
                    let made = encoder.write(piece).unwrap();
                    // Flushed: every piece gives the viewer something at once.
                    assert!(!made.is_empty(), "{enc:?}");
                    out.extend_from_slice(&made);
                }
                out.extend_from_slice(&encoder.finish().unwrap());
                assert!(out.len() < body.len() / 2, "{enc:?} compresses");
                let decoded = decompress(enc, &out, body.len()).unwrap();
                assert_eq!(decoded, body, "{enc:?} {hint:?}");
            }
        }
        assert!(StreamEncoder::new(Identity, None).is_none());
    }

    #[test]
    fn size_bounds_match_cloudfront() {
        assert_eq!(MIN_COMPRESS_SIZE, 1_000);
        assert_eq!(MAX_COMPRESS_SIZE, 10_000_000);
    }
}
