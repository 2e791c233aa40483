#!/usr/bin/env python3
"""Reads the JSON reports of testssl.sh (`--jsonfile`, flat) and sslyze (`--json_out`) written
by scripts/tls-scan.sh, prints a summary and exits 1 on any finding (2 if a report is missing
or a scan did not complete). Standard library only.

Asserted:
- testssl: SSLv2, SSLv3, TLS 1.0, 1.1 and 1.2 "not offered", TLS 1.3 offered; every cipher
  listed is a TLS 1.3 one; chain of trust passed against the CA given with --add-ca; every
  vulnerability check present and OK/INFO; no finding of severity LOW, MEDIUM, HIGH or CRITICAL
  except those in ALLOWLIST below (each justified); no WARN/FATAL (the scan itself went wrong).
- sslyze: every scan command COMPLETED; SSL 2.0 to TLS 1.2 not supported with no suite
  accepted; TLS 1.3 supported with only TLS 1.3 suites accepted; the certificate chain
  validates against the supplied CA (and is in order, without SHA-1); not vulnerable to
  Heartbleed, CCS injection, ROBOT, insecure or client-initiated renegotiation, compression
  (CRIME); no 0-RTT early data (replayable requests through a proxy); downgrade protection.
"""
import argparse
import json
import re
import sys
import time

# testssl findings of severity LOW or above that are accepted, each with the reason. An entry
# matches on the finding id and a regular expression over the finding text; anything else of
# severity LOW or above fails the scan.
ALLOWLIST = [
    # The leaf is issued by the throw-away CA this script makes, which runs no CRL or OCSP
    # service, so the certificate names neither. Revocation information is a property of the
    # CA that issues the production certificate; fieldseal (rustls) serves whatever chain it
    # is given and cannot add it.
    ("cert_revocation", r"^Neither CRL nor OCSP URI provided$"),
    # CAA is a DNS record the domain owner publishes to restrict which public CAs may issue
    # for the domain. "localhost" has no DNS zone, and no TLS server can offer CAA.
    ("DNS_CAArecord", r"^--$"),
]

BAD = {"LOW", "MEDIUM", "HIGH", "CRITICAL"}
SCAN_PROBLEM = {"WARN", "FATAL"}
NOT_OFFERED = ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2"]
# testssl ids of the vulnerability section (-U); every one must be present and OK or INFO.
TESTSSL_VULNS = ["heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego", "secure_client_renego",
                 "CRIME_TLS", "BREACH", "POODLE_SSL", "fallback_SCSV", "FREAK", "DROWN", "LOGJAM",
                 "BEAST", "LUCKY13", "RC4"]
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
                "TLS_AES_128_CCM_SHA256", "TLS_AES_128_CCM_8_SHA256"}
SSLYZE_VERSIONS = [("ssl_2_0_cipher_suites", "SSL 2.0"), ("ssl_3_0_cipher_suites", "SSL 3.0"),
                   ("tls_1_0_cipher_suites", "TLS 1.0"), ("tls_1_1_cipher_suites", "TLS 1.1"),
                   ("tls_1_2_cipher_suites", "TLS 1.2"), ("tls_1_3_cipher_suites", "TLS 1.3")]


class Report:
    def __init__(self):
        self.findings = []
        self.lines = []

    def out(self, line=""):
        self.lines.append(line)

    def fail(self, what):
        self.findings.append(what)
        self.out(f"  FINDING: {what}")


