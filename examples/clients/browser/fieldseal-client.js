// fieldseal browser client: encrypt JSON fields for fieldseal with WebCrypto only (no library).
//
// Each value becomes a standard JWE compact serialization (RFC 7516):
//   protected header {"alg":"RSA-OAEP-256","enc":"A256GCM","kid":…, ["cty":"json"], "iat":…, "jti":…}
//   a random 256-bit AES-GCM content key wrapped with the proxy's RSA key (RSA-OAEP, SHA-256),
//   a random 96-bit IV, AES-256-GCM over the UTF-8 plaintext with AAD = ASCII(base64url(header)),
//   and the 128-bit tag (the last 16 bytes of WebCrypto's AES-GCM output).
// Any JOSE library can open it; fieldseal opens it and forwards the plaintext to the app.
//
// WebCrypto exists only in a secure context: serve the page over HTTPS (or from localhost).
//
//   import { encryptFields } from "./fieldseal-client.js";
//   const body = await encryptFields("", { name: "Ada", ssn: "123-45-6789" }, ["$.ssn"]);
//   await fetch("/api/users/7", { method: "PUT", headers: { "content-type": "application/json" },
//                                 body: JSON.stringify(body) });

export const JWKS_PATH = "/.well-known/fieldseal/jwks.json";
const KEY_ALG = "RSA-OAEP-256";
const CACHE_MS = 300 * 1000; // the proxy serves the JWKS with max-age=300

const utf8 = new TextEncoder();
const jwksCache = new Map(); // baseUrl -> { at, promise }
const keyCache = new Map(); // kid + n -> Promise<CryptoKey>

/** base64url without padding (RFC 7515 §2) of bytes or of a string's UTF-8 encoding. */
export function base64url(data) {
  const bytes = typeof data === "string" ? utf8.encode(data) : new Uint8Array(data);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * The proxy's public keys (the `keys` array of its JWKS). `baseUrl` is the proxy's origin, or ""
 * for the page's own origin. Cached for five minutes; `{ refresh: true }` fetches again.
 */
export async function fetchKeys(baseUrl = "", { refresh = false } = {}) {
  const cached = jwksCache.get(baseUrl);
  if (!refresh && cached && Date.now() - cached.at < CACHE_MS) return cached.promise;
  const promise = (async () => {
    const response = await fetch(baseUrl + JWKS_PATH, { credentials: "omit" });
    if (!response.ok) throw new Error(`fieldseal: JWKS request failed with HTTP ${response.status}`);
    const jwks = await response.json();
    if (!Array.isArray(jwks.keys)) throw new Error("fieldseal: the JWKS has no keys array");
    return jwks.keys;
  })();
  jwksCache.set(baseUrl, { at: Date.now(), promise });
  promise.catch(() => jwksCache.delete(baseUrl));
  return promise;
}

/** The first key usable for RSA-OAEP-256 encryption (the proxy lists its current key first). */
export function pickKey(keys) {
  const key = keys.find(
    (k) => k.kty === "RSA" && k.alg === KEY_ALG && (k.use === undefined || k.use === "enc"),
  );
  if (!key) throw new Error("fieldseal: no RSA-OAEP-256 key in the JWKS");
  return key;
}

function importRsaKey(jwk) {
  const id = `${jwk.kid}\n${jwk.n}`;
  if (!keyCache.has(id)) {
    const promise = crypto.subtle.importKey(
      "jwk",
      { kty: "RSA", n: jwk.n, e: jwk.e, alg: KEY_ALG, ext: true },
      { name: "RSA-OAEP", hash: "SHA-256" },
      false,
      ["encrypt"],
    );
    keyCache.set(id, promise);
    promise.catch(() => keyCache.delete(id));
  }
  return keyCache.get(id);
}

/**
 * Encrypt one value for the proxy key `jwk` (an RSA entry of the JWKS) into a JWE compact string.
 *
 * options.json: send the value as JSON (`cty: "json"`, the app receives the JSON value). Defaults
 *   to true for anything but a string; a string is sent as its own UTF-8 text.
 * options.iat: issued-at, seconds since the epoch; defaults to now. `null` leaves it out.
 * options.jti: a unique id; defaults to crypto.randomUUID(). `null` leaves it out.
 *   Routes with `max_age` need both (fresh `iat`, never-seen `jti`), so keep the defaults.
 */
export async function encryptField(jwk, value, options = {}) {
  const json = options.json ?? typeof value !== "string";
  if (!json && typeof value !== "string") {
    throw new TypeError("fieldseal: a non-string value needs { json: true }");
  }
  const plaintext = json ? JSON.stringify(value) : value;
  if (plaintext === undefined) throw new TypeError("fieldseal: the value has no JSON form");

  const header = { alg: KEY_ALG, enc: "A256GCM", kid: jwk.kid };
  if (json) header.cty = "json";
  const iat = options.iat === undefined ? Math.floor(Date.now() / 1000) : options.iat;
  if (iat !== null) header.iat = iat;
  const jti = options.jti === undefined ? crypto.randomUUID() : options.jti;
  if (jti !== null) header.jti = String(jti);
  const encodedHeader = base64url(JSON.stringify(header));

  const rsaKey = await importRsaKey(jwk);
  const cek = crypto.getRandomValues(new Uint8Array(32));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  try {
    const aesKey = await crypto.subtle.importKey("raw", cek, { name: "AES-GCM" }, false, ["encrypt"]);
    const encryptedKey = await crypto.subtle.encrypt({ name: "RSA-OAEP" }, rsaKey, cek);
    const sealed = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv, additionalData: utf8.encode(encodedHeader), tagLength: 128 },
        aesKey,
        utf8.encode(plaintext),
      ),
    );
    const ciphertext = sealed.subarray(0, sealed.length - 16);
    const tag = sealed.subarray(sealed.length - 16);
    return [encodedHeader, base64url(encryptedKey), base64url(iv), base64url(ciphertext), base64url(tag)].join(".");
  } finally {
    cek.fill(0);
  }
}

