//! Moving bytes to S3: single PUTs for small files, multipart uploads for
//! large ones, resumed after a crash, every request carrying a CRC-32.
//!
//! Memory: files up to [`IN_MEMORY_MAX`] are read whole and sent from memory
//! (one read, and the payload is signed). Larger plaintext bodies, single
//! PUTs and parts alike, are streamed from the file, so a request holds no
//! buffer of its size and the multipart threshold can be high without
//! costing memory; their CRC-32 is computed first (one read pass) and sent
//! as a header, which the server checks against what arrives, and the file
//! is checked unchanged (size, mtime, inode) after the upload. A streamed body
//! is sent as `UNSIGNED-PAYLOAD` for SigV4 (the SDK cannot hash a body it does
//! not hold); its integrity rests on the CRC-32 header and on TLS.
//!
//! Checksums: each PUT and each part carries `x-amz-checksum-crc32`, so the
//! server rejects a body damaged in transit. A multipart upload asks for the
//! FULL_OBJECT checksum type, so the object's checksum is the CRC-32 of the
//! whole content, comparable with a local file; if the server refuses that
//! type, the upload falls back to the default (composite) type. Either way the
//! whole-content CRC-32 is also stored in `x-amz-meta-crc32`, which is what
//! `verify` and `restore` rely on first.
//!
//! Client-side encryption ([`crate::crypt`]), when enabled, seals each body
//! before it leaves: a small file in memory, a large one part by part (a part
//! is a run of whole 64 KiB chunks, so memory stays at one part per request
//! slot). The request checksums are then of the ciphertext and multipart
//! uploads use composite checksums; `x-amz-meta-crc32` stays the plaintext's.
//! A resumed encrypted upload reuses only parts recorded in the state, sealed
//! with the recorded nonce prefix and key.
//!
//! Resume: a multipart upload is recorded in the state file the moment it is
//! created. After a crash the next upload of the same unchanged file asks the
//! server which parts it already holds (ListParts) and sends only the rest.
//! Without a record (a crash between create and record, which the state's
//! `creating` set tells), ListMultipartUploads
//! finds the upload and it is resumed if the server can vouch for each part's
//! CRC-32, otherwise aborted and restarted.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart, MetadataDirective,
    ServerSideEncryption, StorageClass,
};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use crate::crypt::{self, Key};
use crate::error::{Error, Result};
use crate::object_meta::{ObjectMeta, crc32_b64, crc32_from_b64};
use crate::ratelimit::{self, RateLimit};
use crate::s3::{Bucket, copy_source};
use crate::state::{Entry, PendingUpload, RecordedPart, StateStore};

/// Files up to this size are read into memory and sent from there; larger
/// plaintext bodies are streamed from the file.
pub const IN_MEMORY_MAX: u64 = 1 << 20;
/// Sealed (encrypted) bodies are built in memory, so an encrypted file at
/// least this large goes multipart whatever the threshold: memory stays at
/// one part per request slot.
pub const SEALED_SINGLE_MAX: u64 = 16 << 20;
/// Largest object S3 takes in one PUT.
pub const MAX_SINGLE_PUT: u64 = 5 << 30;

/// Whether a file of `size` bytes goes multipart: at the threshold, when an
/// encrypted body would be too large to seal in memory, and always above
/// what one PUT may carry.
fn goes_multipart(size: u64, threshold: u64, encrypted: bool) -> bool {
    size > 0
        && (size >= threshold || (encrypted && size >= SEALED_SINGLE_MAX) || size > MAX_SINGLE_PUT)
}

/// Chunk size when streaming a body from a file.
const STREAM_CHUNK: usize = 256 << 10;

/// S3 allows at most 10,000 parts per upload.
const MAX_PARTS: u64 = 10_000;
/// Largest object CopyObject can copy in one request.
pub const MAX_COPY_SIZE: u64 = 5 << 30;

/// How objects are written.
#[derive(Debug, Clone)]
pub struct PutOptions {
    pub storage_class: Option<StorageClass>,
    pub sse: Option<ServerSideEncryption>,
    pub sse_kms_key_id: Option<String>,
    /// Files at least this large go multipart.
    pub multipart_threshold: u64,
    /// Preferred part size (raised if a file would need more than 10,000).
    pub part_size: u64,
}

/// What a server-side copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Copied {
    /// The destination holds the source's content with the new metadata.
    Done,
    /// The source is in an archive tier: S3 refused to read it and nothing
    /// was written. The content has to be uploaded.
    SourceArchived,
}

/// Whether CopyObject failed because its source is archived: S3 answers
/// `InvalidObjectState` (GLACIER, DEEP_ARCHIVE) or, as the API models it
/// (and moto answers), `ObjectNotInActiveTierError`.
fn is_archived_source<R>(
    e: &aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::copy_object::CopyObjectError, R>,
) -> bool {
    use aws_sdk_s3::error::ProvideErrorMetadata;
    e.as_service_error().is_some_and(|se| {
        se.is_object_not_in_active_tier_error() || se.code() == Some("InvalidObjectState")
    })
}

