//! Compress once, keep the variants, serve the best coding each viewer accepts.

mod support;

use http::StatusCode;
use std::io::Read;
use support::*;
use tower::{Layer, ServiceExt};
use tower_cdn::CdnLayer;

fn text(len: usize) -> String {
    "tower-cdn compresses text once and serves it many times. ".repeat(len / 57 + 1)[..len]
        .to_owned()
}

fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        "br" => {
            brotli::Decompressor::new(body, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "zstd" => out = zstd::decode_all(body).unwrap(),
        other => panic!("unexpected coding {other}"),
    }
    out
}

fn text_origin(body: String, extra: &'static [(&'static str, &'static str)]) -> (Origin, Seen) {
    origin(move |_| {
        let mut r = response(
            &[
                ("cache-control", "max-age=600"),
                ("content-type", "text/html; charset=utf-8"),
                ("etag", "\"abc\""),
            ],
            body.clone(),
        );
        for (k, v) in extra {
            r.headers_mut().append(*k, v.parse().unwrap());
        }
        r
    })
}

#[tokio::test]
async fn every_coding_round_trips_to_the_identity_body() {
    let body = text(20_000);
    let (origin, seen) = text_origin(body.clone(), &[]);
    let layer = CdnLayer::new();
    let svc = layer.clone().layer(origin);
    assert_eq!(send(&svc, get("/p", &[])).await.body, body);
    for enc in ["gzip", "br", "zstd"] {
        let res = send(&svc, get("/p", &[("accept-encoding", enc)])).await;
        assert_eq!(res.header("content-encoding"), enc);
        assert_eq!(res.header("content-length"), res.body.len().to_string());
        assert!(res.body.len() < body.len() / 4, "{enc} compresses");
        assert_eq!(decode(enc, &res.body), body.as_bytes());
        assert_eq!(
            res.header("etag"),
            "W/\"abc\"",
            "a strong ETag becomes weak on a coding"
        );
        assert_eq!(res.header("vary"), "Accept-Encoding");
        assert_eq!(res.x_cache(), "Hit from tower-cdn");
    }
    let identity = send(&svc, get("/p", &[("accept-encoding", "identity")])).await;
    assert!(!identity.headers.contains_key("content-encoding"));
    assert_eq!(identity.header("etag"), "\"abc\"");
    assert_eq!(
        identity.header("vary"),
        "Accept-Encoding",
        "identity also depends on Accept-Encoding"
    );
    assert_eq!(seen.calls(), 1, "one object for every Accept-Encoding");
    assert_eq!(layer.metrics().compressions, 3);
}

#[tokio::test]
async fn negotiation_follows_the_viewers_preferences() {
    let body = text(5_000);
    let (origin, _) = text_origin(body, &[]);
    let svc = CdnLayer::new().layer(origin);
    send(&svc, get("/p", &[])).await;
    let cases = [
        ("gzip, deflate, br, zstd", Some("br")),
        ("gzip;q=1.0, br;q=0.5", Some("gzip")),
        ("br;q=0, gzip", Some("gzip")),
        ("*", Some("br")),
        ("*;q=0, identity", None),
        ("identity", None),
        ("GZIP", Some("gzip")),
        (" zstd ; q=0.9 , gzip;q=0.8", Some("zstd")),
        ("gzip;q=abc, ;;;, zstd", Some("zstd")),
        ("", None),
        ("compress, deflate", None),
    ];
    for (accept, expected) in cases {
        let res = send(&svc, get("/p", &[("accept-encoding", accept)])).await;
        assert_eq!(
            res.headers
                .get("content-encoding")
                .map(|v| v.to_str().unwrap()),
            expected,
            "Accept-Encoding: {accept:?}"
        );
    }
}

