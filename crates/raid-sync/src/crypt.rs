//! Client-side encryption of object bodies: XChaCha20-Poly1305 in the STREAM
//! construction (Hoang, Reyhanitabar, Rogaway, Vizár, "Online
//! Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", 2015),
//! so that a file of any size is encrypted and decrypted in 64 KiB chunks with
//! bounded memory, and any chunk of a multipart upload can be produced on its
//! own (a part is a run of whole chunks).
//!
//! Object body layout (version 1), all of it opaque to S3:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "RSE1"
//! 4       19    nonce prefix (random per object version)
//! 23      ...   chunks: ciphertext of 64 KiB of plaintext + 16-byte tag,
//!               the last chunk shorter (0..64 KiB of plaintext + tag)
//! ```
//!
//! Chunk `i` is sealed with the nonce `prefix || i (u32 big-endian) || last`
//! where `last` is 1 for the final chunk and 0 otherwise — exactly
//! `aead::stream::StreamBE32`, checked by a test. The final flag means a
//! truncated object fails authentication instead of decrypting to a shorter
//! file; the counter means chunks cannot be reordered. There is always a final
//! chunk (empty when the plaintext is a multiple of 64 KiB), so the sizes map
//! one-to-one: [`encrypted_len`] / [`plain_len`].
//!
//! Keys (object names) and metadata are not encrypted: the tree's names, sizes
//! (to within the overhead), modes and times stay visible to whoever can list
//! the bucket. The object's plaintext CRC-32 is in `x-amz-meta-crc32` (a
//! 32-bit checksum of the plaintext: it reveals no more than equality of
//! contents, which sizes mostly reveal already).

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
/// Authentication tag per chunk.
pub const TAG: usize = 16;
/// Magic + nonce prefix.
pub const HEADER: usize = 4 + PREFIX;
/// Random part of each chunk nonce (24-byte XChaCha nonce minus counter and flag).
pub const PREFIX: usize = 19;
const MAGIC: &[u8; 4] = b"RSE1";

/// Why a body could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    #[error("not an encrypted raidfs-sync object (bad header)")]
    BadHeader,
    #[error(
        "authentication failed at chunk {0}: the object was modified, truncated or encrypted with another key"
    )]
    Auth(u32),
    #[error("object too large for one encryption stream")]
    TooLarge,
}

/// A 256-bit content key, with a public fingerprint of it.
#[derive(Clone)]
pub struct Key {
    cipher: XChaCha20Poly1305,
    id: String,
}

impl std::fmt::Debug for Key {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

impl Key {
    pub fn from_bytes(bytes: &[u8; 32]) -> Key {
        let cipher = XChaCha20Poly1305::new(bytes.into());
        // Fingerprint: the cipher under a fixed nonce no STREAM chunk can use
        // (its flag byte is 0xff, never 0 or 1) applied to a constant. A PRF
        // output: it identifies the key without revealing it.
        let mut buf = *b"raidfs-sync key fingerprint v1..";
        let nonce = XNonce::from([0xffu8; 24]);
        let id = match cipher.encrypt_in_place_detached(&nonce, b"", &mut buf) {
            Ok(_) => hex(&buf[..8]),
            Err(_) => String::from("unknown"),
        };
        Key { cipher, id }
    }

    /// Public fingerprint (16 hex digits), stored with every encrypted object
    /// and in the key parameters so a wrong key is recognised before use.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A fresh random nonce prefix for one object version.
    pub fn new_prefix() -> [u8; PREFIX] {
        use chacha20poly1305::aead::OsRng;
        use chacha20poly1305::aead::rand_core::RngCore;
        let mut p = [0u8; PREFIX];
        OsRng.fill_bytes(&mut p);
        p
    }

    /// The object header for a nonce prefix.
    pub fn header(prefix: &[u8; PREFIX]) -> Vec<u8> {
        let mut h = Vec::with_capacity(HEADER);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(prefix);
        h
    }

    /// Encrypts a whole small body (header included) with a fresh prefix.
    pub fn encrypt_all(&self, plain: &[u8]) -> Result<Vec<u8>, CryptError> {
        let prefix = Key::new_prefix();
        let mut out = Key::header(&prefix);
        out.reserve(encrypted_len(plain.len() as u64) as usize - HEADER);
        self.encrypt_chunks(&prefix, 0, plain, true, &mut out)?;
        Ok(out)
    }