/// Result of one multipart upload.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub bytes: u64,
    pub parts_reused: u64,
}

/// Shared by all uploads of a process: client, options, request slots and
/// bandwidth budget.
#[derive(Debug)]
pub struct Uploader {
    pub bucket: Arc<Bucket>,
    pub opts: PutOptions,
    pub limit: Option<Arc<RateLimit>>,
    /// Requests in flight (also bounds the memory held by in-memory bodies).
    pub slots: Semaphore,
    pub jobs: usize,
    /// Cleared once the server refuses the FULL_OBJECT checksum type.
    full_object_ok: AtomicBool,
    /// Client-side encryption key, if enabled.
    pub key: Option<Arc<Key>>,
}

/// A large file's CRCs: whole content and each part.
#[derive(Debug, Clone)]
pub struct FileCrcs {
    pub full: u32,
    pub parts: Vec<u32>,
    pub part_size: u64,
}

impl Uploader {
    pub fn new(bucket: Arc<Bucket>, opts: PutOptions, bwlimit: u64, jobs: usize) -> Self {
        let jobs = jobs.max(1);
        Uploader {
            bucket,
            opts,
            limit: RateLimit::new(bwlimit, jobs).map(Arc::new),
            slots: Semaphore::new(jobs),
            jobs,
            full_object_ok: AtomicBool::new(true),
            key: None,
        }
    }

    /// Enables client-side encryption of file and symlink bodies.
    pub fn with_key(mut self, key: Option<Key>) -> Self {
        self.key = key.map(Arc::new);
        self
    }

    /// The key fingerprint to record in metadata (`None`: not encrypting).
    pub fn enc_id(&self) -> Option<String> {
        self.key.as_ref().map(|k| k.id().to_string())
    }

    /// Size of the object that holds `size` bytes of content.
    pub fn object_len(&self, size: u64) -> u64 {
        if self.key.is_some() {
            crypt::encrypted_len(size)
        } else {
            size
        }
    }

    /// Part size for a file of `size` bytes: the preferred one, or larger if
    /// the file would otherwise need more than 10,000 parts (rounded to MiB).
    pub fn part_size_for(&self, size: u64) -> u64 {
        let min = size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
        let p = self.opts.part_size.max(min).max(1);
        if self.key.is_some() {
            // Parts must be runs of whole encryption chunks.
            p.next_multiple_of(crypt::CHUNK as u64)
        } else {
            p
        }
    }

    /// Whether a file of this size goes multipart.
    pub fn is_multipart(&self, size: u64) -> bool {
        goes_multipart(size, self.opts.multipart_threshold, self.key.is_some())
    }

    /// Whether a single-PUT file of this size is read into memory (small, or
    /// sealed) rather than streamed from the file.
    pub fn in_memory(&self, size: u64) -> bool {
        size <= IN_MEMORY_MAX || self.key.is_some()
    }