const ANY = Symbol("*");

// A small JSONPath subset for `encryptFields`: `$`, `.name`, `['name']`, `[0]`, `[*]`, `.*`.
// A path without the leading `$` is taken as relative to the root (`ssn` = `$.ssn`).
function parsePath(path) {
  const text = path.startsWith("$") ? path.slice(1) : `.${path}`;
  const re = /\.([A-Za-z_$][\w$-]*)|\['((?:[^'\\]|\\.)*)'\]|\[(\d+)\]|\[\*\]|\.\*/y;
  const segments = [];
  while (re.lastIndex < text.length) {
    const m = re.exec(text);
    if (m === null) throw new SyntaxError(`fieldseal: unsupported path ${path}`);
    if (m[1] !== undefined) segments.push(m[1]);
    else if (m[2] !== undefined) segments.push(m[2].replace(/\\(.)/g, "$1"));
    else if (m[3] !== undefined) segments.push(Number(m[3]));
    else segments.push(ANY);
  }
  if (segments.length === 0) throw new SyntaxError("fieldseal: cannot encrypt the whole body");
  return segments;
}

// Calls visit(parent, key) for every existing node the segments select.
function locate(node, segments, visit) {
  if (node === null || typeof node !== "object") return;
  const [head, ...rest] = segments;
  const keys = head === ANY ? Object.keys(node) : [head];
  for (const key of keys) {
    if (!Object.prototype.hasOwnProperty.call(node, key)) continue;
    if (rest.length === 0) visit(node, key);
    else locate(node[key], rest, visit);
  }
}

/**
 * A copy of `obj` with the values at `paths` (e.g. ["$.ssn", "$.cards[*].number"]) encrypted
 * for the proxy at `baseUrl` ("" = this origin). Paths that match nothing are skipped, as the
 * proxy does; a node selected twice is encrypted once. `options` goes to `encryptField` for
 * every value (json, iat, jti — a fixed jti would make the values replays of each other).
 */
export async function encryptFields(baseUrl, obj, paths, options = {}) {
  const key = pickKey(await fetchKeys(baseUrl));
  const copy = structuredClone(obj);
  const targets = new Map(); // parent object -> Set of keys
  for (const path of paths) {
    locate(copy, parsePath(path), (parent, k) => {
      if (!targets.has(parent)) targets.set(parent, new Set());
      targets.get(parent).add(k);
    });
  }
  const jobs = [];
  for (const [parent, keys] of targets) {
    for (const k of keys) {
      jobs.push(encryptField(key, parent[k], options).then((jwe) => { parent[k] = jwe; }));
    }
  }
  await Promise.all(jobs);
  return copy;
}