    /// Encrypts whole chunks of plaintext starting at chunk number `first`,
    /// appending to `out`. `plain` must be a multiple of [`CHUNK`] unless
    /// `last`; with `last` the final (possibly empty) chunk is sealed as such.
    pub fn encrypt_chunks(
        &self,
        prefix: &[u8; PREFIX],
        first: u32,
        plain: &[u8],
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), CryptError> {
        let mut n = first;
        let mut rest = plain;
        loop {
            let take = rest.len().min(CHUNK);
            let is_last = last && rest.len() < CHUNK;
            if take == 0 && !is_last {
                return Ok(());
            }
            let start = out.len();
            out.extend_from_slice(&rest[..take]);
            let tag = self
                .cipher
                .encrypt_in_place_detached(&nonce(prefix, n, is_last), b"", &mut out[start..])
                .map_err(|_| CryptError::TooLarge)?;
            out.extend_from_slice(&tag);
            rest = &rest[take..];
            if is_last {
                return Ok(());
            }
            n = n.checked_add(1).ok_or(CryptError::TooLarge)?;
        }
    }

    /// A streaming decryptor for one object body.
    pub fn decryptor(&self) -> Decryptor<'_> {
        Decryptor {
            key: self,
            prefix: None,
            buf: Vec::new(),
            next: 0,
        }
    }

    /// Decrypts a whole small body.
    pub fn decrypt_all(&self, body: &[u8]) -> Result<Vec<u8>, CryptError> {
        let mut d = self.decryptor();
        let mut out = Vec::with_capacity(body.len());
        d.push(body, &mut out)?;
        d.finish(&mut out)?;
        Ok(out)
    }
}

fn nonce(prefix: &[u8; PREFIX], n: u32, last: bool) -> XNonce {
    let mut x = [0u8; 24];
    x[..PREFIX].copy_from_slice(prefix);
    x[PREFIX..PREFIX + 4].copy_from_slice(&n.to_be_bytes());
    x[23] = u8::from(last);
    XNonce::from(x)
}

/// Feeds ciphertext in pieces of any size; yields plaintext chunk by chunk,
/// holding at most one chunk plus the piece being fed.
pub struct Decryptor<'a> {
    key: &'a Key,
    prefix: Option<[u8; PREFIX]>,
    buf: Vec<u8>,
    next: u32,
}

impl Decryptor<'_> {
    /// Appends the plaintext of every chunk that is certainly not the last to
    /// `out`. A sealed chunk of exactly `CHUNK + TAG` bytes is never the last
    /// (the last holds less than `CHUNK` bytes of plaintext).
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), CryptError> {
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        if self.prefix.is_none() {
            if self.buf.len() < HEADER {
                return Ok(());
            }
            if &self.buf[..4] != MAGIC {
                return Err(CryptError::BadHeader);
            }
            let mut p = [0u8; PREFIX];
            p.copy_from_slice(&self.buf[4..HEADER]);
            self.prefix = Some(p);
            pos = HEADER;
        }
        while self.buf.len() - pos >= CHUNK + TAG {
            self.open(pos, CHUNK, false, out)?;
            pos += CHUNK + TAG;
        }
        self.buf.drain(..pos);
        Ok(())
    }

    /// Decrypts the final chunk; fails if the body was truncated.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), CryptError> {
        if self.prefix.is_none() {
            return Err(CryptError::BadHeader);
        }
        if self.buf.len() < TAG {
            return Err(CryptError::Auth(self.next));
        }
        let len = self.buf.len() - TAG;
        self.open(0, len, true, out)
    }

    fn open(
        &mut self,
        pos: usize,
        len: usize,
        last: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), CryptError> {
        let prefix = self.prefix.ok_or(CryptError::BadHeader)?;
        let start = out.len();
        out.extend_from_slice(&self.buf[pos..pos + len]);
        let tag = Tag::from_slice(&self.buf[pos + len..pos + len + TAG]);
        if self
            .key
            .cipher
            .decrypt_in_place_detached(
                &nonce(&prefix, self.next, last),
                b"",
                &mut out[start..],
                tag,
            )
            .is_err()
        {
            out.truncate(start);
            return Err(CryptError::Auth(self.next));
        }
        self.next = self.next.checked_add(1).ok_or(CryptError::TooLarge)?;
        Ok(())
    }
}

