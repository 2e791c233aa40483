//! Fixtures shared by the fuzz targets: a fixed keyring, fixed client keys (RSA + X25519) and
//! the client-side helpers that build real `fs1` tokens, JWEs and envelopes, so round-trip
//! checks and seed corpora use exactly what a client would send.
//!
//! Every key here is a throwaway test key that protects nothing.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aes_gcm::aead::{Aead, AeadInPlace, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use fieldseal::crypto::client_keys::ClientKeys;
use fieldseal::crypto::hpke::Suite;
use fieldseal::crypto::keyring::{KeyEntry, KeyState, Keyring, KeyringFile};
use rsa::rand_core::OsRng;
use rsa::sha2::Sha256;
use serde_json::Value;

/// The X25519 identity of the C2SP age test vectors (a published test key): the `age_file`
/// target opens with it, so the suite's vectors are its seeds.
pub const AGE_IDENTITY: &str =
    "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0";

pub const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A fixed RSA-2048 test key (PKCS#8): the file fieldseal's own unit tests use
/// (`rsa_keys::TEST_KEY_PEM`).
pub const TEST_RSA_PEM: &str = include_str!("../../tests/keys/rsa-2048-test-only.pem");

/// The X25519 example key of draft-ietf-jose-hpke-encrypt-20 (Appendix A.7), as PKCS#8 PEM.
pub fn test_hpke_pem() -> String {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04,
        0x20,
    ];
    let secret = B64URL
        .decode("VtBu3AuB4_RKgDCDqj1j-_Kzf12ekvaGxoAGmMDcDks")
        .expect("fixed key decodes");
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        B64.encode([&PREFIX[..], &secret[..]].concat())
    )
}

fn entry(id: &str, secret: [u8; 32], state: KeyState) -> KeyEntry {
    KeyEntry {
        id: id.into(),
        secret: B64.encode(secret).into(),
        created_at: "2026-11-01T00:00:00Z".into(),
        state,
    }
}

/// The keyring file of the fuzz targets: the contract's `k1` (bytes 00..1f, active, primary),
/// `old` (decrypt_only) and `gone` (disabled).
pub fn keyring_file() -> KeyringFile {
    let mut k1 = [0u8; 32];
    for (i, b) in k1.iter_mut().enumerate() {
        *b = i as u8;
    }
    KeyringFile {
        shredded: Vec::new(),
        primary: "k1".into(),
        keys: vec![
            entry("k1", k1, KeyState::Active),
            entry("old", [7; 32], KeyState::DecryptOnly),
            entry("gone", [9; 32], KeyState::Disabled),
        ],
    }
}

/// The fixed keyring, built once.
pub fn keyring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| Keyring::build(&keyring_file()).expect("fixed keyring is valid"))
}

/// The fixed post-quantum X-Wing key (PKCS#8 `id-XWing` over a fixed 32-byte seed).
pub fn test_xwing_pem() -> String {
    const PREFIX: &str = "3034020100300d060b2b0601040183e62d81c87a0420";
    let prefix: Vec<u8> = (0..PREFIX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&PREFIX[i..i + 2], 16).unwrap())
        .collect();
    let seed: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let body = B64.encode([&prefix[..], &seed[..]].concat());
    let (first, rest) = body.split_at(64);
    format!("-----BEGIN PRIVATE KEY-----\n{first}\n{rest}\n-----END PRIVATE KEY-----\n")
}

/// The fixed client keys (one RSA, one X25519, one X-Wing), built once.
pub fn client_keys() -> &'static ClientKeys {
    static KEYS: OnceLock<ClientKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rsa = fieldseal::crypto::rsa_keys::from_pem(TEST_RSA_PEM).expect("RSA test key");
        let hpke = fieldseal::crypto::hpke::from_pem(&test_hpke_pem()).expect("HPKE test key");
        let xwing = fieldseal::crypto::hpke::from_pem(&test_xwing_pem()).expect("X-Wing test key");
        ClientKeys::new(vec![rsa], vec![hpke, xwing]).expect("distinct kids")
    })
}

/// The fixed HPKE key for `suite`'s KEM.
pub fn hpke_key_for(suite: Suite) -> &'static fieldseal::crypto::hpke::HpkeKey {
    client_keys()
        .hpke_keys()
        .iter()
        .find(|k| k.kem() == suite.kem())
        .expect("a fixed key for every KEM")
}