    /// One PUT of a plaintext file streamed from disk (its CRC-32 computed
    /// beforehand), checked unchanged afterwards. Returns the bytes sent.
    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        entry: &Entry,
        crc: u32,
        meta: &ObjectMeta,
    ) -> Result<u64> {
        let _slot = self.slots.acquire().await.map_err(closed)?;
        // Changed since its CRC was taken: the next pass sends it.
        check_unchanged(path, entry)?;
        let body = stream_from(path, 0, entry.size, self.limit.as_ref())
            .await
            .map_err(|e| changed_or(path, entry, e))?;
        self.put_request(key, body, crc, meta)
            .content_length(entry.size as i64)
            .send()
            .await
            .map_err(|e| changed_or(path, entry, Error::s3("PutObject", key, e)))?;
        check_unchanged(path, entry)?;
        Ok(entry.size)
    }

    /// One PUT of an in-memory body (small files, symlinks, directory
    /// markers), sealed first if `meta.enc` says so. Returns the content bytes.
    pub async fn put_small(&self, key: &str, body: Vec<u8>, meta: &ObjectMeta) -> Result<u64> {
        let len = body.len() as u64;
        let (body, crc) = match (&self.key, &meta.enc) {
            (Some(k), Some(_)) => {
                let k = k.clone();
                let sealed = tokio::task::spawn_blocking(move || k.encrypt_all(&body))
                    .await
                    .map_err(|e| Error::Config(format!("encrypting {key}: {e}")))?
                    .map_err(|e| Error::Config(format!("encrypting {key}: {e}")))?;
                let crc = crc32fast::hash(&sealed);
                (sealed, crc)
            }
            _ => {
                let crc = meta.crc32.unwrap_or_else(|| crc32fast::hash(&body));
                (body, crc)
            }
        };
        let _slot = self.slots.acquire().await.map_err(closed)?;
        let body = ratelimit::throttle(ByteStream::from(body), self.limit.as_ref());
        self.put_request(key, body, crc, meta)
            .send()
            .await
            .map_err(|e| Error::s3("PutObject", key, e))?;
        Ok(len)
    }

    /// A counted PutObject of `body` with its CRC-32, metadata, storage
    /// class and server-side encryption.
    fn put_request(
        &self,
        key: &str,
        body: ByteStream,
        crc: u32,
        meta: &ObjectMeta,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.bucket.count();
        self.bucket
            .client
            .put_object()
            .bucket(&self.bucket.name)
            .key(key)
            .body(body)
            .checksum_crc32(crc32_b64(crc))
            .set_metadata(Some(meta.to_map()))
            .set_storage_class(self.opts.storage_class.clone())
            .set_server_side_encryption(self.opts.sse.clone())
            .set_ssekms_key_id(self.opts.sse_kms_key_id.clone())
    }

    /// Server-side copy with new metadata: renames (`src != dst`) and
    /// attribute-only changes (`src == dst`), with no bytes re-sent.
    ///
    /// S3 refuses to copy an object in an archive tier (GLACIER,
    /// DEEP_ARCHIVE, Intelligent-Tiering's archive tiers) until it is
    /// restored: then nothing is written and [`Copied::SourceArchived`] tells
    /// the caller to upload the content instead.
    pub async fn copy(&self, src: &str, dst: &str, meta: &ObjectMeta) -> Result<Copied> {
        let _slot = self.slots.acquire().await.map_err(closed)?;
        self.bucket.count();
        let sent = self
            .bucket
            .client
            .copy_object()
            .bucket(&self.bucket.name)
            .copy_source(copy_source(&self.bucket.name, src, None))
            .key(dst)
            .metadata_directive(MetadataDirective::Replace)
            .set_metadata(Some(meta.to_map()))
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .set_storage_class(self.opts.storage_class.clone())
            .set_server_side_encryption(self.opts.sse.clone())
            .set_ssekms_key_id(self.opts.sse_kms_key_id.clone())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Copied::Done),
            Err(e) if is_archived_source(&e) => {
                tracing::debug!(%src, %dst, "copy source is archived: uploading instead");
                Ok(Copied::SourceArchived)
            }
            Err(e) => Err(Error::s3("CopyObject", format!("{src} -> {dst}"), e)),
        }
    }

    /// Multipart upload of a large file, resuming a previous attempt if one
    /// is recorded (or found) for the same unchanged file.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_multipart(
        &self,
        store: &StateStore,
        rel: &str,
        path: &Path,
        key: &str,
        entry: &Entry,
        meta: &ObjectMeta,
        crcs: &FileCrcs,
    ) -> Result<Sent> {
        let part_size = crcs.part_size;
        let (upload_id, full, existing, enc) = self
            .resume_or_create(store, rel, key, entry, meta, part_size)
            .await?;
        let result = self
            .send_parts(
                store, rel, path, key, &upload_id, full, existing, entry, crcs, enc,
            )
            .await;
        match result {
            Ok(sent) => {
                store.lock().uploads.remove(rel);
                Ok(sent)
            }
            Err(e @ (Error::Changed { .. } | Error::Gone { .. })) => {
                // The file moved on or went; this upload can never complete.
                // Free it.
                self.abort(key, &upload_id).await;
                store.lock().uploads.remove(rel);
                let _ = store.save_in_async();
                Err(e)
            }
            // Anything else (network, server): keep the upload for resume.
            Err(e) => Err(e),
        }
    }

    async fn resume_or_create(
        &self,
        store: &StateStore,
        rel: &str,
        key: &str,
        entry: &Entry,
        meta: &ObjectMeta,
        part_size: u64,
    ) -> Result<(
        String,
        bool,
        HashMap<i32, RemotePart>,
        Option<[u8; crypt::PREFIX]>,
    )> {
        let recorded = store.lock().uploads.get(rel).cloned();
        if let Some(p) = recorded {
            let enc_prefix = p.enc_prefix.as_deref().and_then(parse_prefix);
            let same = p.key == key
                && p.size == entry.size
                && p.mtime_sec == entry.mtime_sec
                && p.mtime_nsec == entry.mtime_nsec
                && p.ino == entry.ino
                && p.part_size == part_size
                && p.enc_key == self.enc_id()
                && enc_prefix.is_some() == self.key.is_some();
            if same {
                let recorded: HashMap<i32, RemotePart> = p
                    .parts
                    .iter()
                    .map(|(n, r)| {
                        (
                            *n,
                            RemotePart {
                                etag: r.etag.clone(),
                                size: r.size as i64,
                                crc32: Some(r.crc32),
                            },
                        )
                    })
                    .collect();
                match self.list_parts(key, &p.upload_id).await {
                    Ok(mut parts) => {
                        // Where the server gives no part checksum, our record
                        // of what was sent stands in for it.
                        for (n, part) in parts.iter_mut() {
                            if part.crc32.is_none() {
                                part.crc32 = recorded.get(n).and_then(|r| r.crc32);
                            }
                        }
                        if self.key.is_some() {
                            // Only parts we sealed and recorded can be trusted
                            // to match what we would send now.
                            parts.retain(|n, part| {
                                recorded.get(n).is_some_and(|r| {
                                    r.crc32.is_some()
                                        && r.crc32 == part.crc32
                                        && r.size == part.size
                                })
                            });
                        }
                        tracing::info!(%key, parts = parts.len(), "resuming multipart upload");
                        return Ok((p.upload_id, p.full_object_checksum, parts, enc_prefix));
                    }
                    Err(ListPartsError::Gone) => {
                        tracing::info!(%key, "recorded upload is gone; starting anew")
                    }
                    Err(ListPartsError::Other(e)) => {
                        // The server could not list the parts (or its reply
                        // could not be read): trust the parts it acknowledged.
                        // Should they be gone, completion fails and the next
                        // pass starts afresh.
                        tracing::info!(%key, parts = recorded.len(), error = %e,
                            "resuming multipart upload from the recorded parts");
                        return Ok((p.upload_id, p.full_object_checksum, recorded, enc_prefix));
                    }
                }
            } else {
                self.abort(&p.key, &p.upload_id).await;
            }
            store.lock().uploads.remove(rel);
        }
        let may_be_unrecorded = store
            .lock()
            .creating
            .as_ref()
            .is_none_or(|c| c.contains(rel));
        if self.key.is_none()
            && may_be_unrecorded
            && let Some((id, parts)) = self.find_unrecorded(key).await
        {
            // Only parts whose CRC-32 the server reports can be trusted to be
            // this file's; `send_parts` re-sends any other.
            let full = self.full_object_ok.load(Ordering::Relaxed);
            {
                let mut st = store.lock();
                st.uploads
                    .insert(rel.to_string(), pending(key, &id, entry, part_size, full));
                st.creating.get_or_insert_default().remove(rel);
            }
            store.save_in_async()?;
            return Ok((id, full, parts, None));
        }
        // The intent is durable before the upload exists: a crash between
        // the two leaves `rel` in `creating`, and the next attempt looks for
        // the orphan (above) instead of every upload paying that request.
        let fresh = store
            .lock()
            .creating
            .get_or_insert_default()
            .insert(rel.to_string());
        if fresh {
            store.save_in_async()?;
        }
        let (id, full) = self.create(key, meta).await?;
        let mut p = pending(key, &id, entry, part_size, full);
        let enc_prefix = self.key.as_ref().map(|_| Key::new_prefix());
        p.enc_key = self.enc_id();
        p.enc_prefix = enc_prefix.map(|x| x.iter().map(|b| format!("{b:02x}")).collect());
        {
            let mut st = store.lock();
            st.uploads.insert(rel.to_string(), p);
            if let Some(c) = st.creating.as_mut() {
                c.remove(rel);
            }
        }
        store.save_in_async()?;
        Ok((id, full, HashMap::new(), enc_prefix))
    }

    /// An in-progress upload for exactly `key` that the state does not know
    /// (crash between CreateMultipartUpload and saving the state).
    async fn find_unrecorded(&self, key: &str) -> Option<(String, HashMap<i32, RemotePart>)> {
        self.bucket.count();
        let out = self
            .bucket
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket.name)
            .prefix(key)
            .send()
            .await
            .ok()?;
        let mut found = None;
        for u in out.uploads() {
            let (Some(k), Some(id)) = (u.key(), u.upload_id()) else {
                continue;
            };
            if k != key {
                continue;
            }
            if found.is_none() {
                found = Some(id.to_string());
            } else {
                self.abort(key, id).await;
            }
        }
        let id = found?;
        let mut parts = self.list_parts(key, &id).await.ok()?;
        parts.retain(|_, p| p.crc32.is_some());
        Some((id, parts))
    }

    async fn create(&self, key: &str, meta: &ObjectMeta) -> Result<(String, bool)> {
        // Encrypted parts are sealed as they are sent, so the whole-object
        // CRC-32 of the ciphertext is not known up front: composite checksums.
        let try_full = self.full_object_ok.load(Ordering::Relaxed) && self.key.is_none();
        let attempt = |full: bool| {
            self.bucket.count();
            self.bucket
                .client
                .create_multipart_upload()
                .bucket(&self.bucket.name)
                .key(key)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .set_checksum_type(full.then_some(ChecksumType::FullObject))
                .set_metadata(Some(meta.to_map()))
                .set_storage_class(self.opts.storage_class.clone())
                .set_server_side_encryption(self.opts.sse.clone())
                .set_ssekms_key_id(self.opts.sse_kms_key_id.clone())
                .send()
        };
        let out = match attempt(try_full).await {
            Ok(o) => Ok((o, try_full)),
            Err(e) if try_full => {
                tracing::warn!(
                    %key,
                    error = %crate::error::describe_s3(&e),
                    "server refused the FULL_OBJECT checksum type; using composite \
                     checksums (the whole-object CRC-32 stays in x-amz-meta-crc32)"
                );
                self.full_object_ok.store(false, Ordering::Relaxed);
                attempt(false).await.map(|o| (o, false))
            }
            Err(e) => Err(e),
        }
        .map_err(|e| Error::s3("CreateMultipartUpload", key, e))?;
        let id = out
            .0
            .upload_id()
            .ok_or_else(|| Error::S3 {
                op: "CreateMultipartUpload",
                key: key.to_string(),
                message: "no upload id in the reply".into(),
            })?
            .to_string();
        Ok((id, out.1))
    }

    async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> std::result::Result<HashMap<i32, RemotePart>, ListPartsError> {
        let mut parts = HashMap::new();
        let mut marker: Option<String> = None;
        loop {
            self.bucket.count();
            let out = self
                .bucket
                .client
                .list_parts()
                .bucket(&self.bucket.name)
                .key(key)
                .upload_id(upload_id)
                .set_part_number_marker(marker.take())
                .send()
                .await
                .map_err(|e| {
                    use aws_sdk_s3::error::ProvideErrorMetadata;
                    if e.code() == Some("NoSuchUpload") {
                        ListPartsError::Gone
                    } else {
                        ListPartsError::Other(Error::s3("ListParts", key, e))
                    }
                })?;
            for p in out.parts() {
                if let (Some(n), Some(etag)) = (p.part_number(), p.e_tag()) {
                    parts.insert(
                        n,
                        RemotePart {
                            etag: etag.to_string(),
                            size: p.size().unwrap_or(-1),
                            crc32: p.checksum_crc32().and_then(crc32_from_b64),
                        },
                    );
                }
            }
            match out.next_part_number_marker() {
                Some(m) if out.is_truncated() == Some(true) => marker = Some(m.to_string()),
                _ => break,
            }
        }
        Ok(parts)
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_parts(
        &self,
        store: &StateStore,
        rel: &str,
        path: &Path,
        key: &str,
        upload_id: &str,
        full: bool,
        existing: HashMap<i32, RemotePart>,
        entry: &Entry,
        crcs: &FileCrcs,
        enc: Option<[u8; crypt::PREFIX]>,
    ) -> Result<Sent> {
        // Sealed parts are read into memory from one open file; plaintext
        // parts are streamed, each from its own handle.
        let seal = match (&self.key, enc) {
            (Some(k), Some(p)) => {
                let file = open_regular(path)?;
                Some((k.clone(), p, Arc::new(file)))
            }
            (None, None) => None,
            _ => {
                return Err(Error::Config(format!(
                    "multipart upload of {key}: encryption state does not match the recorded upload"
                )));
            }
        };
        let n_chunks_per_part = crcs.part_size / crypt::CHUNK as u64;
        let size = entry.size;
        let n = crcs.parts.len();
        // Per part: ETag and CRC-32 of the bytes the server holds.
        let mut done: Vec<Option<(String, u32)>> = vec![None; n];
        let mut sent = Sent::default();
        for (i, slot) in done.iter_mut().enumerate() {
            let len = part_len(size, crcs.part_size, i);
            let Some(p) = existing.get(&(i as i32 + 1)) else {
                continue;
            };
            if seal.is_some() {
                // Filtered in resume_or_create: recorded, same size and CRC.
                if let Some(c) = p.crc32 {
                    *slot = Some((p.etag.clone(), c));
                    sent.parts_reused += 1;
                }
            } else if p.size == len as i64 && p.crc32.is_none_or(|c| c == crcs.parts[i]) {
                *slot = Some((p.etag.clone(), crcs.parts[i]));
                sent.parts_reused += 1;
            }
        }
        let todo: Vec<usize> = (0..n).filter(|i| done[*i].is_none()).collect();
        let uploaded: Vec<(usize, String, u32)> = futures::stream::iter(todo)
            .map(|i| {
                let seal = seal.clone();
                async move {
                    let len = part_len(size, crcs.part_size, i);
                    let off = i as u64 * crcs.part_size;
                    let _slot = self.slots.acquire().await.map_err(closed)?;
                    let (body, crc, sent_len) = match seal {
                        None => (
                            stream_from(path, off, len, self.limit.as_ref())
                                .await
                                .map_err(|e| changed_or(path, entry, e))?,
                            crcs.parts[i],
                            len,
                        ),
                        Some((k, prefix, file)) => {
                            let p = path.to_path_buf();
                            let buf =
                                tokio::task::spawn_blocking(move || read_at(&file, &p, off, len))
                                    .await
                                    .map_err(|e| {
                                        Error::io("reading part", path, std::io::Error::other(e))
                                    })??;
                            if crc32fast::hash(&buf) != crcs.parts[i] {
                                return Err(Error::Changed {
                                    path: path.to_path_buf(),
                                });
                            }
                            let last = i + 1 == n;
                            let first =
                                u32::try_from(i as u64 * n_chunks_per_part).map_err(|_| {
                                    Error::Config(format!("{key}: too large to encrypt"))
                                })?;
                            let sealed = tokio::task::spawn_blocking(move || {
                                let mut out = if i == 0 {
                                    Key::header(&prefix)
                                } else {
                                    Vec::new()
                                };
                                out.reserve(
                                    buf.len()
                                        + buf.len() / crypt::CHUNK * crypt::TAG
                                        + 2 * crypt::TAG,
                                );
                                k.encrypt_chunks(&prefix, first, &buf, last, &mut out)
                                    .map(|()| out)
                            })
                            .await
                            .map_err(|e| Error::Config(format!("encrypting {key}: {e}")))?
                            .map_err(|e| Error::Config(format!("encrypting {key}: {e}")))?;
                            let crc = crc32fast::hash(&sealed);
                            let sent_len = sealed.len() as u64;
                            let body =
                                ratelimit::throttle(ByteStream::from(sealed), self.limit.as_ref());
                            (body, crc, sent_len)
                        }
                    };
                    self.bucket.count();
                    let out = self
                        .bucket
                        .client
                        .upload_part()
                        .bucket(&self.bucket.name)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(i as i32 + 1)
                        .content_length(sent_len as i64)
                        .checksum_crc32(crc32_b64(crc))
                        .body(body)
                        .send()
                        .await
                        .map_err(|e| changed_or(path, entry, Error::s3("UploadPart", key, e)))?;
                    let etag = out.e_tag().unwrap_or_default().to_string();
                    if let Some(p) = store.lock().uploads.get_mut(rel) {
                        p.parts.insert(
                            i as i32 + 1,
                            RecordedPart {
                                etag: etag.clone(),
                                size: sent_len,
                                crc32: crc,
                            },
                        );
                    }
                    store.save_in_async()?;
                    Ok::<_, Error>((i, etag, crc))
                }
            })
            .buffer_unordered(self.jobs)
            .try_collect()
            .await?;
        for (i, etag, crc) in uploaded {
            sent.bytes += part_len(size, crcs.part_size, i);
            done[i] = Some((etag, crc));
        }
        // The file must still be what the CRCs describe.
        check_unchanged(path, entry)?;
        let parts = done
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let (etag, crc) = part.unwrap_or_default();
                CompletedPart::builder()
                    .part_number(i as i32 + 1)
                    .e_tag(etag)
                    .checksum_crc32(crc32_b64(crc))
                    .build()
            })
            .collect();
        let mut req = self
            .bucket
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket.name)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if full {
            req = req
                .checksum_crc32(crc32_b64(crcs.full))
                .checksum_type(ChecksumType::FullObject);
        }
        self.bucket.count();
        req.send()
            .await
            .map_err(|e| Error::s3("CompleteMultipartUpload", key, e))?;
        Ok(sent)
    }

    /// Best-effort abort; a leftover upload is also cleaned by the lifecycle
    /// rule `lifecycle` writes.
    pub async fn abort(&self, key: &str, upload_id: &str) {
        self.bucket.count();
        if let Err(e) = self
            .bucket
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket.name)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::debug!(%key, error = %crate::error::describe_s3(&e), "abort failed");
        }
    }
}

