//! `fieldseal init --upstream URL [--openapi FILE|URL] [--out DIR]` (contract §9): a runnable
//! starting point in DIR — `fieldseal.yaml`, `keyring.json` (0600) and a self-signed
//! development certificate `tls.crt` + `tls.key` (0600) — never overwriting a file.
//!
//! With an OpenAPI 3 document ([`openapi`]) the configuration proposes one `fields` entry per
//! sensitive property name, each with a comment saying why, and routes that keep FastAPI's
//! `/openapi.json`, `/docs` and `/redoc` working behind the proxy. The text is produced by
//! [`render`] alone, so what the user reads first is tested as such.

pub mod openapi;

use crate::cli::exit;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use http::Uri;

use crate::secret_file;
use openapi::{Action, Analysis, RULES};

/// The files `init` writes, in the order they are checked and written.
pub const CONFIG_FILE: &str = "fieldseal.yaml";
pub const KEYRING_FILE: &str = "keyring.json";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";
pub const FILES: [&str; 4] = [CONFIG_FILE, KEYRING_FILE, CERT_FILE, KEY_FILE];

const LISTEN: &str = "127.0.0.1:8443";
const ADMIN: &str = "127.0.0.1:9901";
/// Where FastAPI serves its OpenAPI document unless told otherwise.
const DEFAULT_OPENAPI_PATH: &str = "/openapi.json";

/// Largest OpenAPI document read (file or URL).
const MAX_OPENAPI_BYTES: usize = 32 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The app behind the proxy, over plain HTTP (e.g. http://127.0.0.1:8000).
    #[arg(long, value_name = "URL")]
    pub upstream: String,
    /// The app's OpenAPI 3 document, a file or an http:// URL (FastAPI serves one at
    /// /openapi.json): `fields` entries are proposed from its schemas.
    #[arg(long, value_name = "FILE|URL")]
    pub openapi: Option<String>,
    /// Directory to write into (created if missing). Existing files are never overwritten.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

/// What the configuration says, before it is rendered.
#[derive(Debug)]
pub struct Plan {
    /// The upstream URL as it goes into the file (validated, no trailing `/`).
    pub upstream: String,
    pub openapi: Option<OpenApiPlan>,
}

#[derive(Debug)]
pub struct OpenApiPlan {
    /// Where the document came from, as the user named it.
    pub source: String,
    /// The path the app serves it at (taken from the URL when it is the upstream's).
    pub path: String,
    pub analysis: Analysis,
}

pub fn run(args: InitArgs) -> ExitCode {
    match init(&args) {
        Ok(summary) => {
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(exit::FAILED)
        }
    }
}

fn init(args: &InitArgs) -> Result<String, String> {
    let upstream = validate_upstream(&args.upstream)?;
    let targets: Vec<PathBuf> = FILES.iter().map(|f| args.out.join(f)).collect();
    // Before anything is fetched or written: a run that would overwrite does nothing.
    refuse_existing(&targets)?;
    let openapi = match &args.openapi {
        None => None,
        Some(source) => {
            let bytes = read_openapi(source)?;
            let doc = openapi::parse(&bytes).map_err(|m| format!("{source}: {m}"))?;
            Some(OpenApiPlan {
                source: source.clone(),
                path: openapi_path(source, &upstream),
                analysis: openapi::analyze(&doc),
            })
        }
    };
    let plan = Plan { upstream, openapi };
    let config = render(&plan);
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    write_files(&args.out, &config)?;
    Ok(summary(&plan, &args.out))
}

/// The upstream as the config loader accepts it: `http://host[:port]`, no path, query or
/// credentials.
fn validate_upstream(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let uri: Uri = trimmed
        .parse()
        .map_err(|_| format!("--upstream {raw}: not a URL (e.g. http://127.0.0.1:8000)"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "--upstream {raw}: must be a plain http:// URL (fieldseal terminates TLS in front of the app)"
        ));
    }
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| format!("--upstream {raw}: has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("--upstream {raw}: must not contain credentials"));
    }
    if uri.path_and_query().is_some_and(|pq| pq.as_str() != "/") {
        return Err(format!(
            "--upstream {raw}: must not have a path or query (requests keep their own)"
        ));
    }
    Ok(format!("http://{authority}"))
}

