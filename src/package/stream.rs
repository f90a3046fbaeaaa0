//! Streaming an image out of a package: a reader thread fills fixed buffers, the
//! caller's thread hashes them (the signed digest, and SHA-256) and hands them to the
//! sink, so reading (decompression, verity checks) and hashing run on two cores with
//! bounded memory; the size and the digest are checked at the end.

use super::{Image, PackageError, Sink};
use crate::digest::DigestAlg;
use crate::package::squashfs::SquashfsError;
use std::io;
use std::sync::mpsc;

/// Size of the buffers images move in.
const CHUNK: usize = 1 << 20;
/// Filled buffers in flight between the reader and the hasher.
const IN_FLIGHT: usize = 3;

/// Stream an image into `sink`, checking size and digest. A reader thread (squashfs
/// decompression, verity checks, reads) fills fixed buffers; this thread hashes them and
/// hands them to the sink, so the two halves run on two cores with bounded memory.
pub(super) fn stream_image<'r>(
    image: &Image,
    open: impl FnOnce() -> Result<Box<dyn io::Read + 'r>, PackageError> + Send + 'r,
    sink: &mut dyn Sink,
) -> Result<Vec<u8>, PackageError> {
    std::thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<(Vec<u8>, usize)>>(IN_FLIGHT);
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        let reader = s.spawn(move || -> Result<(), PackageError> {
            let mut r = open()?;
            loop {
                let mut buf = empty_rx.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
                let mut n = 0;
                while n < buf.len() {
                    match r.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = full_tx.send(Err(e));
                            return Ok(());
                        }
                    }
                }
                let last = n < buf.len();
                if full_tx.send(Ok((buf, n))).is_err() || last {
                    return Ok(()); // the image ended, or the consumer stopped
                }
            }
        });
        let consumed = consume(image, &full_rx, &empty_tx, sink).map_err(|e| e.into_package_error(image));
        drop(full_rx); // unblocks the reader if the consumer stopped early
        let opened = reader.join().unwrap_or_else(|_| Err(PackageError::Io(io::Error::other("image reader panicked"))));
        opened?;
        consumed
    })
}

/// Hash and sink what the reader sends; it ends the stream with a short (possibly
/// empty) buffer or an error.
fn consume(
    image: &Image,
    full: &mpsc::Receiver<io::Result<(Vec<u8>, usize)>>,
    empty: &mpsc::Sender<Vec<u8>>,
    sink: &mut dyn Sink,
) -> Result<Vec<u8>, StreamError> {
    let mut signed = image.digest_algorithm.hasher();
    let mut sha256 = (image.digest_algorithm != DigestAlg::Sha256).then(|| DigestAlg::Sha256.hasher());
    let mut total = 0u64;
    sink.begin(image).map_err(StreamError::Sink)?;
    while let Ok(msg) = full.recv() {
        let (buf, n) = msg.map_err(StreamError::Read)?;
        total += n as u64;
        if total > image.size {
            return Err(StreamError::Mismatch(format!("longer than the signed size {}", image.size)));
        }
        signed.update(&buf[..n]);
        if let Some(h) = &mut sha256 {
            h.update(&buf[..n]);
        }
        sink.write(&buf[..n]).map_err(StreamError::Sink)?;
        let _ = empty.send(buf);
        if n < CHUNK {
            break;
        }
    }
    if total != image.size {
        return Err(StreamError::Mismatch(format!("{total} bytes, the signed size is {}", image.size)));
    }
    let got = signed.finish();
    if got != image.digest {
        return Err(StreamError::Mismatch(format!(
            "{} {} differs from the signed {}",
            image.digest_algorithm,
            hex::encode(&got),
            hex::encode(&image.digest)
        )));
    }
    sink.end(image).map_err(StreamError::Sink)?;
    Ok(sha256.map(|h| h.finish()).unwrap_or(got))
}

enum StreamError {
    Read(io::Error),
    Mismatch(String),
    Sink(io::Error),
}

impl StreamError {
    fn into_package_error(self, image: &Image) -> PackageError {
        match self {
            // Decompression and verity failures come as InvalidData: the content is bad.
            Self::Read(e) if e.kind() == io::ErrorKind::InvalidData => {
                PackageError::Squashfs(SquashfsError::Corrupt(e.to_string()))
            }
            Self::Read(e) => PackageError::Squashfs(SquashfsError::Io(e)),
            Self::Mismatch(what) => PackageError::Image { name: image.filename.clone(), what },
            Self::Sink(source) => PackageError::Sink { name: image.filename.clone(), source },
        }
    }
}