/// The RSA key's `kid` (its RFC 7638 thumbprint).
pub fn rsa_kid() -> &'static str {
    &client_keys().rsa_keys()[0].kid
}

/// The HPKE key's `kid`.
pub fn hpke_kid() -> &'static str {
    client_keys().hpke_keys()[0].kid()
}

/// The RSA public key, from the JWK the proxy publishes (what a client has).
pub fn rsa_public() -> &'static rsa::RsaPublicKey {
    static PUBLIC: OnceLock<rsa::RsaPublicKey> = OnceLock::new();
    PUBLIC.get_or_init(|| {
        let jwk = client_keys().rsa_keys()[0].jwk();
        let n = B64URL.decode(jwk["n"].as_str().unwrap()).unwrap();
        let e = B64URL.decode(jwk["e"].as_str().unwrap()).unwrap();
        rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(&n),
            rsa::BigUint::from_bytes_be(&e),
        )
        .expect("valid public key")
    })
}

/// RSA-OAEP-256 encryption of `secret` to the proxy's RSA key, as a client does it.
pub fn rsa_wrap(secret: &[u8]) -> Vec<u8> {
    rsa_public()
        .encrypt(&mut OsRng, rsa::Oaep::new::<Sha256>(), secret)
        .expect("RSA-OAEP encryption")
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rsa::rand_core::RngCore::fill_bytes(&mut OsRng, &mut out);
    out
}

/// A content/session key and its RSA-OAEP-256 wrapping, made once per process: the RSA
/// public-key operation of the `rsa` crate is slow under the sanitizer, and the proxy's work
/// (the private-key unwrap) is the same whichever key was wrapped.
pub fn fixed_wrapped_key() -> &'static ([u8; 32], Vec<u8>) {
    static KEY: OnceLock<([u8; 32], Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        let key: [u8; 32] = random();
        let wrapped = rsa_wrap(&key);
        (key, wrapped)
    })
}

/// A JWE compact serialization `alg: RSA-OAEP-256, enc: A256GCM` of `plaintext` with the
/// protected header `header` (JSON text, sent as is), encrypted to the proxy's RSA key.
pub fn jwe_rsa(header: &str, plaintext: &[u8]) -> String {
    let cek: [u8; 32] = random();
    jwe_rsa_with(header, plaintext, &cek, &rsa_wrap(&cek))
}

/// [`jwe_rsa`] with a given CEK and its wrapping (see [`fixed_wrapped_key`]).
pub fn jwe_rsa_with(header: &str, plaintext: &[u8], cek: &[u8; 32], wrapped: &[u8]) -> String {
    let header_b64 = B64URL.encode(header);
    let iv: [u8; 12] = random();
    let mut ciphertext = plaintext.to_vec();
    let tag = Aes256Gcm::new_from_slice(cek)
        .unwrap()
        .encrypt_in_place_detached(
            Nonce::from_slice(&iv),
            header_b64.as_bytes(),
            &mut ciphertext,
        )
        .unwrap();
    [
        header_b64,
        B64URL.encode(wrapped),
        B64URL.encode(iv),
        B64URL.encode(ciphertext),
        B64URL.encode(tag),
    ]
    .join(".")
}

/// An HPKE integrated-encryption JWE (draft-ietf-jose-hpke-encrypt-20 §5) of `plaintext` with
/// the protected header `header`, sealed to the proxy's key of `suite`'s KEM (X25519 or X-Wing).
pub fn jwe_hpke(header: &str, suite: Suite, plaintext: &[u8]) -> String {
    let header_b64 = B64URL.encode(header);
    let (enc, ct) = hpke_key_for(suite)
        .seal(suite, b"", header_b64.as_bytes(), plaintext)
        .expect("HPKE seal");
    [
        header_b64,
        B64URL.encode(enc),
        String::new(),
        B64URL.encode(ct),
        String::new(),
    ]
    .join(".")
}