#[tokio::test]
async fn vary_is_merged_not_duplicated() {
    let (origin, _) = text_origin(
        text(5_000),
        &[("vary", "Accept-Language"), ("vary", "accept-encoding")],
    );
    let svc = CdnLayer::new().layer(origin);
    let res = send(&svc, get("/p", &[("accept-encoding", "br")])).await;
    let vary: Vec<_> = res
        .headers
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        vary.join(", ").to_ascii_lowercase(),
        "accept-language, accept-encoding"
    );

    let (origin, _) = text_origin(text(5_000), &[("vary", "Accept-Language")]);
    let svc = CdnLayer::new().layer(origin);
    let res = send(
        &svc,
        get(
            "/p",
            &[("accept-encoding", "br"), ("accept-language", "en")],
        ),
    )
    .await;
    assert_eq!(res.header("vary"), "Accept-Language, Accept-Encoding");
}

async fn coding_of(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    len: usize,
) -> Option<String> {
    let body = text(len);
    let (origin, _) = origin(move |_| {
        let mut r = response(headers, body.clone());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    });
    let svc = CdnLayer::new().layer(origin);
    let first = send(&svc, get("/p", &[])).await;
    let res = send(&svc, get("/p", &[("accept-encoding", "gzip")])).await;
    let coding = res
        .headers
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    // The second viewer gets the same content, in whatever coding.
    match coding.as_deref() {
        Some(enc) => assert_eq!(decode(enc, &res.body), first.body),
        None => assert_eq!(res.body, first.body),
    }
    // Whether it is compressed or not, the object is stored and served from the store.
    assert_eq!(res.x_cache(), "Hit from tower-cdn", "{status} {len}");
    coding
}

#[tokio::test]
async fn what_is_not_compressed() {
    let html = &[
        ("cache-control", "max-age=60"),
        ("content-type", "text/html"),
    ];
    assert_eq!(coding_of(200, html, 5_000).await.as_deref(), Some("gzip"));
    assert_eq!(coding_of(404, html, 5_000).await.as_deref(), Some("gzip"));
    assert_eq!(coding_of(200, html, 999).await, None, "too small");
    assert_eq!(coding_of(200, html, 10_000_001).await, None, "too large");
    assert_eq!(
        coding_of(410, html, 5_000).await,
        None,
        "status outside 200/403/404"
    );
    let png = &[
        ("cache-control", "max-age=60"),
        ("content-type", "image/png"),
    ];
    assert_eq!(
        coding_of(200, png, 5_000).await,
        None,
        "not a compressible type"
    );
    let no_transform = &[
        ("cache-control", "max-age=60, no-transform"),
        ("content-type", "text/html"),
    ];
    assert_eq!(
        coding_of(200, no_transform, 5_000).await,
        None,
        "no-transform"
    );
    let none = &[("cache-control", "max-age=60")];
    assert_eq!(coding_of(200, none, 5_000).await, None, "no media type");
}

#[tokio::test]
async fn an_origin_gzip_body_is_decoded_for_an_identity_only_viewer() {
    let body = text(8_000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, body.as_bytes()).unwrap();
    let gzipped = gz.finish().unwrap();
    let (origin, seen) = origin(move |_| {
        response(
            &[
                ("cache-control", "max-age=60"),
                ("content-type", "text/plain"),
                ("content-encoding", "gzip"),
            ],
            gzipped.clone(),
        )
    });
    let layer = CdnLayer::new();
    let svc = layer.clone().layer(origin);
    let first = send(&svc, get("/g", &[("accept-encoding", "gzip")])).await;
    assert_eq!(first.header("content-encoding"), "gzip");
    let plain = send(&svc, get("/g", &[("accept-encoding", "identity")])).await;
    assert!(!plain.headers.contains_key("content-encoding"));
    assert_eq!(plain.body, body);
    let br = send(&svc, get("/g", &[("accept-encoding", "br")])).await;
    assert_eq!(decode("br", &br.body), body.as_bytes());
    let again = send(&svc, get("/g", &[])).await;
    assert_eq!(again.body, body, "no Accept-Encoding: identity");
    assert_eq!(again.x_cache(), "Hit from tower-cdn");
    assert_eq!(seen.calls(), 1);
    assert_eq!(
        layer.metrics().compressions,
        2,
        "identity and br made once each"
    );
}