/// Why ListParts gave no answer.
#[derive(Debug)]
enum ListPartsError {
    /// The upload no longer exists (completed, aborted, expired).
    Gone,
    Other(Error),
}

/// A part the server already holds.
#[derive(Debug, Clone)]
pub struct RemotePart {
    etag: String,
    size: i64,
    crc32: Option<u32>,
}

fn pending(key: &str, id: &str, e: &Entry, part_size: u64, full: bool) -> PendingUpload {
    PendingUpload {
        key: key.to_string(),
        upload_id: id.to_string(),
        size: e.size,
        mtime_sec: e.mtime_sec,
        mtime_nsec: e.mtime_nsec,
        ino: e.ino,
        part_size,
        full_object_checksum: full,
        parts: Default::default(),
        enc_key: None,
        enc_prefix: None,
    }
}

fn parse_prefix(hex: &str) -> Option<[u8; crypt::PREFIX]> {
    if hex.len() != 2 * crypt::PREFIX {
        return None;
    }
    let mut out = [0u8; crypt::PREFIX];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn part_len(size: u64, part_size: u64, i: usize) -> u64 {
    let off = i as u64 * part_size;
    part_size.min(size - off)
}

fn closed(_: tokio::sync::AcquireError) -> Error {
    Error::Config("upload slots closed".into())
}

/// A body streamed from `len` bytes of `path` at `off`, paced by `limit`.
async fn stream_from(
    path: &Path,
    off: u64,
    len: u64,
    limit: Option<&Arc<RateLimit>>,
) -> Result<ByteStream> {
    let body = ByteStream::read_from()
        .path(path)
        .offset(off)
        .length(Length::Exact(len))
        .buffer_size(STREAM_CHUNK)
        .build()
        .await
        .map_err(|e| Error::io("opening for upload", path, std::io::Error::other(e)))?;
    Ok(ratelimit::throttle(body, limit))
}

/// `e`, or [`Error::Changed`] or [`Error::Gone`] if the file changed or
/// went meanwhile (a streamed body that no longer matches its CRC header, or
/// a file that shrank, fails at the server or in the stream; a file removed
/// fails to open: the cause is the change, not the transfer).
fn changed_or(path: &Path, entry: &Entry, e: Error) -> Error {
    match check_unchanged(path, entry) {
        Err(changed @ (Error::Changed { .. } | Error::Gone { .. })) => changed,
        _ => e,
    }
}

/// Fails with [`Error::Changed`] if the file no longer matches `entry`,
/// [`Error::Gone`] if it no longer exists.
fn check_unchanged(path: &Path, entry: &Entry) -> Result<()> {
    let md = std::fs::symlink_metadata(path).map_err(|e| Error::io_or_gone("stat", path, e))?;
    if crate::scan::entry_of(path, &md)?.is_none_or(|now| !same_content_stat(entry, &now)) {
        return Err(Error::Changed {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn read_at(file: &std::fs::File, path: &Path, off: u64, len: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, off)
        .map_err(|e| Error::io("reading", path, e))?;
    Ok(buf)
}

/// Whether two stats describe the same content (size, mtime, inode).
pub fn same_content_stat(a: &Entry, b: &Entry) -> bool {
    a.size == b.size
        && a.mtime_sec == b.mtime_sec
        && a.mtime_nsec == b.mtime_nsec
        && a.ino == b.ino
        && a.dev == b.dev
}

/// Opens a file to upload for reading, as the regular file the scan saw or
/// not at all. The scan's `lstat` and this open are apart in time: a symlink
/// put there meanwhile is not followed (`O_NOFOLLOW`), and a FIFO put there
/// does not block the open until some writer appears (`O_NONBLOCK`). Anything
/// but a regular file is [`Error::Changed`] (the next scan sees what it is);
/// nothing there is [`Error::Gone`].
pub fn open_regular(path: &Path) -> Result<std::fs::File> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt;
    let changed = || Error::Changed {
        path: path.to_path_buf(),
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
        .open(path)
        .map_err(|e| match rustix::io::Errno::from_io_error(&e) {
            // A symlink (ELOOP), a socket or a device with no driver (ENXIO).
            Some(rustix::io::Errno::LOOP | rustix::io::Errno::NXIO) => changed(),
            _ => Error::io_or_gone("opening", path, e),
        })?;
    let md = f.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !md.file_type().is_file() {
        return Err(changed());
    }
    // Regular files ignore O_NONBLOCK; cleared all the same, so that reads
    // are plain blocking reads whatever the file system.
    let flags = rustix::fs::fcntl_getfl(&f).map_err(|e| Error::io("fcntl", path, e.into()))?;
    rustix::fs::fcntl_setfl(&f, flags - OFlags::NONBLOCK)
        .map_err(|e| Error::io("fcntl", path, e.into()))?;
    Ok(f)
}

/// Reads a small file whole and checks it did not change meanwhile. At
/// most one byte more than the scanned size is read: a file that has grown
/// since (perhaps by gigabytes) is changed, and is not read into memory.
pub fn read_small(path: &Path, entry: &Entry) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = open_regular(path)?;
    let mut data = Vec::new();
    f.take(entry.size.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| Error::io("reading", path, e))?;
    let md = std::fs::symlink_metadata(path).map_err(|e| Error::io_or_gone("stat", path, e))?;
    let now = crate::scan::entry_of(path, &md)?;
    if data.len() as u64 != entry.size || now.is_none_or(|n| !same_content_stat(entry, &n)) {
        return Err(Error::Changed {
            path: PathBuf::from(path),
        });
    }
    Ok(data)
}

/// CRC-32 of a large file, whole and per part, in one read of at most one
/// byte more than `size` (a file that grew since the scan is changed).
pub fn crc_file(path: &Path, size: u64, part_size: u64) -> Result<FileCrcs> {
    use std::io::Read;
    let mut f = open_regular(path)?.take(size.saturating_add(1));
    let mut full = crc32fast::Hasher::new();
    let mut parts = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut part = crc32fast::Hasher::new();
    let mut in_part = 0u64;
    loop {
        let want = buf.len().min((part_size - in_part) as usize);
        let n = f
            .read(&mut buf[..want])
            .map_err(|e| Error::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        full.update(&buf[..n]);
        part.update(&buf[..n]);
        in_part += n as u64;
        total += n as u64;
        if in_part == part_size {
            parts.push(std::mem::take(&mut part).finalize());
            in_part = 0;
        }
    }
    if in_part > 0 {
        parts.push(part.finalize());
    }
    if total != size {
        return Err(Error::Changed {
            path: path.to_path_buf(),
        });
    }
    Ok(FileCrcs {
        full: full.finalize(),
        parts,
        part_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_goes_multipart() {
        let t = 128 << 20;
        assert!(!goes_multipart(0, t, false));
        assert!(!goes_multipart(t - 1, t, false));
        assert!(goes_multipart(t, t, false));
        assert!(!goes_multipart(SEALED_SINGLE_MAX - 1, t, true));
        assert!(goes_multipart(SEALED_SINGLE_MAX, t, true));
        assert!(!goes_multipart(MAX_SINGLE_PUT, u64::MAX, false));
        assert!(goes_multipart(MAX_SINGLE_PUT + 1, u64::MAX, false));
    }

    /// A regular file's entry as the scan records it.
    fn scanned(p: &Path) -> Entry {
        let md = std::fs::symlink_metadata(p).unwrap();
        crate::scan::entry_of(p, &md).unwrap().unwrap()
    }

    #[test]
    fn a_file_gone_since_the_scan_is_gone_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"content").unwrap();
        let e = scanned(&p);
        std::fs::remove_file(&p).unwrap();
        let gone = |r: Result<()>| matches!(r, Err(Error::Gone { .. }));
        assert!(gone(read_small(&p, &e).map(drop)));
        assert!(gone(crc_file(&p, e.size, 1 << 20).map(drop)));
        assert!(gone(check_unchanged(&p, &e)));
        // Replaced by another file: changed, not gone.
        std::fs::write(&p, b"other content").unwrap();
        assert!(matches!(read_small(&p, &e), Err(Error::Changed { .. })));
        // A directory above it replaced by a file: gone too (ENOTDIR).
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        let below = d.join("g");
        std::fs::write(&below, b"content").unwrap();
        let e = scanned(&below);
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::write(&d, b"now a file").unwrap();
        assert!(gone(read_small(&below, &e).map(drop)));
        assert!(gone(check_unchanged(&below, &e)));
    }

    #[test]
    fn reads_stop_one_byte_past_the_scanned_size() {
        // A file grown since the scan, sparse and far too large to read
        // whole: it is changed after at most one byte past the scanned size
        // (read to its end, it would fill memory or take minutes).
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("grows");
        std::fs::write(&p, [1u8; 10]).unwrap();
        let e = scanned(&p);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(1 << 36)
            .unwrap();
        both_reads_are_changed_promptly(&p, &e);
    }

    /// Both reads of `p` (whole, and CRCs only) end promptly as changed.
    fn both_reads_are_changed_promptly(p: &Path, e: &Entry) {
        for small in [true, false] {
            let (p2, e2) = (p.to_path_buf(), e.clone());
            let changed = returns_promptly(move || {
                let r = if small {
                    read_small(&p2, &e2).map(drop)
                } else {
                    crc_file(&p2, e2.size, 1 << 20).map(drop)
                };
                matches!(r, Err(Error::Changed { .. }))
            });
            assert_eq!(changed, Some(true), "{}, read_small: {small}", p.display());
        }
    }

    /// `f()` run on a thread: its result, or `None` if it has not returned
    /// within 10 seconds (the thread is left blocked).
    fn returns_promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(10)).ok()
    }

    #[test]
    fn a_fifo_or_symlink_put_in_place_of_a_file_is_changed_and_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"content").unwrap();
        let e = scanned(&p);
        let target = dir.path().join("secret");
        std::fs::write(&target, b"content").unwrap();
        // A FIFO with no writer: opening it for reading would wait for one
        // forever.
        std::fs::remove_file(&p).unwrap();
        let made = std::process::Command::new("mkfifo").arg(&p).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        both_reads_are_changed_promptly(&p, &e);
        // A symlink to a file of the same size: not followed.
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(&target, &p).unwrap();
        assert!(matches!(read_small(&p, &e), Err(Error::Changed { .. })));
        assert!(matches!(
            crc_file(&p, e.size, 1 << 20),
            Err(Error::Changed { .. })
        ));
        assert!(matches!(open_regular(&p), Err(Error::Changed { .. })));
        // A regular file opens, for plain blocking reads.
        let f = open_regular(&target).unwrap();
        let fl = rustix::fs::fcntl_getfl(&f).unwrap();
        assert!(!fl.contains(rustix::fs::OFlags::NONBLOCK));
    }

    #[test]
    fn part_crcs_cover_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..(3 << 20) + 5).map(|i| (i * 7) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let c = crc_file(&p, data.len() as u64, 1 << 20).unwrap();
        assert_eq!(c.full, crc32fast::hash(&data));
        assert_eq!(c.parts.len(), 4);
        assert_eq!(c.parts[3], crc32fast::hash(&data[3 << 20..]));
        assert!(matches!(
            crc_file(&p, 1, 1 << 20),
            Err(Error::Changed { .. })
        ));
    }
}
