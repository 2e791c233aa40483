//! Whole-body envelopes (contract §3): the request envelope parser/opener
//! (`crypto::envelope::open_request`) and the proxy stage around it
//! (`proxy::envelope::open_request`, which also reads the body with its media-type and size
//! checks), plus the response side (`proxy::envelope::seal_response`, which reads the app's
//! body — decoding gzip/deflate/br layers under the size limit — and seals it).
//!
//! Input: the raw bytes are the request body. The same bytes also drive (via `arbitrary`):
//! the request's `Content-Type`; an app response (status, `Content-Encoding`, body) sealed
//! under a known session key, which must open to the decoded body; and, for one input in
//! eight, a round trip of an envelope a client would make of arbitrary plaintext.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use fieldseal::body::{empty, full};
use fieldseal::crypto::envelope::{self, EnvelopeError, SessionKey};
use fieldseal::proxy::envelope as stage;
use fieldseal::proxy::error::ProxyError;
use fieldseal_fuzz::{
    client_keys, envelope_open_response, envelope_request, envelope_request_with,
    fixed_wrapped_key, rsa_kid,
};
use http::header::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Response, StatusCode};
use libfuzzer_sys::fuzz_target;

/// Body limit of the stages (small, so the limit paths are reachable).
const LIMIT: usize = 64 * 1024;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    })
}

/// A session key opened from a real envelope once, and its bytes as the client knows them.
fn session() -> &'static (SessionKey, [u8; 32]) {
    static SESSION: OnceLock<(SessionKey, [u8; 32])> = OnceLock::new();
    SESSION.get_or_init(|| {
        let (body, key) = envelope_request(b"{}", rsa_kid());
        let session = envelope::open_request(&body, client_keys())
            .unwrap()
            .session;
        (session, key)
    })
}

#[derive(Debug, Arbitrary)]
struct Extra {
    content_type: u8,
    declared_length: Option<u16>,
    status: u16,
    head: bool,
    codings: Vec<u8>,
    response_body: Vec<u8>,
    round_trip: u8,
    plaintext: Vec<u8>,
}

const CODINGS: [&str; 7] = ["gzip", "deflate", "br", "identity", "x-gzip", "zstd", ""];

fuzz_target!(|data: &[u8]| {
    let keys = client_keys();
    let mut u = Unstructured::new(data);
    let extra = Extra::arbitrary(&mut u).ok();

    // 1. The parser/opener on the raw body.
    let direct = envelope::open_request(data, keys);
    match &direct {
        Ok(opened) => {
            serde_json::from_slice::<serde::de::IgnoredAny>(&opened.plaintext)
                .expect("an opened envelope is JSON");
            assert_eq!(opened.session.kid, rsa_kid());
        }
        Err(e) => {
            let _ = (e.reason(), e.kid(), format!("{e:?}"));
        }
    }

    // 2. The proxy stage on the same body.
    let mut headers = HeaderMap::new();
    let ct = extra.as_ref().map_or(0, |e| e.content_type);
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(match ct % 4 {
            0 | 1 => "application/json",
            2 => "application/jose+json; charset=utf-8",
            _ => "text/plain",
        }),
    );
    if let Some(n) = extra.as_ref().and_then(|e| e.declared_length) {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    let body = if data.is_empty() {
        empty()
    } else {
        full(data.to_vec())
    };
    let mut ops = Vec::new();
    // A store per input: a `jti` the input carries must not make the next input a replay.
    let store = fieldseal::replay::MemoryReplayStore::new(64);
    let replay = fieldseal::replay::Replay {
        store: &store,
        window: std::time::Duration::from_secs(300),
        now: fieldseal::replay::unix_now(),
        deferred: None,
    };
    let staged = runtime().block_on(stage::open_request(
        &mut headers,
        body,
        Some(keys),
        LIMIT,
        (&replay, None),
        &mut ops,
    ));
    match (&staged, &direct) {
        (Ok(_), Ok(_)) => {
            assert_eq!(headers.get(CONTENT_TYPE).unwrap(), "application/json");
        }
        (Ok(_), Err(e)) => panic!("the stage opened what the opener refused: {e:?}"),
        (Err(ProxyError::EnvelopeRejected { reason, .. }), Err(e)) => {
            assert!(
                *reason == e.reason() || *reason == "missing",
                "{reason} vs {e:?}"
            );
        }
        (Err(_), _) => {}
    }

    let Some(extra) = extra else { return };

    // 3. The response side: seal whatever the app sends under a session key.
    let (session, session_bytes) = session();
    let mut resp = Response::new(if extra.response_body.is_empty() {
        empty()
    } else {
        full(extra.response_body.clone())
    });
    *resp.status_mut() = StatusCode::from_u16(100 + extra.status % 500).unwrap_or(StatusCode::OK);
    let codings: Vec<&str> = extra
        .codings
        .iter()
        .take(5)
        .map(|c| CODINGS[*c as usize % CODINGS.len()])
        .collect();
    if !codings.is_empty() {
        resp.headers_mut().insert(
            CONTENT_ENCODING,
            HeaderValue::from_str(&codings.join(", ")).unwrap(),
        );
    }
    let method = if extra.head {
        Method::HEAD
    } else {
        Method::POST
    };
    let status = resp.status();
    let mut ops = Vec::new();
    let sealed = runtime().block_on(async {
        let resp = stage::seal_response(
            resp,
            &method,
            session,
            LIMIT,
            Duration::from_secs(5),
            &mut ops,
        )
        .await?;
        let (parts, body) = resp.into_parts();
        let bytes = http_body_util::BodyExt::collect(body)
            .await
            .map_err(|_| ProxyError::UpstreamProtocol)?
            .to_bytes();
        Ok::<_, ProxyError>((parts, bytes))
    });
    if let Ok((parts, bytes)) = sealed {
        let passed_through = extra.head
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        if !passed_through {
            let plain = envelope_open_response(&bytes, session_bytes)
                .expect("a sealed response opens with the session key");
            let identity = codings.iter().all(|c| c.is_empty() || *c == "identity");
            if identity {
                assert_eq!(
                    plain, extra.response_body,
                    "the sealed response is not the app's body"
                );
            }
            assert!(plain.len() <= LIMIT);
            assert!(parts.headers.get(CONTENT_ENCODING).is_none());
        }
    }

    // 4. Round trip of a real client envelope (RSA private-key operations are slow: 1 in 8).
    if extra.round_trip % 8 == 0 {
        let (key, wrapped) = fixed_wrapped_key();
        let body = envelope_request_with(&extra.plaintext, rsa_kid(), key, wrapped);
        let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&extra.plaintext).is_ok();
        match envelope::open_request(&body, keys) {
            Ok(opened) => {
                let (plain, session) = (opened.plaintext, opened.session);
                assert!(is_json, "a non-JSON body opened");
                assert_eq!(&plain[..], &extra.plaintext[..]);
                let reply = session.seal_response(&extra.plaintext).unwrap();
                assert_eq!(
                    envelope_open_response(&reply, key).as_deref(),
                    Some(&extra.plaintext[..])
                );
            }
            Err(e) => {
                assert!(!is_json, "a JSON body failed to open: {e:?}");
                assert_eq!(e, EnvelopeError::NotJson);
            }
        }
        // Another kid: unknown, and named.
        let body = envelope_request_with(&extra.plaintext, "not-a-kid", key, wrapped);
        assert_eq!(
            envelope::open_request(&body, keys).unwrap_err(),
            EnvelopeError::UnknownKey("not-a-kid".into())
        );
    }
});