/// Size of the encrypted body of `plain` bytes.
pub fn encrypted_len(plain: u64) -> u64 {
    HEADER as u64 + plain + TAG as u64 * (plain / CHUNK as u64 + 1)
}

/// Plaintext size of an encrypted body of `enc` bytes (`None`: impossible size).
pub fn plain_len(enc: u64) -> Option<u64> {
    let m = enc.checked_sub(HEADER as u64)?;
    let sealed = (CHUNK + TAG) as u64;
    let (full, rem) = (m / sealed, m % sealed);
    let last = rem.checked_sub(TAG as u64)?;
    Some(full * CHUNK as u64 + last)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::from_bytes(&[7u8; 32])
    }

    #[test]
    fn round_trips_every_size_class() {
        let k = key();
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5] {
            let plain: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            let enc = k.encrypt_all(&plain).unwrap();
            assert_eq!(enc.len() as u64, encrypted_len(n as u64), "size {n}");
            assert_eq!(plain_len(enc.len() as u64), Some(n as u64));
            if n > 0 {
                assert_ne!(&enc[HEADER..HEADER + n.min(16)], &plain[..n.min(16)]);
            }
            // Fed in awkward pieces.
            let mut d = k.decryptor();
            let mut out = Vec::new();
            for piece in enc.chunks(1000) {
                d.push(piece, &mut out).unwrap();
            }
            d.finish(&mut out).unwrap();
            assert_eq!(out, plain, "size {n}");
        }
    }

    #[test]
    fn parts_encrypted_separately_equal_the_whole() {
        let k = key();
        let prefix = [3u8; PREFIX];
        let plain: Vec<u8> = (0..5 * CHUNK + 9).map(|i| i as u8).collect();
        let mut whole = Key::header(&prefix);
        k.encrypt_chunks(&prefix, 0, &plain, true, &mut whole)
            .unwrap();
        let mut parts = Key::header(&prefix);
        k.encrypt_chunks(&prefix, 0, &plain[..2 * CHUNK], false, &mut parts)
            .unwrap();
        k.encrypt_chunks(&prefix, 2, &plain[2 * CHUNK..], true, &mut parts)
            .unwrap();
        assert_eq!(whole, parts);
    }

    #[test]
    fn matches_the_aead_stream_be32_construction() {
        use chacha20poly1305::aead::stream::{NewStream, StreamBE32, StreamPrimitive};
        let k = key();
        let prefix = [9u8; PREFIX];
        let plain: Vec<u8> = (0..CHUNK + 100).map(|i| (i * 7) as u8).collect();
        let mut ours = Vec::new();
        k.encrypt_chunks(&prefix, 0, &plain, true, &mut ours)
            .unwrap();
        let s = StreamBE32::from_aead(XChaCha20Poly1305::new(&[7u8; 32].into()), &prefix.into());
        let mut theirs = s.encrypt(0, false, &plain[..CHUNK]).unwrap();
        theirs.extend(s.encrypt(1, true, &plain[CHUNK..]).unwrap());
        assert_eq!(ours, theirs);
    }

    #[test]
    fn tampering_truncation_and_wrong_key_fail() {
        let k = key();
        let plain = vec![1u8; 2 * CHUNK + 10];
        let enc = k.encrypt_all(&plain).unwrap();
        let mut bad = enc.clone();
        bad[HEADER + CHUNK + 20] ^= 1;
        assert_eq!(k.decrypt_all(&bad), Err(CryptError::Auth(1)));
        // Cut exactly at a chunk boundary: the last chunk is missing.
        let cut = &enc[..HEADER + 2 * (CHUNK + TAG)];
        assert!(matches!(k.decrypt_all(cut), Err(CryptError::Auth(_))));
        let other = Key::from_bytes(&[8u8; 32]);
        assert_ne!(other.id(), k.id());
        assert_eq!(other.decrypt_all(&enc), Err(CryptError::Auth(0)));
        assert_eq!(
            k.decrypt_all(b"plain text body!!!!!!!!!!"),
            Err(CryptError::BadHeader)
        );
    }
}
