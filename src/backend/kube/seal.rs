//! Sealing what a hub hands a newcomer to the newcomer alone.
//!
//! Everyone who holds the same join token can read the requests made with
//! it, so the member credentials written back on a request must be
//! readable only by the newcomer that asked: the request carries a one-time
//! X25519 public key; the hub agrees a key with a one-time key of its own
//! (HKDF-SHA256 over both public keys) and seals with ChaCha20-Poly1305.
//! Each key pair is used once, so a fixed nonce is safe.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::hkdf;
use ring::rand::SystemRandom;

const INFO: &[&[u8]] = &[b"canopy join v1"];
const PREFIX: &str = "v1.";

/// A newcomer's one-time key, kept in memory until the reply arrives.
pub struct Opener {
    private: EphemeralPrivateKey,
    public: Vec<u8>,
}

impl Opener {
    pub fn new() -> Result<Opener, String> {
        let rng = SystemRandom::new();
        let private = EphemeralPrivateKey::generate(&X25519, &rng)
            .map_err(|_| "no random key".to_string())?;
        let public = private
            .compute_public_key()
            .map_err(|_| "no public key".to_string())?
            .as_ref()
            .to_vec();
        Ok(Opener { private, public })
    }

    /// The public key to put in the request (base64).
    pub fn public_key(&self) -> String {
        B64.encode(&self.public)
    }

    /// Opens what was sealed to this key (consumes it: one reply).
    pub fn open(self, sealed: &str) -> Result<Vec<u8>, String> {
        let (peer, data) = split(sealed)?;
        let key = agree(self.private, &peer, &peer, &self.public)?;
        let mut buf = data;
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut buf,
            )
            .map_err(|_| "the sealed reply does not open with this request's key".to_string())?;
        Ok(plain.to_vec())
    }
}

/// Seals `plain` to the holder of the one-time public key `to` (base64).
pub fn seal(to: &str, plain: &[u8]) -> Result<String, String> {
    let to = B64
        .decode(to.trim())
        .map_err(|_| "the request's publicKey is not base64".to_string())?;
    if to.len() != 32 {
        return Err("the request's publicKey is not an X25519 key (32 bytes)".into());
    }
    let rng = SystemRandom::new();
    let private =
        EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| "no random key".to_string())?;
    let public = private
        .compute_public_key()
        .map_err(|_| "no public key".to_string())?
        .as_ref()
        .to_vec();
    let key = agree(private, &to, &public, &to)?;
    let mut buf = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([0; 12]),
        Aad::empty(),
        &mut buf,
    )
    .map_err(|_| "sealing failed".to_string())?;
    Ok(format!(
        "{PREFIX}{}.{}",
        B64.encode(public),
        B64.encode(buf)
    ))
}

fn split(sealed: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let rest = sealed
        .strip_prefix(PREFIX)
        .ok_or_else(|| "the sealed reply has an unknown format".to_string())?;
    let (k, d) = rest
        .split_once('.')
        .ok_or_else(|| "the sealed reply has an unknown format".to_string())?;
    let k = B64
        .decode(k)
        .map_err(|_| "the sealed reply is not base64")?;
    let d = B64
        .decode(d)
        .map_err(|_| "the sealed reply is not base64")?;
    Ok((k, d))
}

/// The AEAD key agreed between `private` and `peer`; the salt is the
/// hub's then the newcomer's public key, so both sides derive the same.
fn agree(
    private: EphemeralPrivateKey,
    peer: &[u8],
    hub_public: &[u8],
    newcomer_public: &[u8],
) -> Result<LessSafeKey, String> {
    let salt_bytes = [hub_public, newcomer_public].concat();
    agreement::agree_ephemeral(private, &UnparsedPublicKey::new(&X25519, peer), |shared| {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt_bytes);
        let prk = salt.extract(shared);
        let okm = prk
            .expand(INFO, &aead::CHACHA20_POLY1305)
            .map_err(|_| "key derivation failed".to_string())?;
        Ok(LessSafeKey::new(UnboundKey::from(okm)))
    })
    .map_err(|_| "key agreement failed (a bad public key)".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_requesting_key_opens() {
        let newcomer = Opener::new().unwrap();
        let other = Opener::new().unwrap();
        let sealed = seal(&newcomer.public_key(), b"member token").unwrap();
        assert!(!sealed.contains("member"));
        assert!(other.open(&sealed).is_err());
        assert_eq!(newcomer.open(&sealed).unwrap(), b"member token");
    }

    #[test]
    fn a_tampered_reply_does_not_open() {
        let newcomer = Opener::new().unwrap();
        let sealed = seal(&newcomer.public_key(), b"secret").unwrap();
        let mut bytes = sealed.into_bytes();
        let at = bytes.len() - 3;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        assert!(newcomer.open(&String::from_utf8(bytes).unwrap()).is_err());
        assert!(seal("not base64!", b"x").is_err());
    }
}
