//! `fieldseal demo`: zero setup. Generates a self-signed certificate, writes a config into a
//! private temporary directory, starts the demo app and the proxy in front of it — through the
//! same load/compile path as `run` — and prints commands to try.

pub mod app;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::secret_file::write_private;

/// A private (0700) scratch directory, removed when dropped.
pub struct Workspace(PathBuf);

impl Workspace {
    pub fn create() -> std::io::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("fieldseal-demo-{}", uuid::Uuid::new_v4().simple()));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&dir)?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The selectors of the `user` route, in both directions. The proxy opens these fields in
/// requests and the app answers a PUT with the record it received (at the same paths), so
/// sealing exactly these fields in responses is what keeps an opened value from ever leaving
/// the demo in plaintext. One constant, so the two lists cannot drift apart. `seal_null`: a
/// `null` is sealed too (by default it is left alone both ways), because a client-encrypted
/// value (`cty: json`) can open to `null`, and that must not come back as `null` either.
const SEALED: &str = r#"[{ path: "$.ssn", seal_null: true }, { path: "$.password", seal_null: true }, { path: "$.cards[*].number", context: "card", seal_null: true }]"#;

/// Writes certificate, key and config; returns the config path.
pub fn write_files(
    ws: &Workspace,
    listen: SocketAddr,
    admin: SocketAddr,
    app: SocketAddr,
) -> Result<PathBuf, String> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let cert = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot generate a certificate: {e}"))?;
    let dir = ws.path();
    let keyring = crate::crypto::keyring::generate("k1")?;
    let keyring =
        zeroize::Zeroizing::new(serde_json::to_vec_pretty(&keyring).map_err(|e| e.to_string())?);
    write_private(&dir.join("keyring.json"), &keyring).map_err(|e| e.to_string())?;
    // An X25519 and a post-quantum X-Wing key (instant to make, unlike RSA) so the demo
    // publishes a JWKS clients can encrypt to with HPKE, classical or post-quantum.
    use crate::crypto::hpke::KemKind;
    let x25519 = crate::crypto::hpke::generate(KemKind::X25519)?;
    write_private(&dir.join("x25519.pem"), x25519.as_bytes()).map_err(|e| e.to_string())?;
    let xwing = crate::crypto::hpke::generate(KemKind::XWing)?;
    write_private(&dir.join("xwing.pem"), xwing.as_bytes()).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).map_err(|e| e.to_string())?;
    write_private(
        &dir.join("key.pem"),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let config = format!(
        r#"# Written by `fieldseal demo`.
listen: "{listen}"
upstream: "http://{app}"
admin: "{admin}"
tls:
  cert: cert.pem
  key: key.pem
keys:
  keyring: keyring.json
  hpke_private_key: [x25519.pem, xwing.pem]
headers:
  permissions-policy: "geolocation=(), camera=()"
# The one route that opens tokens seals the same selectors in its answers, and the app answers a
# PUT with the record at the same paths: whatever the proxy opens leaves sealed again, so the
# demo is no decryption oracle. /api/echo has no rules: it opens nothing, so its echo is what
# the client sent.
routes:
  - name: user
    match: {{ path: "/api/users/{{id}}", methods: [GET, PUT] }}
    headers:
      cache-control: "no-store"
    response:
      encrypt: {SEALED}
      mask: [{{ path: "$.phone", keep_last: 4 }}]
    request:
      decrypt: {SEALED}
  - name: echo
    match: {{ path: "/api/echo", methods: [POST] }}
"#
    );
    let path = dir.join("fieldseal.yaml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    Ok(path)
}

/// What to try, printed once the proxy is up.
pub fn banner(listen: SocketAddr, admin: SocketAddr, config: &Path) -> String {
    // A wildcard bind is reached through loopback from the same machine.
    let reachable = |addr: SocketAddr| {
        if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        }
    };
    let admin = reachable(admin);
    let base = format!("https://{}", reachable(listen));
    format!(
        r#"
fieldseal demo is running (TLS 1.3, self-signed certificate; Ctrl-C to stop)
  proxy  {base}   ->  built-in demo app
  admin  http://{admin}
  config {config}

Try:
  curl -sk --http2 {base}/api/users/1 | tee /tmp/fieldseal-user.json   # ssn, password, card sealed; phone masked
  curl -sk -X PUT {base}/api/users/1 -H 'content-type: application/json' --data @/tmp/fieldseal-user.json
                                                       # the proxy opens the tokens; the app gets plaintext and answers
                                                       # with the updated record, sealed again (fresh tokens)
  fieldseal open --keyring {keyring} --context ssn fs1.k1.…   # open a token yourself (the app's ssn)
  curl -sk -X PUT {base}/api/users/1 -H 'content-type: application/json' -d '{{"ssn":"fs1.k1.AAAA"}}'
                                                       # a bad token: 400, the app is never called
  curl -sk {base}/.well-known/fieldseal/jwks.json      # public key for client-side (HPKE) encryption
  curl -sk -D - -o /dev/null {base}/api/users/1        # security headers; no Server / X-Powered-By
  curl -sk {base}/api/echo -H 'content-type: application/json' -d '{{"hello":"world"}}'
                                                       # a route without rules: streamed untouched, tokens stay sealed
  curl -sk --tls-max 1.2 {base}/api/users/1            # refused: TLS 1.3 only
  curl -s http://{admin}/readyz
  curl -s http://{admin}/metrics
"#,
        config = config.display(),
        keyring = config.with_file_name("keyring.json").display()
    )
}