fn refuse_existing(targets: &[PathBuf]) -> Result<(), String> {
    // `symlink_metadata`: a dangling symlink is a file too (writing through it would create
    // its target somewhere else).
    let existing: Vec<String> = targets
        .iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .map(|p| p.display().to_string())
        .collect();
    match existing.len() {
        0 => Ok(()),
        1 => Err(format!(
            "{} exists; fieldseal init never overwrites a file (nothing was written): move it away or choose another --out",
            existing[0]
        )),
        _ => Err(format!(
            "{} exist; fieldseal init never overwrites a file (nothing was written): move them away or choose another --out",
            existing.join(", ")
        )),
    }
}

/// The OpenAPI document's bytes: an `http://` URL is fetched, anything else is a file.
fn read_openapi(source: &str) -> Result<Vec<u8>, String> {
    if source.starts_with("http://") {
        return fetch(source);
    }
    if source.starts_with("https://") {
        return Err(format!(
            "{source}: only http:// URLs are fetched (the app itself, before the proxy); save the document (curl -o openapi.json URL) and pass the file"
        ));
    }
    let bytes = std::fs::read(source).map_err(|e| format!("cannot read {source}: {e}"))?;
    if bytes.len() > MAX_OPENAPI_BYTES {
        return Err(format!(
            "{source}: larger than {} MiB",
            MAX_OPENAPI_BYTES >> 20
        ));
    }
    Ok(bytes)
}

/// `GET url` over plain HTTP/1.1 (no redirects), the body if the answer is 200.
fn fetch(url: &str) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt;
    let uri: Uri = url.parse().map_err(|_| format!("{url}: not a URL"))?;
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty() && !a.as_str().contains('@'))
        .ok_or_else(|| format!("{url}: expected http://host:port/path"))?
        .clone();
    let connect_to = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let path = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(connect_to.as_str())
                .await
                .map_err(|e| format!("cannot connect to {authority} for {url}: {e}"))?;
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .map_err(|e| format!("{url}: {e}"))?;
            tokio::spawn(conn);
            let request = http::Request::get(path.as_str())
                .header(http::header::HOST, authority.as_str())
                .header(http::header::ACCEPT, "application/json, application/yaml")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .map_err(|e| format!("{url}: {e}"))?;
            let response = send
                .send_request(request)
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let status = response.status();
            if status != http::StatusCode::OK {
                let location = response
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .map(|l| format!(" (Location: {l})"))
                    .unwrap_or_default();
                return Err(format!("GET {url} answered {status}{location}"));
            }
            let body = http_body_util::Limited::new(response.into_body(), MAX_OPENAPI_BYTES)
                .collect()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?
                .to_bytes();
            Ok(body.to_vec())
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("GET {url} timed out"))?
    })
}

/// The path of the OpenAPI document on the app: the URL's, when it is the upstream's
/// document, else FastAPI's default.
fn openapi_path(source: &str, upstream: &str) -> String {
    if let Some(rest) = source.strip_prefix(upstream) {
        let path = rest.split(['?', '#']).next().unwrap_or_default();
        if path.starts_with('/') && path.len() > 1 {
            return path.to_string();
        }
    }
    DEFAULT_OPENAPI_PATH.to_string()
}

