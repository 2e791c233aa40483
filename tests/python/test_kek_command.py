"""A keyring KEK printed by a command (`keys.keyring_kek_command`, `--kek-command`), with a real
cloud CLI: the AWS recipe of docs/keys.md run as written, with the real `aws` CLI (installed in
the test venv) against a local KMS — moto's server on 127.0.0.1 — and the keyring it wraps
opened independently with `cryptography`'s AES-GCM. Also the local half of the Azure Key Vault
recipe: openssl's RSA-OAEP-256 blob decrypts with an independent RSA-OAEP(SHA-256) implementation.
(gcloud, az and vault cannot reach a service here; see docs/keys.md.)"""
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import free_port, wait_port

AAD = b"fieldseal-keyring-v1"
VENV_BIN = Path(sys.executable).parent
ALIAS = "alias/fieldseal-keyring"
CONTEXT = "purpose=fieldseal-keyring"
# The recipe's decrypt command, exactly as docs/keys.md gives it (the blob relative to the
# working directory: the config file's directory, or the CLI's current directory).
DECRYPT = ["aws", "kms", "decrypt", "--ciphertext-blob", "fileb://kek.enc", "--key-id", ALIAS,
           "--encryption-context", CONTEXT, "--query", "Plaintext", "--output", "text"]


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory):
    """The environment of a pod with AWS credentials, pointed at a local KMS."""
    for tool in ("aws", "moto_server"):
        if not (VENV_BIN / tool).exists():
            raise RuntimeError(f"{VENV_BIN / tool} missing: install tests/python/requirements.txt")
    port = free_port()
    home = tmp_path_factory.mktemp("aws-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        HOME=str(home),  # no ~/.aws of the developer's
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="eu-west-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
    )
    server = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_port(port, server, "moto_server")
        key_id = aws(env, "kms", "create-key", "--description", "fieldseal keyring KEK",
                     "--query", "KeyMetadata.KeyId", "--output", "text").strip()
        aws(env, "kms", "create-alias", "--alias-name", ALIAS, "--target-key-id", key_id)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)


def aws(env, *args) -> str:
    return subprocess.run(["aws", *args], env=env, capture_output=True, text=True, check=True).stdout


def fieldseal(binary, cwd, env, *args):
    return subprocess.run([str(binary), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True)


def test_the_aws_kms_recipe_wraps_and_opens_a_keyring(aws_env, fieldseal_bin, pki, tmp_path):
    # 1. A data key whose plaintext never leaves KMS: only the blob is written.
    subprocess.run(
        ["sh", "-c", f"aws kms generate-data-key-without-plaintext --key-id {ALIAS} --key-spec AES_256 "
                     f"--encryption-context {CONTEXT} --query CiphertextBlob --output text | base64 -d > kek.enc"],
        cwd=tmp_path, env=aws_env, check=True)
    # 2. A keyring wrapped with it, through the command.
    command = json.dumps(DECRYPT)
    out = fieldseal(fieldseal_bin, tmp_path, aws_env,
                    "keys", "init", "--out", "keyring.json", "--wrap", "--kek-command", command)
    assert out.returncode == 0, out.stderr
    assert "wrapped with the raw KEK from --kek-command (program `aws`, 12 arguments)" in out.stdout

    # What wrapped it is the KMS data key: unwrap it independently with the plaintext that
    # KMS returns (asked for here only to check; the proxy never needs it written anywhere).
    absolute = [f"fileb://{tmp_path / 'kek.enc'}" if a == "fileb://kek.enc" else a for a in DECRYPT]
    data_key = base64.b64decode(aws(aws_env, *absolute[1:]))
    assert len(data_key) == 32
    wrapped = json.loads((tmp_path / "keyring.json").read_text())["wrapped"]
    assert wrapped["kdf"] == "none"
    plain = json.loads(AESGCM(data_key).decrypt(base64.b64decode(wrapped["nonce"]),
                                                base64.b64decode(wrapped["ciphertext"]), AAD))
    assert plain["primary"] == "k1"

    out = fieldseal(fieldseal_bin, tmp_path, aws_env,
                    "keys", "rotate", "--keyring", "keyring.json", "--kek-command", command)
    assert out.returncode == 0, out.stderr
    listed = fieldseal(fieldseal_bin, tmp_path, aws_env,
                       "keys", "list", "--keyring", "keyring.json", "--kek-command", command)
    assert listed.returncode == 0 and "k2" in listed.stdout, listed.stderr

    # 3. The proxy's configuration, as docs/keys.md shows it (blob relative to the config file).
    config = tmp_path / "fieldseal.yaml"
    config.write_text(
        f'listen: "127.0.0.1:0"\nupstream: "http://127.0.0.1:9"\nadmin: "127.0.0.1:0"\n'
        f'tls:\n  cert: "{pki.cert}"\n  key: "{pki.key}"\n'
        f'keys:\n  keyring: keyring.json\n  keyring_kek_command: {json.dumps(DECRYPT)}\n')
    checked = fieldseal(fieldseal_bin, "/", aws_env, "check", "--config", config)
    assert checked.returncode == 0, checked.stderr
    assert ("primary k2, wrapped, opened with the raw KEK from keys.keyring_kek_command "
            "(program `aws`, 12 arguments); timeout 10s, cache 1h") in checked.stdout

    # The encryption context is part of the blob: another one is refused by KMS, and fieldseal
    # passes KMS's message on, never the key.
    wrong = [a if a != CONTEXT else "purpose=something-else" for a in DECRYPT]
    out = fieldseal(fieldseal_bin, tmp_path, aws_env,
                    "keys", "list", "--keyring", "keyring.json", "--kek-command", json.dumps(wrong))
    assert out.returncode == 64
    assert "--kek-command: the KEK command `aws` exited with status 255" in out.stderr
    assert "InvalidCiphertextException" in out.stderr
    printed = "".join(o for r in (listed, checked, out) for o in (r.stdout, r.stderr))
    assert base64.b64encode(data_key).decode() not in printed


def test_the_azure_recipe_blob_is_rsa_oaep_256(tmp_path):
    """`openssl pkeyutl` with the documented options makes what Key Vault's RSA-OAEP-256 decrypt
    takes: RSAES-OAEP with SHA-256 and MGF1-SHA-256, here opened by `cryptography`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    (tmp_path / "kek-pub.pem").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    subprocess.run(
        ["sh", "-c", "openssl rand 32 | openssl pkeyutl -encrypt -pubin -inkey kek-pub.pem "
                     "-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 "
                     "-pkeyopt rsa_mgf1_md:sha256 | base64 -w0 > kek.enc.b64"],
        cwd=tmp_path, check=True)
    blob = base64.b64decode((tmp_path / "kek.enc.b64").read_text())
    plain = key.decrypt(blob, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                          algorithm=hashes.SHA256(), label=None))
    assert len(plain) == 32
