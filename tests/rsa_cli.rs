//! `fieldseal rsa generate` through the real binary: a PKCS#8 key the proxy loads, mode 0600,
//! never overwriting, refusing sizes below 2048.

mod common;

use std::path::Path;

use common::*;

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn generate_writes_a_private_pkcs8_key_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rsa.pem");
    let out_s = out.to_str().unwrap();
    let (code, stdout, stderr) =
        run_cli(&["rsa", "generate", "--out", out_s, "--bits", "2048"], &[]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(mode(&out), 0o600);
    let pem = std::fs::read_to_string(&out).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    assert!(!stdout.contains("PRIVATE KEY"), "{stdout}");

    let key = fieldseal::crypto::rsa_keys::load(&out).unwrap();
    assert_eq!(key.bits, 2048);
    assert_eq!(
        stdout.trim(),
        format!("wrote {out_s} (RSA-2048, kid {})", key.kid)
    );

    // A second run is refused and leaves the key alone.
    let (code, _, stderr) = run_cli(&["rsa", "generate", "--out", out_s, "--bits", "2048"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), pem);

    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn generate_refuses_small_or_odd_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for bits in ["1024", "2047", "8192"] {
        let out = dir.path().join(format!("rsa-{bits}.pem"));
        let (code, stdout, stderr) = run_cli(
            &[
                "rsa",
                "generate",
                "--out",
                out.to_str().unwrap(),
                "--bits",
                bits,
            ],
            &[],
        );
        assert_eq!(code, 1, "{bits}: stdout: {stdout}\nstderr: {stderr}");
        assert!(stderr.contains("2048, 3072 or 4096"), "{stderr}");
        assert!(!out.exists());
    }
}

#[test]
fn generate_is_documented_in_help() {
    let (code, stdout, _) = run_cli(&["rsa", "generate", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(
        stdout.contains("--out") && stdout.contains("[default: 3072]"),
        "{stdout}"
    );
}