/// Writes the four files, each only if it does not exist (create-new). If one cannot be
/// written, the ones this run wrote are removed again.
fn write_files(dir: &Path, config: &str) -> Result<(), String> {
    let keyring = crate::crypto::keyring::generate("k1")?;
    let mut keyring = zeroize::Zeroizing::new(
        serde_json::to_vec_pretty(&keyring).map_err(|e| format!("cannot encode a keyring: {e}"))?,
    );
    keyring.push(b'\n');
    let (cert, key) = development_certificate()?;
    let mut written: Vec<PathBuf> = Vec::new();
    let result = (|| {
        // Secrets first: they are created private (0600) and never replace a file.
        for (name, bytes) in [(KEYRING_FILE, &keyring[..]), (KEY_FILE, key.as_bytes())] {
            let path = dir.join(name);
            secret_file::create_private(&path, bytes).map_err(|e| failed_write(&path, e))?;
            written.push(path);
        }
        for (name, bytes) in [
            (CERT_FILE, cert.as_bytes()),
            (CONFIG_FILE, config.as_bytes()),
        ] {
            let path = dir.join(name);
            create_new(&path, bytes).map_err(|e| failed_write(&path, e))?;
            written.push(path);
        }
        Ok(())
    })();
    if result.is_err() {
        for path in &written {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

fn failed_write(path: &Path, e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        format!(
            "{} appeared while writing; fieldseal init never overwrites a file (nothing was left behind)",
            path.display()
        )
    } else {
        format!("cannot write {}: {e}", path.display())
    }
}

fn create_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A self-signed certificate for `localhost` and `127.0.0.1` and its private key (PEM).
fn development_certificate() -> Result<(String, zeroize::Zeroizing<String>), String> {
    let failed = |e: rcgen::Error| format!("cannot generate a certificate: {e}");
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(failed)?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "fieldseal development certificate (localhost)",
    );
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok((cert.pem(), zeroize::Zeroizing::new(key.serialize_pem())))
}

/// What was written and what to do next.
fn summary(plan: &Plan, dir: &Path) -> String {
    let file = |name: &str| dir.join(name).display().to_string();
    let config = file(CONFIG_FILE);
    let mut out = String::new();
    let proposed = match &plan.openapi {
        Some(o) => format!(
            "{} field{} proposed from {}",
            o.analysis.findings.len(),
            if o.analysis.findings.len() == 1 {
                ""
            } else {
                "s"
            },
            o.source
        ),
        None => "no fields yet: add them, or run init with --openapi".to_string(),
    };
    let _ = writeln!(out, "wrote {config}  ({proposed})");
    let _ = writeln!(
        out,
        "wrote {}  (mode 0600, one active key: keep it secret, back it up)",
        file(KEYRING_FILE)
    );
    let _ = writeln!(
        out,
        "wrote {} + {}  (key mode 0600: a self-signed certificate for localhost and 127.0.0.1, for development only)",
        file(CERT_FILE),
        file(KEY_FILE)
    );
    let path = plan
        .openapi
        .as_ref()
        .and_then(|o| o.analysis.example_get.clone())
        .unwrap_or_else(|| "/".to_string());
    let _ = writeln!(out);
    let _ = writeln!(out, "next:");
    let _ = writeln!(
        out,
        "  1. review `fields` in {config}: what is sealed, masked or redacted"
    );
    let _ = writeln!(out, "  2. fieldseal check --config {config}");
    let _ = writeln!(
        out,
        "  3. curl -s {}{path} > sample.json   # a real answer of the app",
        plan.upstream
    );
    let _ = writeln!(
        out,
        "     fieldseal explain --config {config} --method GET --path {path} --body sample.json"
    );
    let _ = writeln!(
        out,
        "     # which route and which fields apply, and what the client would receive"
    );
    let _ = writeln!(out, "  4. fieldseal run --config {config}");
    let _ = writeln!(
        out,
        "  5. curl --cacert {} https://localhost:8443{path}",
        file(CERT_FILE)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{} is self-signed, for development only: for real clients, point tls.cert and tls.key in {CONFIG_FILE} at a certificate from your CA (PEM chain + private key).",
        file(CERT_FILE)
    );
    out
}

/// The lines of a folded (`>-`) YAML scalar holding a policy, one directive a line: YAML joins
/// them with single spaces, which gives back `policy` exactly.
fn folded(policy: &str) -> String {
    policy
        .split("; ")
        .map(|d| format!("        {d}"))
        .collect::<Vec<_>>()
        .join(";\n")
}

/// A YAML double-quoted scalar (JSON string syntax is a subset of it).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// Swagger UI (FastAPI's `/docs`): its CSS and script from cdn.jsdelivr.net, an inline script
/// that starts it, the favicon from fastapi.tiangolo.com, SVG icons as `data:` images, and
/// requests ("Try it out", the OpenAPI document) to this origin.
pub const SWAGGER_UI_CSP: &str = "default-src 'none'; script-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'; style-src 'self' https://cdn.jsdelivr.net 'unsafe-inline'; img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Swagger UI's OAuth2 redirect page: one inline script that hands the result to the opener.
pub const OAUTH2_REDIRECT_CSP: &str =
    "default-src 'none'; script-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";

/// ReDoc (FastAPI's `/redoc`): its script from cdn.jsdelivr.net, fonts from Google Fonts,
/// injected styles, a web worker made from a `blob:`, requests for the OpenAPI document.
pub const REDOC_CSP: &str = "default-src 'none'; script-src 'self' https://cdn.jsdelivr.net; style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com; worker-src blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The configuration file, comments included.
pub fn render(plan: &Plan) -> String {
    let mut y = String::new();
    let w = &mut y;
    let _ = write!(
        w,
        r#"# fieldseal configuration, written by `fieldseal init`.
#
# fieldseal is a TLS reverse proxy in front of your unmodified app: clients connect with HTTPS to
# `listen`, the proxy forwards plain HTTP to `upstream`, and on the way it seals the sensitive
# JSON fields listed under `fields`, adds security headers to every response, and reports
# plaintext that still gets out (`guard`).
#
# Next:
#   1. review `fields` below
#   2. fieldseal check --config {config}       # validates; prints the compiled routes
#   3. fieldseal explain --config {config} --method GET --path /some/path --body sample.json
#                                               # dry run: what a client would receive
#   4. fieldseal run --config {config}
# Relative file paths in this file are relative to this file, not to the working directory.
# Any setting can be overridden from the environment: FIELDSEAL_LISTEN, FIELDSEAL_TLS__CERT, ...

# Where clients connect (TLS 1.3). 127.0.0.1 keeps it on this machine; "0.0.0.0:8443" accepts
# connections from elsewhere (in a container, for instance).
listen: {listen}

# Your app, over plain HTTP. Keep it listening on loopback or a private network only, so that
# clients cannot go around the proxy.
upstream: {upstream}

# Plain-HTTP admin listener: /healthz, /readyz and /metrics. Keep it private.
admin: {admin}

# The TLS certificate. {cert} + {key} are a SELF-SIGNED certificate for localhost and 127.0.0.1,
# FOR DEVELOPMENT ONLY: clients must be told to trust it
# (`curl --cacert {cert} https://localhost:8443/`).
# For real clients, point these at a certificate from your CA (Let's Encrypt, your company CA):
# `cert` is the PEM chain (your certificate first, then the intermediates), `key` its PEM
# private key, readable by fieldseal's user only (chmod 600). `kill -HUP` the proxy to reload
# renewed certificates.
tls:
  cert: {cert}
  key: {key}

# The keyring that seals and opens field tokens (fs1.<key id>.<ciphertext>). Keep it secret and
# back it up: a token can only be opened with the key that sealed it. Rotate with
# `fieldseal keys rotate --keyring {keyring}`; protect the file with a passphrase with
# `fieldseal keys rewrap-keyring --keyring {keyring}` (see docs/keys.md).
keys:
  keyring: {keyring}

# Every response already gets strict security headers: strict-transport-security,
# content-security-policy "default-src 'none'; frame-ancestors 'none'", x-content-type-options,
# x-frame-options DENY and referrer-policy no-referrer. To change one for every response:
# headers:
#   permissions-policy: "geolocation=(), camera=()"

"#,
        config = CONFIG_FILE,
        listen = quoted(LISTEN),
        upstream = quoted(&plan.upstream),
        admin = quoted(ADMIN),
        cert = CERT_FILE,
        key = KEY_FILE,
        keyring = KEYRING_FILE,
    );
    render_fields(w, plan.openapi.as_ref());
    let _ = write!(
        w,
        r#"
# The guard looks at every JSON response after the field policy and reports plaintext that still
# looks like an SSN, a card number or an email address: the metric
# fieldseal_guard_detections_total{{route,detector}} and a log line with the route and the JSON
# path (never the value). `observe` only reports; once it stays quiet, switch to `block`, which
# withholds such a response (502 sensitive_data_detected).
guard:
  detect: [ssn, card, email]
  mode: observe
"#
    );
    render_routes(w, plan.openapi.as_ref());
    y
}

fn render_fields(w: &mut String, openapi: Option<&OpenApiPlan>) {
    let _ = write!(
        w,
        r#"# The field policy: applied to every JSON response of every route (requests that match no route
# included). Each entry selects members by JSONPath ($..email: every member named `email`, at
# any depth) and says what to do with them:
#   encrypt  the value becomes a token (fs1.k1.…) the client can store and send back; the
#            proxy opens tokens found at the same selector in request bodies, so the app
#            always works on plaintext. `context` (default: the member name) binds a token to
#            its kind of field: an email token does not open as anything else.
#   mask     "************0958": shown to the client, never recoverable (keep_last: N).
#   redact   null: for values the client never needs.
# A route can opt out with `fields: false` (see routes below).
"#
    );
    let Some(openapi) = openapi else {
        let _ = write!(
            w,
            r#"# No OpenAPI document was given, so nothing is proposed (`fieldseal init --openapi
# http://127.0.0.1:8000/openapi.json` proposes entries from your app's schemas). Replace `[]`
# with entries like:
#   - {{ select: "$..ssn", action: encrypt }}
#   - {{ select: "$..email", action: encrypt, context: email }}
#   - {{ select: "$..phone", action: mask, keep_last: 4 }}
#   - {{ select: "$..password", action: redact }}
fields: []
"#
        );
        return;
    };
    let a = &openapi.analysis;
    if a.findings.is_empty() && !a.fastapi_validation_errors {
        comment(
            w,
            0,
            0,
            &format!(
                "Nothing in {} ({} property names) looks sensitive by name or format. Replace `[]` with entries like:",
                openapi.source, a.properties
            ),
        );
        let _ = write!(
            w,
            r#"#   - {{ select: "$..ssn", action: encrypt }}
#   - {{ select: "$..phone", action: mask, keep_last: 4 }}
fields: []
"#
        );
        return;
    }
    comment(
        w,
        0,
        0,
        &format!(
            "Proposed from {} ({} property names): one entry per property name that looks sensitive by its name or its `format`. Review them: remove what clients must read in clear, add what was missed (a name is only a hint; the guard below catches some of the rest).",
            openapi.source, a.properties
        ),
    );
    let _ = writeln!(w, "fields:");
    let mut category = None;
    for f in &a.findings {
        let rule = f.rule();
        if category != Some(f.rule) {
            category = Some(f.rule);
            comment(w, 2, 2, &format!("{} ({})", rule.category, rule.why));
        }
        comment(w, 2, 2, &format!("{}: {}", f.name, f.reason()));
        let action = match rule.action {
            Action::Encrypt => "action: encrypt".to_string(),
            Action::Redact => "action: redact".to_string(),
            Action::Mask { keep_last } => format!("action: mask, keep_last: {keep_last}"),
        };
        let _ = writeln!(w, "  - {{ select: {}, {action} }}", quoted(&f.selector()));
    }
    if a.fastapi_validation_errors {
        comment(
            w,
            2,
            0,
            "FastAPI's validation errors (422) quote the request's input in `detail[].input`. The proxy opens tokens in requests, so that input can be an opened value: never let it back out.",
        );
        let _ = writeln!(w, "  - {{ select: \"$.detail[*].input\", action: redact }}");
    }
    // The table, so the user can see which kinds were looked for.
    let kinds: Vec<&str> = RULES.iter().map(|r| r.category).collect();
    comment(w, 2, 0, &format!("Looked for: {}.", kinds.join(", ")));
}

/// Width of the comments `render` writes.
const COMMENT_WIDTH: usize = 96;

/// Writes `text` as `#` comment lines of at most [`COMMENT_WIDTH`] columns (a longer word stays
/// whole), `indent` spaces in, lines after the first `hang` more. Control characters (a
/// property name can hold a newline) are escaped: nothing from the document can end a comment.
fn comment(w: &mut String, indent: usize, hang: usize, text: &str) {
    let text: String = text
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    let mut line = String::new();
    let mut first = true;
    let flush = |w: &mut String, line: &mut String, first: &mut bool| {
        let pad = indent + if *first { 0 } else { hang };
        let text = format!("{:pad$}# {}", "", line);
        let _ = writeln!(w, "{}", text.trim_end());
        line.clear();
        *first = false;
    };
    for word in text.split(' ').filter(|s| !s.is_empty()) {
        let pad = indent + if first { 0 } else { hang };
        if !line.is_empty()
            && pad + 2 + line.chars().count() + 1 + word.chars().count() > COMMENT_WIDTH
        {
            flush(w, &mut line, &mut first);
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || first {
        flush(w, &mut line, &mut first);
    }
}

fn render_routes(w: &mut String, openapi: Option<&OpenApiPlan>) {
    let _ = write!(
        w,
        r#"
# Routes: per-path settings, first match wins (`{{name}}` matches one path segment, a trailing
# `/**` any rest). Requests that match no route get everything above.
"#
    );
    let Some(openapi) = openapi else {
        let _ = write!(
            w,
            r#"# Examples (replace `routes: []` with them and adapt):
# routes:
#   # An OpenAPI document: its schemas have members named like the fields above, which the
#   # field policy would seal. It holds no user data, so it opts out.
#   - name: openapi
#     match: {{ path: "/openapi.json", methods: [GET, HEAD] }}
#     fields: false
#   # Static files and downloads: they need Range requests and ETags, which routes under the
#   # field policy do without.
#   - name: static
#     match: {{ path: "/static/**" }}
#     fields: false
# `fieldseal init --openapi ...` also writes the routes that FastAPI's /docs and /redoc need.
routes: []
"#
        );
        return;
    };
    let _ = write!(
        w,
        r#"routes:
  # The OpenAPI document: its schemas have members named like the fields above (`email`,
  # `password`, ...), which the field policy would seal, breaking the document. It holds no
  # user data, so it opts out.
  - name: openapi
    match: {{ path: {openapi_path}, methods: [GET, HEAD] }}
    fields: false
  # FastAPI's interactive docs, at FastAPI's default paths (the OpenAPI document does not say
  # where they are: change the paths if your app sets docs_url, redoc_url or
  # swagger_ui_oauth2_redirect_url; delete these routes if the docs must not be reachable
  # through the proxy). The default content-security-policy (default-src 'none') would leave
  # these pages blank, so each gets its own: Swagger UI loads its script and CSS from
  # cdn.jsdelivr.net and its favicon from fastapi.tiangolo.com; ReDoc loads its script from
  # cdn.jsdelivr.net, fonts from fonts.googleapis.com / fonts.gstatic.com, and runs a worker
  # from a blob: URL. Both fetch the OpenAPI document from this origin ('self').
  # Scripts: Swagger UI is started by an inline script whose text depends on the app's
  # settings (openapi_url, swagger_ui_parameters, init_oauth) and on FastAPI's version, so a
  # hash ('sha256-…') would break whenever one of them changes; hence 'unsafe-inline', on
  # these pages only (FastAPI's own templates, with no user data in them), while the API keeps
  # the strict policy. To pin the script instead, replace 'unsafe-inline' in script-src with
  # the hash the browser console prints when it blocks the script.
  - name: docs
    match: {{ path: "/docs", methods: [GET, HEAD] }}
    headers:
      content-security-policy: >-
{swagger}
  - name: docs-oauth2-redirect
    match: {{ path: "/docs/oauth2-redirect", methods: [GET, HEAD] }}
    headers:
      content-security-policy: >-
{redirect}
  - name: redoc
    match: {{ path: "/redoc", methods: [GET, HEAD] }}
    headers:
      content-security-policy: >-
{redoc}
"#,
        openapi_path = quoted(&openapi.path),
        swagger = folded(SWAGGER_UI_CSP),
        redirect = folded(OAUTH2_REDIRECT_CSP),
        redoc = folded(REDOC_CSP),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The rendered YAML, read back the way the config loader reads it (figment).
    fn parsed(yaml: &str) -> Value {
        use figment::providers::{Format, Yaml};
        figment::Figment::from(Yaml::string(yaml))
            .extract::<Value>()
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    fn plan_with(doc: Value, source: &str) -> Plan {
        Plan {
            upstream: "http://127.0.0.1:8000".into(),
            openapi: Some(OpenApiPlan {
                source: source.into(),
                path: DEFAULT_OPENAPI_PATH.into(),
                analysis: openapi::analyze(&doc),
            }),
        }
    }

    fn fastapi_doc() -> Value {
        json!({"openapi": "3.1.0", "info": {"title": "t", "version": "1"},
        "paths": {"/users/{user_id}": {"get": {"responses": {"200": {"content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/UserOut"}}}}}}}},
        "components": {"schemas": {
            "UserOut": {"type": "object", "properties": {
                "name": {"type": "string"},
                "email": {"type": "string", "format": "email"},
                "first-name": {"type": "string"},
                "phone": {"type": "string"},
                "hashed_password": {"type": "string"},
                "dateOfBirth": {"type": "string", "format": "date"},
                "iban": {"type": "string"},
                "card_number": {"type": "string"},
                "ssn": {"type": "string"},
                "contact": {"type": "string", "format": "email"}}},
            "HTTPValidationError": {"type": "object", "properties": {
                "detail": {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}}}},
            "ValidationError": {"type": "object", "properties": {
                "loc": {"type": "array"}, "msg": {"type": "string"}, "type": {"type": "string"}}}
        }}})
    }

    #[test]
    fn without_openapi_the_config_has_every_section_and_no_fields() {
        let yaml = render(&Plan {
            upstream: "http://127.0.0.1:8000".into(),
            openapi: None,
        });
        let v = parsed(&yaml);
        assert_eq!(
            v,
            json!({
                "listen": "127.0.0.1:8443",
                "upstream": "http://127.0.0.1:8000",
                "admin": "127.0.0.1:9901",
                "tls": {"cert": "tls.crt", "key": "tls.key"},
                "keys": {"keyring": "keyring.json"},
                "fields": [],
                "guard": {"detect": ["ssn", "card", "email"], "mode": "observe"},
                "routes": []
            })
        );
        // The examples are there, commented out, and say how to get real ones.
        assert!(yaml.contains("#   - { select: \"$..ssn\", action: encrypt }"));
        assert!(yaml.contains("--openapi"));
        assert!(yaml.contains("FOR DEVELOPMENT ONLY"));
        assert!(yaml.contains("fieldseal check --config fieldseal.yaml"));
        // Every line is a comment, blank, or YAML under 100 columns of comment.
        for line in yaml.lines().filter(|l| l.trim_start().starts_with('#')) {
            assert!(line.chars().count() <= 100, "long comment: {line}");
        }
    }

    #[test]
    fn with_openapi_fields_are_proposed_in_order_with_reasons() {
        let plan = plan_with(fastapi_doc(), "http://127.0.0.1:8000/openapi.json");
        let yaml = render(&plan);
        let v = parsed(&yaml);
        assert_eq!(
            v["fields"],
            json!([
                {"select": "$..hashed_password", "action": "redact"},
                {"select": "$..ssn", "action": "encrypt"},
                {"select": "$..card_number", "action": "encrypt"},
                {"select": "$..contact", "action": "encrypt"},
                {"select": "$..email", "action": "encrypt"},
                {"select": "$..phone", "action": "mask", "keep_last": 4},
                {"select": "$..dateOfBirth", "action": "encrypt"},
                {"select": "$..iban", "action": "encrypt"},
                {"select": "$.detail[*].input", "action": "redact"},
            ])
        );
        // Why, next to each entry.
        assert!(yaml.contains(
            "  # email: named like an email address, format \"email\" in UserOut\n  - { select: \"$..email\", action: encrypt }\n"
        ), "{yaml}");
        assert!(yaml.contains("  # contact: format \"email\" in UserOut\n"));
        assert!(yaml.contains("  # email addresses (encrypt: "));
        assert!(yaml.contains("(10 property names)") || yaml.contains("property names)"));
        assert!(!yaml.contains("$..name"), "a harmless name is not proposed");
        assert!(!yaml.contains("first-name\""));
        // Every proposed selector compiles.
        for entry in v["fields"].as_array().unwrap() {
            let sel = entry["select"].as_str().unwrap();
            crate::transform::selector::Selector::compile(sel, None).unwrap();
        }
    }

    #[test]
    fn with_openapi_the_docs_routes_are_written() {
        let mut plan = plan_with(fastapi_doc(), "openapi.json");
        plan.openapi.as_mut().unwrap().path = "/api/v1/openapi.json".into();
        let v = parsed(&render(&plan));
        let routes = v["routes"].as_array().unwrap();
        let names: Vec<&str> = routes.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["openapi", "docs", "docs-oauth2-redirect", "redoc"]);
        assert_eq!(
            routes[0],
            json!({"name": "openapi", "match": {"path": "/api/v1/openapi.json", "methods": ["GET", "HEAD"]}, "fields": false})
        );
        let csp = |i: usize| {
            routes[i]["headers"]["content-security-policy"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(csp(1), SWAGGER_UI_CSP);
        assert_eq!(csp(2), OAUTH2_REDIRECT_CSP);
        assert_eq!(csp(3), REDOC_CSP);
        // The route names, paths and header policies are valid as the config compiles them.
        for r in routes {
            let name = r["name"].as_str().unwrap();
            assert!(name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
            crate::routing::PathTemplate::parse(r["match"]["path"].as_str().unwrap()).unwrap();
            if let Some(h) = r["headers"].as_object() {
                let map = h
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                crate::security_headers::HeaderPolicy::compile(&Default::default(), Some(&map))
                    .unwrap();
            }
        }
    }

    #[test]
    fn the_csps_allow_what_the_fastapi_pages_load() {
        let directive = |csp: &str, name: &str| {
            csp.split(';')
                .map(str::trim)
                .find(|d| d.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in {csp}"))
                .to_string()
        };
        let swagger_scripts = directive(SWAGGER_UI_CSP, "script-src");
        assert!(swagger_scripts.contains("https://cdn.jsdelivr.net"));
        assert!(swagger_scripts.contains("'unsafe-inline'"));
        assert!(directive(SWAGGER_UI_CSP, "style-src").contains("https://cdn.jsdelivr.net"));
        assert!(directive(SWAGGER_UI_CSP, "img-src").contains("https://fastapi.tiangolo.com"));
        assert!(directive(SWAGGER_UI_CSP, "connect-src").contains("'self'"));
        assert!(directive(REDOC_CSP, "script-src").contains("https://cdn.jsdelivr.net"));
        assert!(directive(REDOC_CSP, "font-src").contains("https://fonts.gstatic.com"));
        assert!(directive(REDOC_CSP, "style-src").contains("https://fonts.googleapis.com"));
        assert!(directive(REDOC_CSP, "worker-src").contains("blob:"));
        for csp in [SWAGGER_UI_CSP, OAUTH2_REDIRECT_CSP, REDOC_CSP] {
            assert!(csp.starts_with("default-src 'none'"), "{csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
            assert!(!csp.contains("unsafe-eval"), "{csp}");
        }
    }

    #[test]
    fn a_document_with_nothing_sensitive_writes_no_fields() {
        let doc = json!({"openapi": "3.0.0", "paths": {}, "components": {"schemas": {
            "Item": {"properties": {"name": {"type": "string"}, "price": {"type": "number"}}}}}});
        let yaml = render(&plan_with(doc, "items.json"));
        let v = parsed(&yaml);
        assert_eq!(v["fields"], json!([]));
        assert!(yaml.contains("Nothing in items.json (2 property names) looks sensitive"));
        assert_eq!(v["routes"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn odd_names_and_upstreams_are_quoted() {
        let doc = json!({"openapi": "3.0.0", "paths": {}, "components": {"schemas": {
            "U": {"properties": {"e-mail": {"type": "string"}, "it's \"email\"": {"type": "string", "format": "email"}}}}}});
        let yaml = render(&plan_with(doc, "u.json"));
        let v = parsed(&yaml);
        let selects: Vec<&str> = v["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["select"].as_str().unwrap())
            .collect();
        assert_eq!(selects, ["$..['e-mail']", "$..['it\\'s \"email\"']"]);
    }

    #[test]
    fn nothing_in_the_document_can_end_a_comment() {
        let doc = json!({"openapi": "3.0.0", "paths": {}, "components": {"schemas": {
            "U\nguard: {mode: block}": {"properties": {
                "email\nrogue: 1": {"type": "string", "format": "email"},
                "phone": {"type": "string", "format": "phone"}}}}}});
        let mut plan = plan_with(doc, "evil\nsource: 1");
        plan.openapi
            .as_mut()
            .unwrap()
            .analysis
            .fastapi_validation_errors = false;
        let yaml = render(&plan);
        let v = parsed(&yaml);
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["admin", "fields", "guard", "keys", "listen", "routes", "tls", "upstream"]
        );
        assert_eq!(v["guard"]["mode"], "observe");
        assert_eq!(v["fields"][0]["select"], "$..['email\\u000arogue: 1']");
        assert!(
            yaml.contains("  # email\\nrogue: 1: format \"email\" in U\\nguard: {mode: block}\n")
        );
    }

    #[test]
    fn comments_are_wrapped() {
        let mut w = String::new();
        let long = "word ".repeat(60);
        comment(&mut w, 2, 2, &long);
        let lines: Vec<&str> = w.lines().collect();
        assert!(lines.len() > 2, "{w}");
        assert!(lines[0].starts_with("  # word"));
        assert!(lines[1].starts_with("    # word"));
        assert!(lines.iter().all(|l| l.len() <= COMMENT_WIDTH), "{w}");
        let mut w = String::new();
        comment(&mut w, 0, 0, "");
        assert_eq!(w, "#\n");
    }

    #[test]
    fn upstreams_are_checked_like_the_config_loader_does() {
        assert_eq!(
            validate_upstream("http://127.0.0.1:8000/").unwrap(),
            "http://127.0.0.1:8000"
        );
        assert_eq!(
            validate_upstream("http://app.internal").unwrap(),
            "http://app.internal"
        );
        for (bad, why) in [
            ("https://127.0.0.1:8000", "plain http://"),
            ("127.0.0.1:8000", "plain http://"),
            ("http://127.0.0.1:8000/api", "path or query"),
            ("http://u:p@127.0.0.1:8000", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let err = validate_upstream(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn the_openapi_path_comes_from_the_upstreams_url() {
        let up = "http://127.0.0.1:8000";
        assert_eq!(
            openapi_path("http://127.0.0.1:8000/openapi.json", up),
            "/openapi.json"
        );
        assert_eq!(
            openapi_path("http://127.0.0.1:8000/api/v1/openapi.json?x=1", up),
            "/api/v1/openapi.json"
        );
        assert_eq!(
            openapi_path("http://127.0.0.1:9000/spec.json", up),
            "/openapi.json"
        );
        assert_eq!(openapi_path("spec/openapi.yaml", up), "/openapi.json");
    }

    #[test]
    fn the_certificate_is_for_localhost() {
        let (cert, key) = development_certificate().unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        use rustls::pki_types::pem::PemObject;
        let parsed: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(parsed.len(), 1);
        rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    }
}