#[tokio::test]
async fn ranges_and_conditionals_apply_to_the_coding_sent() {
    let body = text(5_000);
    let (origin, _) = text_origin(body, &[]);
    let svc = CdnLayer::new().layer(origin);
    send(&svc, get("/p", &[])).await;
    let full = send(&svc, get("/p", &[("accept-encoding", "gzip")])).await;
    let part = send(
        &svc,
        get("/p", &[("accept-encoding", "gzip"), ("range", "bytes=0-9")]),
    )
    .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, full.body.slice(0..10));
    assert_eq!(
        part.header("content-range"),
        format!("bytes 0-9/{}", full.body.len())
    );
    let not_modified = send(
        &svc,
        get(
            "/p",
            &[("accept-encoding", "gzip"), ("if-none-match", "W/\"abc\"")],
        ),
    )
    .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.header("etag"), "W/\"abc\"");
}

#[tokio::test]
async fn a_variant_is_made_once_under_fifty_concurrent_requests() {
    let body = text(200_000);
    let (origin, _) = text_origin(body.clone(), &[]);
    let layer = CdnLayer::new();
    let svc = layer.clone().layer(origin);
    send(&svc, get("/p", &[])).await;
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let res = svc
                    .oneshot(get("/p", &[("accept-encoding", "br")]))
                    .await
                    .unwrap();
                let body = http_body_util::BodyExt::collect(res.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                decode("br", &body)
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), body.as_bytes());
    }
    assert_eq!(layer.metrics().compressions, 1);
}

// A coding made from a stored object lives and dies with it: once the object is stale
// (RFC 9111 §4.2) no viewer gets the old content in any coding, and the codings made from
// the new response carry the new content.
#[tokio::test]
async fn codings_expire_with_their_object() {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let (origin, seen) = origin(move |_| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        response(
            &[
                ("cache-control", "max-age=60"),
                ("content-type", "text/html; charset=utf-8"),
            ],
            format!("version {n}: {}", text(5_000)),
        )
    });
    let (layer, clock) = layer();
    let svc = layer.layer(origin);
    let v1 = send(&svc, get("/p", &[])).await.body;
    assert!(v1.starts_with(b"version 1: "));
    for enc in ["br", "gzip"] {
        let res = send(&svc, get("/p", &[("accept-encoding", enc)])).await;
        assert_eq!(res.x_cache(), "Hit from tower-cdn", "{enc}");
        assert_eq!(decode(enc, &res.body), v1, "{enc}");
    }
    clock.advance(std::time::Duration::from_secs(59));
    let br = send(&svc, get("/p", &[("accept-encoding", "br")])).await;
    assert_eq!(br.x_cache(), "Hit from tower-cdn");
    assert_eq!(decode("br", &br.body), v1);
    assert_eq!(seen.calls(), 1);

    clock.advance(std::time::Duration::from_secs(1));
    let br = send(&svc, get("/p", &[("accept-encoding", "br")])).await;
    assert_eq!(br.x_cache(), "Miss from tower-cdn");
    // A miss may stream the origin's identity body; either way it is the new content.
    let v2 = match br.headers.get("content-encoding") {
        Some(enc) => decode(enc.to_str().unwrap(), &br.body),
        None => br.body.to_vec(),
    };
    assert!(v2.starts_with(b"version 2: "));
    assert_eq!(seen.calls(), 2);
    for enc in ["gzip", "br"] {
        let res = send(&svc, get("/p", &[("accept-encoding", enc)])).await;
        assert_eq!(res.x_cache(), "Hit from tower-cdn", "{enc}");
        assert_eq!(decode(enc, &res.body), v2, "{enc}");
    }
    let identity = send(&svc, get("/p", &[])).await;
    assert_eq!(identity.body, v2);
    assert_eq!(seen.calls(), 2);
}
