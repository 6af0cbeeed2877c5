//! Any bytes as a WAL record payload, and as a whole segment file read by the WAL's
//! recovery and reader: never a panic, never an unbounded allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ferry_agent::wal::codec::decode(data);
    // As a segment on disk: open (recovery) and read everything back.
    let dir = std::env::temp_dir().join(format!("ferry-fuzz-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("0000000000000001.seg"), data).unwrap();
    let opts = ferry_agent::wal::Options {
        sync_interval: std::time::Duration::from_secs(1),
        max_size: 1 << 30,
        segment_size: 1 << 20,
    };
    if let Ok((wal, _)) = ferry_agent::wal::Wal::open(&dir, opts) {
        if let Ok(mut r) = wal.reader(ferry_agent::wal::Pos { seg: 1, off: 0 }) {
            while let Ok(Some(_)) = r.next(wal.end()) {}
        }
    }
});