def check_testssl(path, r: Report):
    rows = json.load(open(path))
    if isinstance(rows, dict):          # --jsonfile-pretty form, just in case
        rows = [f for s in rows.get("scanResult", []) for v in s.values() if isinstance(v, list) for f in v]
    by_id = {}
    for f in rows:
        by_id.setdefault(f["id"], []).append(f)

    def first(fid):
        return by_id.get(fid, [{"severity": "MISSING", "finding": "not in the report"}])[0]

    r.out("testssl.sh")
    protos = []
    for p in NOT_OFFERED:
        f = first(p)
        protos.append(f"{p} {f['finding']}")
        if not f["finding"].startswith("not offered"):
            r.fail(f"testssl: {p}: {f['finding']} (must be not offered)")
    f = first("TLS1_3")
    protos.append(f"TLS1_3 {f['finding']}")
    if not f["finding"].startswith("offered"):
        r.fail(f"testssl: TLS1_3: {f['finding']} (must be offered)")
    r.out("  protocols: " + "; ".join(protos))
    alpn = [first("ALPN_HTTP2")["finding"], first("ALPN")["finding"]]
    r.out(f"  ALPN: {', '.join(a for a in alpn if a and a != 'not in the report')}")

    ciphers = [f for f in rows if f["id"].startswith("cipher-") or f["id"].startswith("cipher_x")]
    names = []
    for f in ciphers:
        parts = f["finding"].split()
        names.append(parts[-1] if parts else f["finding"])
        if not f["id"].startswith("cipher-tls1_3_"):
            r.fail(f"testssl: cipher outside TLS 1.3 offered: {f['id']}: {f['finding']}")
    if not ciphers:
        r.fail("testssl: no per-protocol cipher list (-E / --full) in the report")
    r.out(f"  ciphers offered (-E): {', '.join(names)}")
    r.out(f"  key exchange groups: {first('PFS_ECDHE_curves')['finding']}; cipher order: {first('cipher_order')['finding']}")

    for fid, want in (("cert_chain_of_trust", "passed"), ("cert_trust", "Ok")):
        f = first(fid)
        if f["severity"] != "OK" or not f["finding"].startswith(want):
            r.fail(f"testssl: {fid}: {f['severity']} {f['finding']}")
    r.out(f"  certificate: {first('cert_commonName')['finding']} (SAN {first('cert_subjectAltName')['finding']}), "
          f"{first('cert_keySize')['finding']}, {first('cert_signatureAlgorithm')['finding']}, issuer "
          f"{first('cert_caIssuers')['finding']}; trust {first('cert_trust')['finding']}; chain of trust "
          f"{first('cert_chain_of_trust')['finding']} (CA given with --add-ca); {first('certs_countServer')['finding']} "
          f"certificates sent; expires {first('cert_notAfter')['finding']}")

    vul = []
    for v in TESTSSL_VULNS:
        fs = by_id.get(v)
        if not fs:
            r.fail(f"testssl: vulnerability check {v} missing from the report")
            continue
        for f in fs:
            if f["severity"] not in ("OK", "INFO"):
                r.fail(f"testssl: {v}: {f['severity']} {f['finding']}")
        vul.append(f"{v} {'/'.join(sorted({f['severity'] for f in fs}))}")
    r.out("  vulnerabilities: " + ", ".join(vul))

    allowed, problems = [], []
    for f in rows:
        sev = f.get("severity", "")
        if sev in SCAN_PROBLEM:
            problems.append(f)
        elif sev in BAD:
            if any(f["id"] == aid and re.search(rx, f["finding"]) for aid, rx in ALLOWLIST):
                allowed.append(f)
            else:
                r.fail(f"testssl: {sev} {f['id']}: {f['finding']}")
    for f in problems:
        r.fail(f"testssl: scan problem {f['severity']} {f['id']}: {f['finding']}")
    counts = {}
    for f in rows:
        counts[f.get("severity")] = counts.get(f.get("severity"), 0) + 1
    r.out("  severities: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for f in allowed:
        r.out(f"  allowlisted: {f['severity']} {f['id']}: {f['finding']} (see ALLOWLIST in scripts/tls_scan_check.py)")
    r.out(f"  findings LOW or above outside the allowlist: "
          f"{sum(1 for f in rows if f.get('severity') in BAD) - len(allowed)}")


def check_sslyze(path, ca_path_hint, r: Report):
    doc = json.load(open(path))
    r.out(f"sslyze {doc.get('sslyze_version')}")
    results = doc.get("server_scan_results") or []
    if len(results) != 1:
        r.fail(f"sslyze: {len(results)} server results (want 1); invalid: {doc.get('invalid_server_strings')}")
        return
    s = results[0]
    if s.get("connectivity_status") != "COMPLETED" or s.get("scan_status") != "COMPLETED":
        r.fail(f"sslyze: scan not completed: {s.get('connectivity_status')} {s.get('connectivity_error_trace')}")
        return
    sr = s["scan_result"]

    def result(cmd):
        c = sr.get(cmd)
        if not c or c.get("status") != "COMPLETED":
            r.fail(f"sslyze: {cmd}: {c and c.get('status')} {c and c.get('error_reason')}")
            return None
        return c["result"]

    protos = []
    for cmd, label in SSLYZE_VERSIONS:
        res = result(cmd)
        if res is None:
            continue
        accepted = [a["cipher_suite"]["name"] for a in res["accepted_cipher_suites"]]
        if label == "TLS 1.3":
            if not res["is_tls_version_supported"]:
                r.fail("sslyze: TLS 1.3 not supported")
            extra = [a for a in accepted if a not in TLS13_SUITES]
            if extra:
                r.fail(f"sslyze: non-TLS 1.3 suites accepted over TLS 1.3: {extra}")
            protos.append(f"{label} yes")
            r.out(f"  TLS 1.3 suites accepted: {', '.join(accepted)}")
        else:
            if res["is_tls_version_supported"] or accepted:
                r.fail(f"sslyze: {label} supported, accepted {accepted}")
            protos.append(f"{label} {'YES' if res['is_tls_version_supported'] else 'no'}")
    r.out("  protocols: " + ", ".join(protos))

    ci = result("certificate_info")
    if ci is not None:
        deps = list(ci["certificate_deployments"])
        if ci.get("certificate_deployment_with_sni_disabled"):
            deps.append(ci["certificate_deployment_with_sni_disabled"])
        for i, dep in enumerate(deps):
            chain = [c["subject"]["rfc4514_string"] for c in dep["received_certificate_chain"]]
            supplied = [p for p in dep["path_validation_results"]
                        if p["trust_store"].get("path") == ca_path_hint or p["trust_store"]["name"] == "Supplied CA file"]
            ok = [p for p in supplied if p["was_validation_successful"]]
            if not supplied:
                r.fail("sslyze: no validation against the supplied CA (--certinfo_ca_file)")
            elif not ok:
                r.fail(f"sslyze: chain does not validate against the CA: {supplied[0].get('validation_error')}")
            if not dep["received_chain_has_valid_order"]:
                r.fail("sslyze: certificate chain sent out of order")
            if dep["verified_chain_has_sha1_signature"]:
                r.fail("sslyze: SHA-1 signature in the verified chain")
            public = sorted(p["trust_store"]["name"] for p in dep["path_validation_results"] if p not in supplied)
            r.out(f"  certificate{' (no SNI)' if i else ''}: chain sent {' <- '.join(chain)}; "
                  f"valid against the supplied CA: {bool(ok)} "
                  f"(verified chain of {len(ok[0]['verified_certificate_chain']) if ok else 0}); "
                  f"public stores {', '.join(public)}: not trusted, as expected for a private CA")
            if i == 0 and dep.get("received_chain_contains_anchor_certificate"):
                r.out("  note: the chain sent includes the CA certificate itself (this script configures leaf+CA); "
                      "harmless, but a production chain can stop below the root")

    checks = [
        ("heartbleed", lambda x: not x["is_vulnerable_to_heartbleed"], "is_vulnerable_to_heartbleed"),
        ("openssl_ccs_injection", lambda x: not x["is_vulnerable_to_ccs_injection"], "is_vulnerable_to_ccs_injection"),
        ("robot", lambda x: x["robot_result"].startswith("NOT_VULNERABLE"), "robot_result"),
        ("session_renegotiation", lambda x: not x["is_vulnerable_to_client_renegotiation_dos"]
         and x["supports_secure_renegotiation"], "is_vulnerable_to_client_renegotiation_dos"),
        ("tls_compression", lambda x: not x["supports_compression"], "supports_compression"),
        ("tls_1_3_early_data", lambda x: not x["supports_early_data"], "supports_early_data"),
        ("tls_fallback_scsv", lambda x: x["supports_fallback_scsv"], "supports_fallback_scsv"),
    ]
    vul = []
    for cmd, good, key in checks:
        res = result(cmd)
        if res is None:
            continue
        vul.append(f"{cmd} {key}={res[key]}")
        if not good(res):
            r.fail(f"sslyze: {cmd}: {json.dumps(res)[:300]}")
    r.out("  vulnerabilities: " + "; ".join(vul))
    ec = result("elliptic_curves")
    if ec is not None:
        r.out(f"  groups accepted: {', '.join(c['name'] for c in ec['supported_curves'])}")
    extra = []
    ems = result("tls_extended_master_secret")
    if ems is not None:
        extra.append(f"extended master secret {ems['supports_ems_extension']}")
    res = result("session_resumption")
    if res is not None:
        extra.append(f"resumption: {res['tls_ticket_resumption_result']}")
    hh = result("http_headers")
    if hh is not None:
        hsts = hh.get("strict_transport_security_header")
        extra.append(f"HSTS {hsts and ('max-age=%s includeSubDomains=%s' % (hsts['max_age'], hsts['include_subdomains']))}")
        if not hsts:
            r.fail("sslyze: no Strict-Transport-Security header")
    r.out("  other: " + "; ".join(extra))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--testssl", required=True)
    ap.add_argument("--sslyze", required=True)
    ap.add_argument("--ca", help="the CA file given to sslyze (to find its trust store result)")
    ap.add_argument("--tools", default="")
    ap.add_argument("--target", default="")
    args = ap.parse_args()

    r = Report()
    r.out(f"fieldseal TLS scan — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if args.target:
        r.out(f"target: {args.target}")
    if args.tools:
        r.out(f"tools: {args.tools}")
    r.out()
    try:
        check_testssl(args.testssl, r)
        r.out()
        check_sslyze(args.sslyze, args.ca, r)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print("\n".join(r.lines))
        print(f"error: cannot read the reports: {type(e).__name__}: {e}")
        return 2
    r.out()
    if r.findings:
        r.out(f"RESULT: FAIL — {len(r.findings)} finding(s):")
        for f in r.findings:
            r.out(f"  - {f}")
    else:
        r.out("RESULT: PASS — only TLS 1.3 offered, only TLS 1.3 suites accepted, chain valid against the CA, "
              "no vulnerability flagged, no testssl finding of severity LOW or above outside the allowlist")
    print("\n".join(r.lines))
    return 1 if r.findings else 0


if __name__ == "__main__":
    sys.exit(main())
