"""AES-256-CBC for the chat platforms that encrypt their callbacks (Feishu Encrypt Key, WeCom EncodingAESKey).

`cryptography` is imported on first use: without it, `available()` is False and those platforms run in
their plaintext mode only (an encrypted delivery is then refused with a message saying why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from functions.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import Cipher, modes


def available() -> bool:
    try:
        import cryptography.hazmat.primitives.ciphers  # noqa: F401
    except ImportError:
        return False
    return True


def _cipher(key: bytes, iv: bytes) -> Cipher[modes.CBC]:
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    except ImportError as err:
        raise ConfigError(
            "encrypted chat callbacks need the `cryptography` package (pip install cryptography)"
        ) from err
    return Cipher(algorithms.AES(key), modes.CBC(iv))


def decrypt(key: bytes, iv: bytes, data: bytes, block: int = 16) -> bytes:
    """Decrypt and strip PKCS#7 padding of `block` bytes (WeCom pads to 32); ValueError when it is wrong."""
    if not data or len(data) % 16:
        raise ValueError(f"ciphertext of {len(data)} bytes is not a whole number of AES blocks")
    decryptor = _cipher(key, iv).decryptor()
    plain = decryptor.update(data) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= block or plain[-pad:] != bytes([pad]) * pad:
        raise ValueError("the padding is not valid: wrong key, or not this sender's message")
    return plain[:-pad]


def encrypt(key: bytes, iv: bytes, data: bytes, block: int = 16) -> bytes:
    pad = block - len(data) % block
    encryptor = _cipher(key, iv).encryptor()
    return encryptor.update(data + bytes([pad]) * pad) + encryptor.finalize()