/// The standard RSA header for the fixed key, with `cty: json` when `json`.
pub fn rsa_header(json: bool) -> String {
    let mut h = serde_json::json!({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": rsa_kid()});
    if json {
        h["cty"] = Value::from("json");
    }
    h.to_string()
}

/// A request envelope (contract §3) of `plaintext` for the RSA key `kid`: the body and the
/// session key a client keeps to open the response.
pub fn envelope_request(plaintext: &[u8], kid: &str) -> (Vec<u8>, [u8; 32]) {
    let session: [u8; 32] = random();
    (
        envelope_request_with(plaintext, kid, &session, &rsa_wrap(&session)),
        session,
    )
}

/// [`envelope_request`] with a given session key and its wrapping (see [`fixed_wrapped_key`]).
pub fn envelope_request_with(
    plaintext: &[u8],
    kid: &str,
    session: &[u8; 32],
    wrapped: &[u8],
) -> Vec<u8> {
    let nonce: [u8; 12] = random();
    let ct = Aes256Gcm::new_from_slice(session)
        .unwrap()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: fieldseal::crypto::envelope::REQUEST_AAD,
            },
        )
        .unwrap();
    let body = serde_json::json!({
        "encrypted_session_key": B64.encode(wrapped),
        "encrypted_data": B64.encode([&nonce[..], &ct[..]].concat()),
        "kid": kid,
    });
    serde_json::to_vec(&body).unwrap()
}

/// Opens a response envelope `{"encrypted_data": …}` with the client's session key.
pub fn envelope_open_response(body: &[u8], session: &[u8; 32]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let data = B64.decode(v.get("encrypted_data")?.as_str()?).ok()?;
    if data.len() < 28 {
        return None;
    }
    let (nonce, ct) = data.split_at(12);
    Aes256Gcm::new_from_slice(session)
        .ok()?
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: fieldseal::crypto::envelope::RESPONSE_AAD,
            },
        )
        .ok()
}

/// A small deterministic PRNG (SplitMix64) for choices derived from the input.
pub struct Prng(pub u64);

impl Prng {
    /// Seeded from a hash (FNV-1a) of `data`.
    pub fn from_bytes(data: &[u8]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in data {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self(h)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The config fuzz target's fixture directory (see `fuzz_targets/config_compile.rs`).
pub struct Fixture {
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Strings that must never appear in an error message.
    pub secrets: Vec<String>,
}

fn write_private(path: &Path, contents: &[u8]) {
    fieldseal::secret_file::write_private(path, contents).expect("write fixture");
}

/// Built once per process in a private temporary directory.
pub fn config_fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Directories left by earlier fuzz processes that are gone.
        if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("fieldseal-fuzz-config-") {
                    if !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir =
            std::env::temp_dir().join(format!("fieldseal-fuzz-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture dir");
        let dir = dir.canonicalize().expect("fixture dir");

        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.cert.pem()).unwrap();
        let tls_key = cert.signing_key.serialize_pem();
        write_private(&dir.join("key.pem"), tls_key.as_bytes());
        std::fs::write(dir.join("open.pem"), tls_key.as_bytes()).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join("open.pem"), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }

        let ring = keyring_file();
        let ring_json = serde_json::to_vec_pretty(&ring).unwrap();
        write_private(&dir.join("keyring.json"), &ring_json);
        let kek_bytes = [0x42u8; 32];
        write_private(&dir.join("kek.bin"), &kek_bytes);
        let kek = fieldseal::crypto::Kek::raw(kek_bytes.into(), "fuzz");
        fieldseal::crypto::keyring::write_keyring_file(
            &dir.join("keyring-wrapped.json"),
            &ring,
            Some(&kek),
        )
        .unwrap();
        write_private(
            &dir.join("passphrase.txt"),
            b"correct horse battery staple\n",
        );
        write_private(&dir.join("rsa.pem"), TEST_RSA_PEM.as_bytes());
        let hpke = test_hpke_pem();
        write_private(&dir.join("x25519.pem"), hpke.as_bytes());
        write_private(&dir.join("audit.key"), B64.encode([5u8; 32]).as_bytes());

        let mut secrets: Vec<String> = ring
            .keys
            .iter()
            .map(|k| k.secret.trim().to_string())
            .collect();
        secrets.push(B64.encode(kek_bytes));
        for pem in [TEST_RSA_PEM, hpke.as_str(), tls_key.as_str()] {
            // Every full base64 line of the key bodies.
            secrets.extend(
                pem.lines()
                    .filter(|l| !l.starts_with("-----") && l.len() >= 40)
                    .map(str::to_string),
            );
        }
        Fixture {
            config: dir.join("fieldseal.yaml"),
            dir,
            secrets,
        }
    })
}
