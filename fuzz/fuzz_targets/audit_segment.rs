//! The audit segment reader (frames: length, CRC, record) and the record
//! decoder, over arbitrary file contents — what recovery and `audit verify`
//! read after a crash or from a tampered disk.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use tollbu_audit::record;
use tollbu_audit::segment::{FrameRead, FrameReader};

fuzz_target!(|data: &[u8]| {
    // Only canonical encodings decode: what decodes re-encodes to exactly these bytes.
    if let Ok(stored) = record::decode(data) {
        assert_eq!(
            record::encode(stored.seq, &stored.record).ok().as_deref(),
            Some(data)
        );
    }
    let Ok(mut file) = tempfile_in_tmp() else {
        return;
    };
    if file.1.write_all(data).is_err() {
        return;
    }
    let Ok(mut reader) = FrameReader::open(&file.0) else {
        return;
    };
    for _ in 0..10_000 {
        match reader.next_frame() {
            Ok(FrameRead::Frame { payload, .. }) => {
                let _ = record::decode(&payload);
            }
            _ => break,
        }
    }
    let _ = std::fs::remove_file(&file.0);
    file.0.clear();
});

fn tempfile_in_tmp() -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let path = std::env::temp_dir().join(format!("tollbu-fuzz-segment-{}", std::process::id()));
    let file = std::fs::File::create(&path)?;
    Ok((path, file))
}
