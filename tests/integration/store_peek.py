"""Read and write token store files from tests, from the format's description alone
(store/aead.h and store/token_store.c), with python3-cryptography's AES-GCM: an independent
check that what the proxy seals is what it says it seals.

  file   = version (1 byte, 1) | nonce (12) | ciphertext | tag (16); AAD = version byte + account
  record = version (1) | expires_at (8) | lifetime (8) | len (4) access | len (4) refresh | "END"
"""
import os
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1


def _aad(account):
    return bytes([VERSION]) + account.encode()


def read(path, key, account):
    """{"access_token", "expires_at", "lifetime", "refresh_token"} (None where empty)."""
    with open(path, "rb") as f:
        blob = f.read()
    if blob[0] != VERSION:
        raise ValueError("unknown version %d" % blob[0])
    plain = AESGCM(key).decrypt(blob[1:13], blob[13:], _aad(account))
    if plain[0] != 1 or not plain.endswith(b"END"):
        raise ValueError("bad record")
    expires_at, lifetime = struct.unpack(">qq", plain[1:17])
    o = 17
    out = []
    for _ in range(2):
        (n,) = struct.unpack(">I", plain[o:o + 4])
        out.append(plain[o + 4:o + 4 + n].decode() or None)
        o += 4 + n
    if plain[o:] != b"END":
        raise ValueError("bad record end")
    return {"access_token": out[0], "expires_at": expires_at, "lifetime": lifetime,
            "refresh_token": out[1]}


def write(path, key, account, refresh_token=None, access_token=None, expires_at=0, lifetime=0):
    """Seal a record as the proxy would (0600, atomically), e.g. to seed a refresh token."""
    a = (access_token or "").encode()
    r = (refresh_token or "").encode()
    plain = (bytes([1]) + struct.pack(">qq", expires_at, lifetime) + struct.pack(">I", len(a)) +
             a + struct.pack(">I", len(r)) + r + b"END")
    nonce = os.urandom(12)
    blob = bytes([VERSION]) + nonce + AESGCM(key).encrypt(nonce, plain, _aad(account))
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".seed"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)
